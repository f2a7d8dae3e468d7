//! Homeserver state: users and their sessions (cookie and grant flows), spent tokens and
//! proofs, signup tokens, files with their content in chunks, and the quota.
//!
//! - `tables`: the LMDB tables and their records;
//! - `tree`: how files and directories are keyed (by parent directory, for paths of any length);
//! - `content`: bodies on their way in (hashed, spooled) and out (one chunk per read);
//! - `listing`: directory listings;
//! - `admin`: what the admin reads (users, signup tokens, counts); `quota`: per-user limits;
//! - `ops`: every change, as `FileOp`s the store's writer runs (a PUT or DELETE also appends
//!   its event to the log, in the same transaction).
//!
//! `Files` is the read side, a cheap clone. Its errors are `FilesError`s, which say what was
//! wrong in words; `http/` decides the status.

mod admin;
pub mod content;
mod listing;
mod ops;
pub mod quota;
pub(crate) mod tables;
pub(crate) mod tree;

use std::path::PathBuf;

use pubky_common::session::CookieSessionRecord;

pub use admin::{Counts, Page, UserFilter, UserOrder};
pub use listing::ListOptions;
pub use ops::{FileOp, FileWrite, RevokeProof, SpentPop, UsedToken, Written, USER_DISABLED};
pub use tables::{BearerRecord, FileMeta, GrantRecord, SignupTokenRecord, UserRecord, CHUNK_SIZE};

use crate::store::{Env, Store, StoreError};
use tables::{chunk_key, decode, Tables};

/// LMDB's largest key: a lookup by a longer (or empty) string is answered without LMDB.
const MAX_KEY_BYTES: usize = 511;

/// Why a file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    NotFound(String),
    /// A path that is a file and a directory at once, a user that exists already.
    #[error("{0}")]
    Conflict(String),
    /// The user's quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A token, proof or grant that does not authenticate (or was spent).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed this.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input (a body that could not be read).
    #[error("{0}")]
    Invalid(String),
    /// A body larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// Spooling a body to disk failed.
    #[error("spooling the body failed: {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<heed::Error> for FilesError {
    fn from(err: heed::Error) -> Self {
        FilesError::Store(err.into())
    }
}

/// The read side of the homeserver's state.
#[derive(Clone)]
pub struct Files {
    env: Env,
    tables: Tables,
    dir: PathBuf,
}

impl Files {
    /// The files of an open store (whose migrations created their tables).
    pub fn open(store: &Store) -> Result<Files, StoreError> {
        Ok(Files {
            env: store.env().clone(),
            tables: Tables::open(store)?,
            dir: store.dir().to_path_buf(),
        })
    }

    /// Where bodies too large for memory wait for their commit.
    pub fn spool_dir(&self) -> PathBuf {
        content::spool_dir(&self.dir)
    }

    /// Bind `op` to these tables, for the writer to run.
    pub fn write(&self, op: FileOp) -> FileWrite {
        FileWrite::new(self.tables, op)
    }

    pub fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        self.tables.users.get(&txn, user)?.map(decode).transpose()
    }

    /// Every user's key (z32), in key order.
    pub fn user_keys(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut keys = Vec::new();
        for entry in self.tables.users.iter(&txn)? {
            let (key, _) = entry?;
            keys.push(key.to_owned());
        }
        Ok(keys)
    }

    /// The session of `secret`; `None` for an unknown one, or one that could not be a key.
    pub fn session(&self, secret: &str) -> Result<Option<CookieSessionRecord>, StoreError> {
        if secret.is_empty() || secret.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        let txn = self.env.read_txn()?;
        match self.tables.sessions.get(&txn, secret)? {
            None => Ok(None),
            Some(bytes) => CookieSessionRecord::deserialize(bytes)
                .map(Some)
                .map_err(|err| StoreError::Corrupt(format!("session record: {err}"))),
        }
    }

    /// What a write needs of a cookie session: its user (z32) and capabilities. Read without
    /// building the whole `CookieSessionRecord`, whose public key would be decompressed (an
    /// Ed25519 point, on every write); the key was checked when the session was made.
    pub fn cookie_session(
        &self,
        secret: &str,
    ) -> Result<Option<(String, Vec<pubky_common::capabilities::Capability>)>, StoreError> {
        let txn = self.env.read_txn()?;
        match self.tables.sessions.get(&txn, secret)? {
            None => Ok(None),
            Some(bytes) => cookie_session_view(bytes).map(Some),
        }
    }

    pub fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        self.tables
            .grants
            .get(&txn, grant_id)?
            .map(decode)
            .transpose()
    }

    /// The bearer whose BLAKE3 is `hash` and its grant, read from one snapshot. Whether they
    /// are still good (unexpired, not revoked) is the caller's to judge.
    pub fn bearer_session(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<(BearerRecord, GrantRecord)>, StoreError> {
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

    /// The file at `path`; `None` when there is none (a directory is not a file).
    pub fn file(&self, user: &str, path: &str) -> Result<Option<FileMeta>, StoreError> {
        if path.ends_with('/') {
            return Ok(None);
        }
        let txn = self.env.read_txn()?;
        self.tables
            .tree
            .get(&txn, &tree::entry_key(user, path))?
            .map(decode)
            .transpose()
    }

    /// One chunk of a file's content; `None` once the content was replaced or deleted.
    pub fn chunk(&self, content_seq: u64, index: u32) -> Result<Option<bytes::Bytes>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self
            .tables
            .chunks
            .get(&txn, &chunk_key(content_seq, index))?
            .map(bytes::Bytes::copy_from_slice))
    }
}

/// The user (z32) and capabilities of a stored `CookieSessionRecord`, its key left as bytes.
fn cookie_session_view(
    bytes: &[u8],
) -> Result<(String, Vec<pubky_common::capabilities::Capability>), StoreError> {
    /// The fields of `CookieSessionRecord`, in its order, the key as its 32 bytes (postcard
    /// writes a key as its bytes, in the binary form the record is stored in).
    #[derive(serde::Deserialize)]
    struct View<'a> {
        version: usize,
        public_key: [u8; 32],
        _created_at: u64,
        #[serde(borrow)]
        _name: &'a str,
        #[serde(borrow)]
        _user_agent: &'a str,
        capabilities: Vec<pubky_common::capabilities::Capability>,
    }
    let view: View = postcard::from_bytes(bytes)
        .map_err(|err| StoreError::Corrupt(format!("session record: {err}")))?;
    if view.version != 0 {
        return Err(StoreError::Corrupt(format!(
            "session record: unknown version {}",
            view.version
        )));
    }
    Ok((crate::keys::z32_encode(&view.public_key), view.capabilities))
}

#[cfg(test)]
mod tests {
    use pubky_common::capabilities::{Capabilities, Capability};
    use pubky_common::crypto::Keypair;
    use pubky_common::session::CookieSessionRecord;

    #[test]
    fn the_cookie_session_view_reads_what_the_record_holds() {
        let keypair = Keypair::random();
        let caps = vec![
            Capability::read_write("/pub/").expect("cap"),
            Capability::read_write("/pub/app/x.json").expect("cap"),
        ];
        let record = CookieSessionRecord::new(
            &keypair.public_key(),
            Capabilities::from(caps.clone()),
            Some("agent \"007\"".into()),
        );
        let (user, capabilities) =
            super::cookie_session_view(&record.serialize()).expect("decodes");
        assert_eq!(user, keypair.public_key().z32());
        assert_eq!(capabilities, caps);
        assert!(super::cookie_session_view(&[1, 2, 3]).is_err());
    }
}
