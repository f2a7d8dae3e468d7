//! The data directory's lock: one server per directory.
//!
//! Two servers on one LMDB environment would both serve, and each firehose would silently miss
//! the other's events. So a server takes an exclusive `flock` on `<data>/hearth.lock` before it opens
//! anything there, writes its pid into the file, and holds the lock until its store is closed.
//! The kernel drops the lock when the process dies, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another server holds it.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, DataDirError>;

pub const LOCK_FILE: &str = "hearth.lock";

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Lock `data_dir` (creating it), or say who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| {
                DataDirError::Io(std::io::Error::new(
                    err.kind(),
                    format!("cannot open the lock file {}: {err}", path.display()),
                ))
            })?;
        if let Err(err) = try_lock_exclusive(&file) {
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(DataDirError::Io(std::io::Error::new(
                    err.kind(),
                    format!("cannot lock {}: {err}", path.display()),
                )));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("another hearth server (pid {pid})"),
            };
            return Err(DataDirError::InUse(format!(
                "the data directory {} is in use by {holder}: stop it first, or give this \
                 server its own --data-dir",
                data_dir.display()
            )));
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        DataDirLock::acquire(dir.path()).expect("free again once released");
    }
}
