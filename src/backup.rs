//! `hearth backup`: a consistent, compacted copy of a data directory's store, made while its
//! server runs, plus the server's key. The copy is itself a data directory: restoring is
//! starting a server on it.
//!
//! The store is opened read-only, beside the running server (LMDB supports several processes
//! on one environment; the copy is one read transaction, so it is the state of one commit and
//! the server's writes go on meanwhile). The data directory's lock, which belongs to the server,
//! is not taken. LMDB's own copy with compaction (`mdb_env_copy2`, `MDB_CP_COMPACT`) writes only
//! the pages in use, so the copy is as small as the data.

use std::path::{Path, PathBuf};

use heed::{CompactionOption, EnvFlags, EnvOpenOptions};

use crate::identity::KEY_FILE;
use crate::store::{Env, StoreError};

/// Why a backup (or a verify) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Backup {
    pub dir: PathBuf,
    pub data_bytes: u64,
    pub with_key: bool,
}

/// The LMDB directory of a data directory.
pub fn lmdb_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("lmdb")
}

/// Open a data directory's store read-only, beside a server that may be running on it. Its
/// schema is not migrated. One process must not open one environment twice: a server running
/// in this same process has to be copied through its own handle (`copy_env`).
pub fn open_read_only(data_dir: &Path) -> Result<Env, BackupError> {
    let lmdb = lmdb_dir(data_dir);
    if !lmdb.join("data.mdb").is_file() {
        return Err(BackupError::Usage(format!(
            "{} holds no store (no lmdb/data.mdb): is it a hearth data directory?",
            data_dir.display()
        )));
    }
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.max_dbs(crate::store::MAX_TABLES).max_readers(4096);
    // SAFETY: flags only. READ_ONLY: this handle never writes.
    unsafe {
        options.flags(EnvFlags::READ_ONLY);
    }
    // SAFETY: this process opens the environment once, for the length of the command.
    let env = unsafe { options.open(&lmdb) }.map_err(StoreError::from)?;
    Ok(env)
}

/// Copy `data_dir` into `out` (a new or empty directory), compacted, with the server's key.
pub fn backup(data_dir: &Path, out: &Path) -> Result<Backup, BackupError> {
    let env = open_read_only(data_dir)?;
    prepare_out(out)?;
    let data_bytes = copy_env(&env, out)?;
    let key = data_dir.join(KEY_FILE);
    let with_key = key.is_file();
    if with_key {
        let target = out.join(KEY_FILE);
        std::fs::copy(&key, &target)?;
        restrict_to_owner(&target)?;
    }
    Ok(Backup {
        dir: out.to_path_buf(),
        data_bytes,
        with_key,
    })
}

/// Copy an open environment into `out/lmdb/data.mdb`, compacted; the bytes written.
pub fn copy_env(env: &Env, out: &Path) -> Result<u64, BackupError> {
    let lmdb = lmdb_dir(out);
    std::fs::create_dir_all(&lmdb)?;
    let file = env
        .copy_to_path(lmdb.join("data.mdb"), CompactionOption::Enabled)
        .map_err(StoreError::from)?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// The output must be a new directory or an empty one: a backup never overwrites.
fn prepare_out(out: &Path) -> Result<(), BackupError> {
    if out.is_file() {
        return Err(BackupError::Usage(format!(
            "{} is a file: --out names a directory, which becomes a data directory",
            out.display()
        )));
    }
    if out.is_dir() && std::fs::read_dir(out)?.next().is_some() {
        return Err(BackupError::Usage(format!(
            "{} is not empty: give a new or empty directory",
            out.display()
        )));
    }
    std::fs::create_dir_all(out)?;
    Ok(())
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> std::io::Result<()> {
    Ok(())
}
