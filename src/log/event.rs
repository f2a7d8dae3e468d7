//! One committed change (`Event`), and its record in the log.
//!
//! Ops append `Event`s in the same transaction as the change; the firehose reads them back and
//! fans them out. Everything a subscriber needs is in the event itself, so serving one never
//! needs a second lookup.
//!
//! A record is one format byte, then the postcard encoding of that format's struct. Format 2
//! (`RecordV2`) is the only one written; format 1 (a bare postcard struct with the content
//! type, no tag) was re-encoded by migration m0003. A new format gets a new byte and a new
//! struct here, and a migration: readers never have to guess what a record is.

use serde::{Deserialize, Serialize};

use crate::keys::USER_KEY_LEN;
use crate::store::StoreError;

/// Whether a change wrote or deleted a file. Part of the record format: the variant order is
/// what postcard stores.
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

/// Where an event was first committed, when that was another homeserver (a relay's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The homeserver's public key, z32.
    pub hs: String,
    /// The homeserver's id of the event, as it serves it.
    pub hs_seq: String,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The sequence number: the event log's key, one greater than the previous event's.
    pub seq: u64,
    pub kind: EventKind,
    /// `<z32 user><path>`: the key subscriptions are matched against, and the file's key.
    pub key: String,
    /// Commit time, Unix milliseconds.
    pub ts_ms: u64,
    /// The content's BLAKE3, for a PUT whose source gave one (a Pubky 0.5 source gives none).
    pub hash: Option<[u8; 32]>,
    /// The content's size in bytes, for a PUT whose source gave it.
    pub size: Option<u64>,
    /// Set when the event was committed elsewhere first; `None` for this server's own writes.
    pub origin: Option<Origin>,
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

/// The format byte of records written as `RecordV2`.
const FORMAT_V2: u8 = 2;

/// Record format 2. The field order and types are the format: change them only as a new
/// format. Strings borrow from the event (writing) or from the stored bytes (reading).
#[derive(Serialize, Deserialize)]
struct RecordV2<'a> {
    kind: EventKind,
    key: &'a str,
    ts_ms: u64,
    hash: Option<[u8; 32]>,
    size: Option<u64>,
    origin: Option<OriginV2<'a>>,
}

#[derive(Serialize, Deserialize)]
struct OriginV2<'a> {
    hs: &'a str,
    hs_seq: &'a str,
}

/// The stored form of an event (its sequence is the key, not part of the record).
pub(crate) fn encode(event: &Event) -> Result<Vec<u8>, StoreError> {
    let record = RecordV2 {
        kind: event.kind,
        key: &event.key,
        ts_ms: event.ts_ms,
        hash: event.hash,
        size: event.size,
        origin: event.origin.as_ref().map(|origin| OriginV2 {
            hs: &origin.hs,
            hs_seq: &origin.hs_seq,
        }),
    };
    // Room for the whole record up front (the key, and at most ~140 bytes of the rest with an
    // origin): growing the vector as postcard writes cost more than the encoding itself.
    let mut out = Vec::with_capacity(144 + event.key.len());
    out.push(FORMAT_V2);
    postcard::to_extend(&record, out)
        .map_err(|err| StoreError::Lmdb(heed::Error::Encoding(Box::new(err))))
}

/// An event from its record and its sequence. A record that does not decode, or whose key
/// does not start with a user key, is corrupt.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let record: RecordV2 = match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => postcard::from_bytes(rest)?,
        Some((format, _)) => {
            return Err(StoreError::Corrupt(format!(
                "event {seq}: unknown record format {format}"
            )))
        }
        None => return Err(StoreError::Corrupt(format!("event {seq}: empty record"))),
    };
    if record.key.len() < USER_KEY_LEN || !record.key.is_char_boundary(USER_KEY_LEN) {
        return Err(StoreError::Corrupt(format!(
            "event {seq}: the key {:?} does not start with a user key",
            record.key
        )));
    }
    Ok(Event {
        seq,
        kind: record.kind,
        key: record.key.to_string(),
        ts_ms: record.ts_ms,
        hash: record.hash,
        size: record.size,
        origin: record.origin.map(|origin| Origin {
            hs: origin.hs.to_string(),
            hs_seq: origin.hs_seq.to_string(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    #[test]
    fn records_round_trip_and_name_their_format() {
        let put = Event {
            seq: 7,
            kind: EventKind::Put,
            key: format!("{ALICE}/pub/a \"b\""),
            ts_ms: 1_763_812_345_678,
            hash: Some([9; 32]),
            size: Some(123),
            origin: Some(Origin {
                hs: ALICE.into(),
                hs_seq: "0000000000011".into(),
            }),
        };
        let bytes = encode(&put).unwrap();
        assert_eq!(bytes[0], FORMAT_V2);
        assert_eq!(decode(7, &bytes).unwrap(), put);
        let bare = Event {
            kind: EventKind::Del,
            hash: None,
            size: None,
            origin: None,
            ..put
        };
        assert_eq!(
            decode(8, &encode(&bare).unwrap()).unwrap(),
            Event { seq: 8, ..bare }
        );
        for bad in [&[][..], &[1, 0, 0][..], &[FORMAT_V2, 0, 3, b'a'][..]] {
            assert!(
                matches!(decode(1, bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
