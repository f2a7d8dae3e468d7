//! Storage: one LMDB environment under the data directory.
//!
//! `Store` is the read side, a cheap clone shared by every request. All writes go through the
//! single `Writer` thread (see `writer`), which batches them into group commits. Reads never
//! wait for writes: LMDB readers see the last committed snapshot.

pub mod content;
pub mod migrate;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};

use heed::{EnvFlags, EnvOpenOptions, WithoutTls};
use pubky_common::session::CookieSessionRecord;

use crate::error::{Error, Result};
use crate::events::Event;
use schema::{
    chunk_key, decode, file_key, file_key_prefix, meta_keys, BearerRecord, FileMeta, GrantRecord,
    Tables, UserRecord,
};

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

/// The read side of the store, and the handle the writer is built from.
#[derive(Clone)]
pub struct Store {
    env: heed::Env<WithoutTls>,
    tables: Tables,
    dir: PathBuf,
}

/// What a directory listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub limit: usize,
    /// List after this path (exclusive).
    pub cursor: Option<String>,
    pub reverse: bool,
    /// Only the directory's direct children; subdirectories once each, ending with `/`.
    pub shallow: bool,
}

impl Store {
    /// Open (creating if needed) the store in `dir` and bring its schema up to date.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store> {
        Self::open_with(dir, options, migrate::ALL)
    }

    /// Open with a given list of migrations: tests use it to build stores of older versions.
    pub fn open_with(
        dir: &Path,
        options: &StoreOptions,
        migrations: &[migrate::Migration],
    ) -> Result<Store> {
        let lmdb_dir = dir.join("lmdb");
        std::fs::create_dir_all(&lmdb_dir)?;
        let mut open = EnvOpenOptions::new().read_txn_without_tls();
        open.map_size(options.map_size)
            .max_dbs(16)
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
        let tables = {
            let rtxn = env.read_txn()?;
            let tables = Tables::open(&env, &rtxn)?;
            rtxn.commit()?;
            tables
        };
        Ok(Store {
            env,
            tables,
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory (spool files go in its `tmp/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn env(&self) -> &heed::Env<WithoutTls> {
        &self.env
    }

    pub(crate) fn tables(&self) -> Tables {
        self.tables
    }

    /// Close the environment, waiting for every other handle to be dropped first.
    pub fn close(self) {
        let Store { env, .. } = self;
        env.prepare_for_closing().wait();
    }

    /// The last sequence ever assigned (0 for a new store).
    pub fn last_seq(&self) -> Result<u64> {
        let txn = self.env.read_txn()?;
        read_last_seq(&self.tables, &txn)
    }

    /// The oldest event still in the log, if any.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        let txn = self.env.read_txn()?;
        Ok(self.tables.events.first(&txn)?.map(|(seq, _)| seq))
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.env.read_txn()?;
        Ok(self.tables.meta.get(&txn, key)?.map(<[u8]>::to_vec))
    }

    /// Write a `meta` entry. Only for start-up, before the writer runs.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        self.tables.meta.put(&mut txn, key, value)?;
        txn.commit()?;
        Ok(())
    }

    pub fn user(&self, user: &str) -> Result<Option<UserRecord>> {
        let txn = self.env.read_txn()?;
        self.tables.users.get(&txn, user)?.map(decode).transpose()
    }

    /// Every user's key (z32), in key order.
    pub fn user_keys(&self) -> Result<Vec<String>> {
        let txn = self.env.read_txn()?;
        let mut keys = Vec::new();
        for entry in self.tables.users.iter(&txn)? {
            let (key, _) = entry?;
            keys.push(key.to_owned());
        }
        Ok(keys)
    }

    pub fn session(&self, secret: &str) -> Result<Option<CookieSessionRecord>> {
        let txn = self.env.read_txn()?;
        match self.tables.sessions.get(&txn, secret)? {
            None => Ok(None),
            Some(bytes) => CookieSessionRecord::deserialize(bytes)
                .map(Some)
                .map_err(|err| Error::Corrupt(format!("session record: {err}"))),
        }
    }

    pub fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let txn = self.env.read_txn()?;
        self.tables
            .grants
            .get(&txn, grant_id)?
            .map(decode)
            .transpose()
    }

    /// The bearer whose BLAKE3 is `hash` and its grant, read from one snapshot. Whether they
    /// are still good (unexpired, not revoked) is the caller's to judge.
    pub fn bearer_session(&self, hash: &[u8; 32]) -> Result<Option<(BearerRecord, GrantRecord)>> {
        let txn = self.env.read_txn()?;
        let Some(bytes) = self.tables.bearer_sessions.get(&txn, hash)? else {
            return Ok(None);
        };
        let bearer: BearerRecord = decode(bytes)?;
        let grant: Option<GrantRecord> = self
            .tables
            .grants
            .get(&txn, &bearer.grant_id)?
            .map(decode)
            .transpose()?;
        Ok(grant.map(|grant| (bearer, grant)))
    }

    pub fn file(&self, user: &str, path: &str) -> Result<Option<FileMeta>> {
        let txn = self.env.read_txn()?;
        self.tables
            .files
            .get(&txn, &file_key(user, path))?
            .map(decode)
            .transpose()
    }

    /// One chunk of a file's content; `None` once the content was replaced or deleted.
    pub fn chunk(&self, content_seq: u64, index: u32) -> Result<Option<bytes::Bytes>> {
        let txn = self.env.read_txn()?;
        Ok(self
            .tables
            .chunks
            .get(&txn, &chunk_key(content_seq, index))?
            .map(bytes::Bytes::copy_from_slice))
    }

    /// The paths under `dir` (which ends with `/`), in key order, as listing asks. The cursor
    /// is a seek, not a skip: a deep page costs what it returns.
    pub fn list(&self, user: &str, dir: &str, options: &ListOptions) -> Result<Vec<String>> {
        use std::ops::Bound;
        let txn = self.env.read_txn()?;
        let (prefix, cut) = file_key_prefix(user, dir);
        let upper = prefix_upper_bound(&prefix);
        let cursor_key = options.cursor.as_deref().map(|c| file_key(user, c));
        // A shallow page may end on a subdirectory (`.../sub/`): the next page starts after
        // everything below it, not inside it.
        let skip_dir = match (&cursor_key, &options.cursor) {
            (Some(key), Some(cursor)) if cursor.ends_with('/') => prefix_upper_bound(key),
            _ => None,
        };
        let lower_bound = match (&cursor_key, &skip_dir) {
            (Some(_), Some(after_dir)) if !options.reverse => Bound::Included(after_dir.as_slice()),
            (Some(cursor), None) if !options.reverse => Bound::Excluded(cursor.as_slice()),
            _ => Bound::Included(prefix.as_slice()),
        };
        let upper_bound = match (&cursor_key, &upper) {
            (Some(cursor), _) if options.reverse => Bound::Excluded(cursor.as_slice()),
            (_, Some(upper)) => Bound::Excluded(upper.as_slice()),
            (_, None) => Bound::Unbounded,
        };
        let range = (lower_bound, upper_bound);
        let iter: Box<dyn Iterator<Item = heed::Result<KeyValue<'_>>>> = if options.reverse {
            Box::new(self.tables.files.rev_range(&txn, &range)?)
        } else {
            Box::new(self.tables.files.range(&txn, &range)?)
        };
        let mut out: Vec<String> = Vec::new();
        let mut last_dir: Option<String> = None;
        for entry in iter {
            if out.len() >= options.limit {
                break;
            }
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let path = match schema::plain_path(key, user.len()) {
                Some(path) if !cut => path.to_string(),
                _ => decode::<FileMeta>(value)?.path,
            };
            if !path.starts_with(dir) {
                continue;
            }
            let entry = if options.shallow {
                match path[dir.len()..].find('/') {
                    Some(slash) => {
                        let sub = path[..dir.len() + slash + 1].to_string();
                        if last_dir.as_deref() == Some(sub.as_str()) {
                            continue;
                        }
                        last_dir = Some(sub.clone());
                        sub
                    }
                    None => path,
                }
            } else {
                path
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// Visit events after `after`, in sequence order, at most `max` of them, in one read
    /// transaction. `visit` returns false to stop early. Returns the last sequence visited.
    pub fn scan_events(
        &self,
        after: u64,
        max: usize,
        visit: impl FnMut(Event) -> bool,
    ) -> Result<Option<u64>> {
        let txn = self.env.read_txn()?;
        let Some(start) = after.checked_add(1) else {
            return Ok(None);
        };
        let visited = visit_events(self.tables.events.range(&txn, &(start..))?.take(max), visit);
        visited
    }

    /// Events after `after`, newest first, at most `max`: for reverse reads.
    pub fn scan_events_rev(
        &self,
        before: u64,
        max: usize,
        visit: impl FnMut(Event) -> bool,
    ) -> Result<Option<u64>> {
        let txn = self.env.read_txn()?;
        let visited = visit_events(
            self.tables.events.rev_range(&txn, &(..before))?.take(max),
            visit,
        );
        visited
    }
}

/// Decode events from a log iterator (either direction) and hand them to `visit` until it
/// returns false. Returns the last sequence visited.
fn visit_events<'t>(
    entries: impl Iterator<Item = heed::Result<(u64, &'t [u8])>>,
    mut visit: impl FnMut(Event) -> bool,
) -> Result<Option<u64>> {
    let mut last = None;
    for entry in entries {
        let (seq, bytes) = entry?;
        let mut event: Event = decode(bytes)?;
        event.seq = seq;
        last = Some(seq);
        if !visit(event) {
            break;
        }
    }
    Ok(last)
}

type KeyValue<'t> = (&'t [u8], &'t [u8]);

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

pub(crate) fn read_last_seq(tables: &Tables, txn: &heed::RoTxn<'_, WithoutTls>) -> Result<u64> {
    match tables.meta.get(txn, meta_keys::LAST_SEQ)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .try_into()
                .map_err(|_| Error::Corrupt("last_seq is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(raw))
        }
    }
}
