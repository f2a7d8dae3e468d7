//! One committed change (`Event`), and its record in the log.
//!
//! Ops append `Event`s in the same transaction as the change; the firehose reads them back and
//! fans them out. Everything a subscriber needs is in the event itself, so serving one never
//! needs a second lookup.

use serde::{Deserialize, Serialize};

use crate::keys::USER_KEY_LEN;
use crate::store::StoreError;

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

/// The stored form of an event (its sequence is the key, not part of the record).
pub(crate) fn encode(event: &Event) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(event).map_err(|err| StoreError::Lmdb(heed::Error::Encoding(Box::new(err))))
}

/// An event from its record and its sequence. A record that does not decode, or whose key
/// does not start with a user key, is corrupt.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let mut event: Event = postcard::from_bytes(bytes)?;
    if event.key.len() < USER_KEY_LEN || !event.key.is_char_boundary(USER_KEY_LEN) {
        return Err(StoreError::Corrupt(format!(
            "event {seq}: the key {:?} does not start with a user key",
            event.key
        )));
    }
    event.seq = seq;
    Ok(event)
}
