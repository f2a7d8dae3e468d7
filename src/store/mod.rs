//! The LMDB environment under the data directory: opening it (map size, sync), its schema
//! version and `meta` table, and closing it.
//!
//! `Store` is the environment handle, a cheap clone. It knows no table but `meta`: each layer
//! above (`log`, `files`) opens its own typed databases in the environment, and the list of
//! migrations that creates them is handed in at open (see `crate::migrations`). Reads never
//! wait for writes: LMDB readers see the last committed snapshot. Writes go through the one
//! writer thread, which the event log owns (`crate::log::Writer`): the store knows no layer above it.

mod error;
pub mod migrate;

use std::path::{Path, PathBuf};

use heed::types::{Bytes, Str};
use heed::{Database, EnvFlags, EnvOpenOptions, WithoutTls};

pub use error::{is_disk_full, StoreError};

/// The most named tables the environment opens (14 today): room for the schema to grow.
/// Every opener of the environment (the server, `hearth backup`) uses it.
pub const MAX_TABLES: u32 = 64;

/// The environment type every layer shares.
pub type Env = heed::Env<WithoutTls>;

/// The `meta` table: small named values (schema version, server key, last sequence).
pub type Meta = Database<Str, Bytes>;

/// Names of the store's own databases.
pub(crate) mod names {
    pub const META: &str = "meta";
}

/// Keys of the `meta` table.
pub mod meta_keys {
    /// The schema version, u32 big-endian: the number of migrations applied.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The last sequence number ever assigned, u64 big-endian; the event log owns it. Kept
    /// apart from the log so that a sequence is never reused even if retention empties it.
    pub const LAST_SEQ: &str = "last_seq";
    /// The server's public key, z-base32, to notice a data dir paired with the wrong key file.
    pub const SERVER_KEY: &str = "server_key";
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// LMDB's map size: the most the store can grow to (address space, not memory).
    pub map_size: usize,
    /// fsync every commit. Off trades the last commits before a crash for speed.
    pub sync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            map_size: 64 << 30,
            sync: true,
        }
    }
}

/// The open environment of one data directory.
#[derive(Clone)]
pub struct Store {
    env: Env,
    meta: Meta,
    dir: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store in `dir` and bring its schema up to date with
    /// `migrations` (the server passes `crate::migrations::ALL`; tests pass older lists).
    pub fn open(
        dir: &Path,
        options: &StoreOptions,
        migrations: &[migrate::Migration],
    ) -> Result<Store, StoreError> {
        let lmdb_dir = dir.join("lmdb");
        std::fs::create_dir_all(&lmdb_dir)?;
        let mut open = EnvOpenOptions::new().read_txn_without_tls();
        // LMDB wants a multiple of the page size: round up to 64 KiB, a multiple of any.
        open.map_size(options.map_size.next_multiple_of(1 << 16))
            .max_dbs(MAX_TABLES)
            .max_readers(4096);
        if !options.sync {
            // SAFETY: flags only; NO_SYNC keeps the store consistent but may lose the last commits.
            unsafe {
                open.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the environment is opened once per process and per directory; the server
        // holds it for its whole life and closes it on shutdown.
        let env = unsafe { open.open(&lmdb_dir)? };
        migrate::migrate(&env, migrations)?;
        let store = Store {
            meta: open_table(&env, names::META)?,
            env,
            dir: dir.to_path_buf(),
        };
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The `meta` table, for the layers that keep a value there (the log's last sequence).
    pub(crate) fn meta_table(&self) -> Meta {
        self.meta
    }

    /// Open a table the migrations created; a missing one means a damaged store.
    pub(crate) fn table<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<Database<K, V>, StoreError> {
        open_table(&self.env, name)
    }

    /// Close the environment, waiting for every other handle to be dropped first.
    pub fn close(self) {
        let Store { env, .. } = self;
        env.prepare_for_closing().wait();
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.meta.get(&txn, key)?.map(<[u8]>::to_vec))
    }

    /// Write a `meta` entry. Only for start-up, before the writer runs.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta.put(&mut txn, key, value)?;
        txn.commit()?;
        Ok(())
    }
}

/// The LMDB map's use: bytes up to its last used page (the high-water mark: freed pages are
/// reused before it grows) and its size, the most the store can grow to.
pub fn map_usage(env: &Env) -> Result<(u64, u64), StoreError> {
    let info = env.info();
    let txn = env.read_txn()?;
    let meta: Meta = open_table(env, names::META)?;
    let page_size = u64::from(meta.stat(&txn)?.page_size);
    let used = (info.last_page_number as u64 + 1) * page_size;
    Ok((used, info.map_size as u64))
}

fn open_table<K: 'static, V: 'static>(env: &Env, name: &str) -> Result<Database<K, V>, StoreError> {
    let rtxn = env.read_txn()?;
    let table = env
        .open_database(&rtxn, Some(name))?
        .ok_or_else(|| StoreError::Schema(format!("the store has no {name} table")))?;
    rtxn.commit()?;
    Ok(table)
}
