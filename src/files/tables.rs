//! The homeserver's LMDB tables and the records they hold: users, sessions, spent tokens,
//! signup tokens, grants, bearer sessions, spent proofs, files and their content in chunks.
//!
//! Keys are big-endian where they are numbers, so LMDB's byte order is number order: a file's
//! chunks iterate in offset order, spent tokens in time order. Values are postcard, versioned
//! through `migrations/` rather than through per-record tags.

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::Database;
use serde::{Deserialize, Serialize};

use super::quota::UserQuota;
use crate::store::{Store, StoreError};

/// Names of the databases, as migrations create them.
pub mod names {
    pub const USERS: &str = "users";
    pub const SESSIONS: &str = "sessions";
    pub const USED_AUTH_TOKENS: &str = "used_auth_tokens";
    pub const SIGNUP_TOKENS: &str = "signup_tokens";
    /// The files table of versions 1 to 5 (keys `<user><path>`, cut by hashing past LMDB's
    /// limit); m0006 moved its records into `FILE_TREE` and removed it.
    pub const FILES: &str = "files";
    pub const FILE_TREE: &str = "file_tree";
    pub const CHUNKS: &str = "chunks";
    pub const GRANTS: &str = "grants";
    pub const BEARER_SESSIONS: &str = "bearer_sessions";
    pub const POP_NONCES: &str = "pop_nonces";
}

/// Handles to every table; cheap to copy.
#[derive(Clone, Copy)]
pub struct Tables {
    /// z32 -> `UserRecord`
    pub users: Database<Str, Bytes>,
    /// session secret -> `pubky_common::session::CookieSessionRecord` (its own postcard form)
    pub sessions: Database<Str, Bytes>,
    /// `<token timestamp µs BE><signature>` -> the timestamp: spent AuthTokens, to refuse
    /// replays; ordered by time so the expired ones are pruned from the front
    pub used_auth_tokens: Database<Bytes, U64<BigEndian>>,
    /// signup token -> `SignupTokenRecord`
    pub signup_tokens: Database<Str, Bytes>,
    /// `tree::entry_key(user, path)` -> a file's `FileMeta`, or for a directory (a path ending
    /// with `/`) nothing: its entry only says it exists. See `tree`.
    pub tree: Database<Bytes, Bytes>,
    /// `chunk_key(content_seq, index)` -> up to `CHUNK_SIZE` bytes of content
    pub chunks: Database<Bytes, Bytes>,
    /// grant id (the grant's `jti`) -> `GrantRecord`
    pub grants: Database<Str, Bytes>,
    /// BLAKE3 of a bearer token -> `BearerRecord`. Only the hash is stored, so a copy of the
    /// store yields no usable bearer.
    pub bearer_sessions: Database<Bytes, Bytes>,
    /// `<PoP iat, unix s BE><nonce>` -> the iat: spent PoP proofs, to refuse replays; ordered
    /// by time so the expired ones are pruned from the front
    pub pop_nonces: Database<Bytes, U64<BigEndian>>,
}

impl Tables {
    /// Open the tables the migrations created; a missing one means a damaged store.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Tables {
            users: store.table(names::USERS)?,
            sessions: store.table(names::SESSIONS)?,
            used_auth_tokens: store.table(names::USED_AUTH_TOKENS)?,
            signup_tokens: store.table(names::SIGNUP_TOKENS)?,
            tree: store.table(names::FILE_TREE)?,
            chunks: store.table(names::CHUNKS)?,
            grants: store.table(names::GRANTS)?,
            bearer_sessions: store.table(names::BEARER_SESSIONS)?,
            pop_nonces: store.table(names::POP_NONCES)?,
        })
    }
}

/// Content is stored in chunks of this size, so a large file streams in and out.
pub const CHUNK_SIZE: usize = 64 * 1024;

pub fn chunk_key(content_seq: u64, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&content_seq.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The full path.
    pub path: String,
    pub size: u64,
    pub hash: [u8; 32],
    pub content_type: String,
    /// Unix milliseconds of the commit that wrote it.
    pub modified_ms: u64,
    /// The sequence of the PUT that wrote this content: its chunks are under this number.
    pub content_seq: u64,
}

impl FileMeta {
    pub fn chunk_count(&self) -> u32 {
        self.size.div_ceil(CHUNK_SIZE as u64) as u32
    }
}

/// A user (format of schema version 5: `disabled` and `quota` added by m0005).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub created_ms: u64,
    /// Bytes of file content the user stores, for the quota.
    pub used_bytes: u64,
    /// Set by the admin: the user can no longer write or sign in.
    pub disabled: bool,
    /// The user's own limits (from their signup token, or set by the admin).
    pub quota: UserQuota,
}

/// A signup token (format of schema version 5: `used_ms` and `quota` added by m0005).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignupTokenRecord {
    pub created_ms: u64,
    /// The user who signed up with it; a token is good for one signup.
    pub used_by: Option<String>,
    /// When it was used.
    pub used_ms: Option<u64>,
    /// The limits the user who signs up with it gets.
    pub quota: UserQuota,
}

/// A grant: a user's signed permission for one client key (`cnf`) to act with `caps`.
/// Stored on its first exchange; revoking it keeps the record, so the id cannot be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The user (the grant's `iss`), z32.
    pub user: String,
    pub client_id: String,
    /// Capabilities, each as `<scope>:<actions>`.
    pub caps: Vec<String>,
    /// The client key that must sign the proofs of possession, z32.
    pub cnf: String,
    /// Unix seconds, as signed.
    pub iat: u64,
    pub exp: u64,
    /// Unix seconds of the first exchange.
    pub created_s: u64,
    pub revoked_s: Option<u64>,
    /// The BLAKE3 of the grant's current bearer: each exchange replaces the previous one.
    pub bearer: Option<[u8; 32]>,
}

impl GrantRecord {
    /// Whether `other` is the same grant as signed (ignoring what the server added).
    pub fn same_claims(&self, other: &GrantRecord) -> bool {
        self.user == other.user
            && self.client_id == other.client_id
            && self.caps == other.caps
            && self.cnf == other.cnf
            && self.iat == other.iat
            && self.exp == other.exp
    }
}

/// A bearer token's session: which grant it stands for, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BearerRecord {
    pub grant_id: String,
    /// Unix seconds; at most an hour after minting, never past the grant's expiry.
    pub expires_s: u64,
    pub created_s: u64,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|err| StoreError::Lmdb(heed::Error::Encoding(Box::new(err))))
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_sort_by_seq_then_index() {
        assert!(chunk_key(1, u32::MAX) < chunk_key(2, 0));
        assert!(chunk_key(256, 0) > chunk_key(255, 9));
    }
}
