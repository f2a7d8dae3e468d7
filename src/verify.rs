//! `hearth verify`: check a data directory's store (a backup, or a live one beside its
//! server) and say what was found. Everything is read in one read transaction, so a store
//! being written is checked as of one commit.
//!
//! Checked: the schema version is this build's; the stored server key matches the key file;
//! every event decodes and the newest sequence (`last_seq`) is at least every event's; the
//! `by_user` index is complete and exact (one entry per event, naming its user, and nothing
//! else); the newest retained event of each path agrees with the file table (a PUT: the file
//! exists with that hash, size and content sequence; a DEL: no file); every file's content is
//! all there (its chunks, their total size) and no chunk belongs to no file; each user's
//! `used_bytes` is the sum of their files. Relayed events (with an origin) have no files here
//! and are only checked as events.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, RoTxn, WithoutTls};

use crate::backup::{open_read_only, BackupError};
use crate::files::tables::{decode, names as file_names, FileMeta, UserRecord};
use crate::files::tree::entry_key;
use crate::keys::USER_KEY_LEN;
use crate::log::event::decode as decode_event;
use crate::log::store::{names as log_names, user_key};
use crate::log::EventKind;
use crate::migrations::current_version;
use crate::store::meta_keys;
use crate::store::StoreError;

/// Problems listed one by one before the rest are only counted.
const MAX_LISTED: usize = 50;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub schema_version: u32,
    pub last_seq: u64,
    pub first_seq: Option<u64>,
    pub events: u64,
    pub files: u64,
    pub users: u64,
    /// Paths whose newest retained event was compared with the file table.
    pub paths_checked: u64,
    /// Files that no retained event covers (retention trimmed their history).
    pub files_without_events: u64,
    pub problems: Vec<String>,
    pub problem_count: u64,
}

impl Report {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }

    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "schema version: {}", self.schema_version)?;
        writeln!(
            f,
            "events: {} (oldest {}, last_seq {})",
            self.events,
            self.first_seq.map_or("none".to_string(), |s| s.to_string()),
            self.last_seq
        )?;
        writeln!(f, "users: {}, files: {}", self.users, self.files)?;
        writeln!(
            f,
            "paths checked against their newest event: {}; files older than the retained log: {}",
            self.paths_checked, self.files_without_events
        )?;
        if self.is_clean() {
            write!(f, "ok: no problems found")
        } else {
            for problem in &self.problems {
                writeln!(f, "problem: {problem}")?;
            }
            if self.problem_count > self.problems.len() as u64 {
                writeln!(
                    f,
                    "... and {} more",
                    self.problem_count - self.problems.len() as u64
                )?;
            }
            write!(f, "{} problem(s) found", self.problem_count)
        }
    }
}

/// The newest retained event of one path.
struct Latest {
    seq: u64,
    kind: EventKind,
    hash: Option<[u8; 32]>,
    size: Option<u64>,
}

/// Check the store of `data_dir`.
pub fn verify(data_dir: &Path) -> Result<Report, BackupError> {
    let env = open_read_only(data_dir)?;
    let txn = env.read_txn().map_err(StoreError::from)?;
    let mut report = Report::default();
    check(&env, &txn, data_dir, &mut report).map_err(BackupError::Store)?;
    Ok(report)
}

fn table<K: 'static, V: 'static>(
    env: &crate::store::Env,
    txn: &RoTxn<'_, WithoutTls>,
    name: &str,
) -> Result<Database<K, V>, StoreError> {
    env.open_database(txn, Some(name))?
        .ok_or_else(|| StoreError::Schema(format!("the store has no {name} table")))
}

fn check(
    env: &crate::store::Env,
    txn: &RoTxn<'_, WithoutTls>,
    data_dir: &Path,
    report: &mut Report,
) -> Result<(), StoreError> {
    let meta: Database<Str, Bytes> = table(env, txn, crate::store::names::META)?;
    report.schema_version = match meta.get(txn, meta_keys::SCHEMA_VERSION)? {
        Some(bytes) => u32::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("the schema version is not 4 bytes".into()))?,
        ),
        None => 0,
    };
    if report.schema_version != current_version() {
        report.problem(format!(
            "schema version {} is not this build's {}: start a server of this version on it to \
             migrate it (or use the matching hearth)",
            report.schema_version,
            current_version()
        ));
        return Ok(());
    }
    check_key(&meta, txn, data_dir, report)?;
    report.last_seq = match meta.get(txn, meta_keys::LAST_SEQ)? {
        Some(bytes) => u64::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("last_seq is not 8 bytes".into()))?,
        ),
        None => 0,
    };

    let events: Database<U64<BigEndian>, Bytes> = table(env, txn, log_names::EVENTS)?;
    let by_user: Database<Bytes, Bytes> = table(env, txn, log_names::BY_USER)?;
    let mut latest: HashMap<String, Latest> = HashMap::new();
    for entry in events.iter(txn)? {
        let (seq, bytes) = entry?;
        report.events += 1;
        report.first_seq.get_or_insert(seq);
        if seq > report.last_seq {
            report.problem(format!("event {seq} is above last_seq {}", report.last_seq));
        }
        let event = match decode_event(seq, bytes) {
            Ok(event) => event,
            Err(err) => {
                report.problem(format!("event {seq} does not decode: {err}"));
                continue;
            }
        };
        if event.key.len() < USER_KEY_LEN {
            report.problem(format!("event {seq} has no user key: {:?}", event.key));
            continue;
        }
        if by_user.get(txn, &user_key(event.user(), seq))?.is_none() {
            report.problem(format!("event {seq} is missing from the by_user index"));
        }
        if event.origin.is_none() {
            latest.insert(
                event.key.clone(),
                Latest {
                    seq,
                    kind: event.kind,
                    hash: event.hash,
                    size: event.size,
                },
            );
        }
    }
    let mut indexed = 0u64;
    for entry in by_user.iter(txn)? {
        let (key, _) = entry?;
        indexed += 1;
        let seq = key
            .get(USER_KEY_LEN..)
            .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
            .map(u64::from_be_bytes);
        let Some(seq) = seq else {
            report.problem(format!("by_user key {key:?} is malformed"));
            continue;
        };
        match events.get(txn, &seq)? {
            None => report.problem(format!("by_user names event {seq}, which the log lacks")),
            Some(bytes) => {
                let user = &key[..USER_KEY_LEN];
                if let Ok(event) = decode_event(seq, bytes) {
                    if event.user().as_bytes() != user {
                        report.problem(format!(
                            "by_user files event {seq} under {}, but it is {}'s",
                            String::from_utf8_lossy(user),
                            event.user()
                        ));
                    }
                }
            }
        }
    }
    if indexed != report.events {
        report.problem(format!(
            "by_user has {indexed} entries for {} events",
            report.events
        ));
    }
    check_files(env, txn, &latest, report)
}

fn check_key(
    meta: &Database<Str, Bytes>,
    txn: &RoTxn<'_, WithoutTls>,
    data_dir: &Path,
    report: &mut Report,
) -> Result<(), StoreError> {
    let path = data_dir.join(crate::identity::KEY_FILE);
    let Some(stored) = meta.get(txn, meta_keys::SERVER_KEY)? else {
        return Ok(());
    };
    if !path.is_file() {
        report.problem(format!(
            "no key file {}: the store was served by {}, restore its key file",
            path.display(),
            String::from_utf8_lossy(stored)
        ));
        return Ok(());
    }
    match pubky_common::crypto::Keypair::from_secret_key_file(&path) {
        Ok(keypair) if keypair.public_key().z32().as_bytes() == stored => {}
        Ok(keypair) => report.problem(format!(
            "the key file holds {}, but the store was served by {}",
            keypair.public_key().z32(),
            String::from_utf8_lossy(stored)
        )),
        Err(err) => report.problem(format!("the key file does not read: {err}")),
    }
    Ok(())
}

fn check_files(
    env: &crate::store::Env,
    txn: &RoTxn<'_, WithoutTls>,
    latest: &HashMap<String, Latest>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let tree: Database<Bytes, Bytes> = table(env, txn, file_names::FILE_TREE)?;
    let chunks: Database<Bytes, Bytes> = table(env, txn, file_names::CHUNKS)?;
    let users: Database<Str, Bytes> = table(env, txn, file_names::USERS)?;

    // Content present, by content sequence: (chunks, bytes).
    let mut content: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for entry in chunks.iter(txn)? {
        let (key, bytes) = entry?;
        let Some(seq) = key
            .get(..8)
            .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
            .map(u64::from_be_bytes)
        else {
            report.problem(format!("chunk key {key:?} is malformed"));
            continue;
        };
        let slot = content.entry(seq).or_default();
        slot.0 += 1;
        slot.1 += bytes.len() as u64;
    }
    let log_is_whole =
        report.first_seq.is_none_or(|first| first == 1) && report.last_seq == report.events;
    let mut used_by_user: HashMap<String, u64> = HashMap::new();
    for entry in tree.iter(txn)? {
        let (key, bytes) = entry?;
        // A directory's entry (its name ends with `/`) says the directory exists; it is not a file.
        if key.ends_with(b"/") {
            continue;
        }
        report.files += 1;
        let meta: FileMeta = match decode(bytes) {
            Ok(meta) => meta,
            Err(err) => {
                report.problem(format!("file record {key:?} does not decode: {err}"));
                continue;
            }
        };
        let Some(user) = key
            .get(..USER_KEY_LEN)
            .and_then(|u| std::str::from_utf8(u).ok())
        else {
            report.problem(format!("file key {key:?} has no user key"));
            continue;
        };
        *used_by_user.entry(user.to_string()).or_default() += meta.size;
        if entry_key(user, &meta.path).as_slice() != key {
            report.problem(format!(
                "file {user}{} is stored under another key",
                meta.path
            ));
        }
        match content.remove(&meta.content_seq) {
            Some((count, size)) if count == u64::from(meta.chunk_count()) && size == meta.size => {}
            Some((count, size)) => report.problem(format!(
                "file {user}{}: {count} chunks of {size} bytes, expected {} of {}",
                meta.path,
                meta.chunk_count(),
                meta.size
            )),
            None if meta.size == 0 => {}
            None => report.problem(format!("file {user}{}: its content is missing", meta.path)),
        }
        let full = format!("{user}{}", meta.path);
        match latest.get(&full) {
            Some(_) => {}
            None if log_is_whole => report.problem(format!("file {full} has no event in the log")),
            None => report.files_without_events += 1,
        }
    }
    for seq in content.keys() {
        report.problem(format!(
            "chunks under content sequence {seq} belong to no file"
        ));
    }
    for (key, last) in latest {
        report.paths_checked += 1;
        let (user, path) = key.split_at(USER_KEY_LEN);
        let file: Option<FileMeta> = tree
            .get(txn, &entry_key(user, path))?
            .map(decode)
            .transpose()?;
        match (last.kind, file) {
            (EventKind::Put, None) => report.problem(format!(
                "{key}: its newest event {} is a PUT, but there is no file",
                last.seq
            )),
            (EventKind::Put, Some(meta)) => {
                if Some(meta.hash) != last.hash || Some(meta.size) != last.size {
                    report.problem(format!(
                        "{key}: the file's hash or size differs from its newest event {}",
                        last.seq
                    ));
                }
                if meta.content_seq != last.seq {
                    report.problem(format!(
                        "{key}: the file's content is from event {}, its newest is {}",
                        meta.content_seq, last.seq
                    ));
                }
            }
            (EventKind::Del, Some(_)) => report.problem(format!(
                "{key}: its newest event {} is a DEL, but the file exists",
                last.seq
            )),
            (EventKind::Del, None) => {}
        }
    }
    for entry in users.iter(txn)? {
        let (user, bytes) = entry?;
        report.users += 1;
        let record: UserRecord = match decode(bytes) {
            Ok(record) => record,
            Err(err) => {
                report.problem(format!("user {user} does not decode: {err}"));
                continue;
            }
        };
        let stored = used_by_user.remove(user).unwrap_or(0);
        if record.used_bytes != stored {
            report.problem(format!(
                "user {user}: used_bytes is {}, but their files hold {stored}",
                record.used_bytes
            ));
        }
    }
    for user in used_by_user.keys() {
        report.problem(format!("files of {user}, who is not a user"));
    }
    Ok(())
}
