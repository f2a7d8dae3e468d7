//! The event log's vocabulary: what a committed change is, and how its id is written.
//!
//! Storage writes `Event`s in the same transaction as the change; the firehose reads them back
//! and fans them out. Everything a subscriber needs is in the event itself, so serving one never
//! needs a second lookup.

pub mod frame;
pub mod hub;
pub mod id;
pub mod subscriptions;

use serde::{Deserialize, Serialize};

/// Length of a user's z-base32 public key, the first part of every event key.
pub const USER_KEY_LEN: usize = 52;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Del,
}

impl EventKind {
    /// The name used on the wire: `PUT` or `DEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Put => "PUT",
            EventKind::Del => "DEL",
        }
    }
}

/// What a PUT stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub hash: [u8; 32],
    pub size: u64,
    pub content_type: String,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The sequence number: the event log's key, one greater than the previous event's.
    #[serde(skip)]
    pub seq: u64,
    pub kind: EventKind,
    /// `<z32 user><path>`: the key subscriptions are matched against, and the file's key.
    pub key: String,
    /// Commit time, Unix milliseconds.
    pub ts_ms: u64,
    /// Present for PUT, absent for DEL.
    pub content: Option<Content>,
}

impl Event {
    /// The user's z-base32 public key.
    pub fn user(&self) -> &str {
        &self.key[..USER_KEY_LEN]
    }

    /// The path, starting with `/pub/`.
    pub fn path(&self) -> &str {
        &self.key[USER_KEY_LEN..]
    }

    /// `pubky://<z32><path>`.
    pub fn uri(&self) -> String {
        format!("pubky://{}", self.key)
    }
}

/// Base64 (standard, padded) of a BLAKE3 hash: the ETag value and the events' `hash`.
pub fn hash_base64(hash: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hash)
}
