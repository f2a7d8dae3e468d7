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
    /// The event borrowed: what frames are encoded from.
    pub(crate) fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            seq: self.seq,
            kind: self.kind,
            key: &self.key,
            ts_ms: self.ts_ms,
            hash: self.hash.as_ref(),
            size: self.size,
            origin: self
                .origin
                .as_ref()
                .map(|origin| (origin.hs.as_str(), origin.hs_seq.as_str())),
        }
    }

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

/// An event borrowed from its stored record (or from an `Event`): replay reads records into
/// these and encodes frames from them, with no allocation per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventRef<'a> {
    pub seq: u64,
    pub kind: EventKind,
    /// `<z32 user><path>`; at least `USER_KEY_LEN` bytes, split on a character boundary.
    pub key: &'a str,
    pub ts_ms: u64,
    pub hash: Option<&'a [u8; 32]>,
    pub size: Option<u64>,
    /// (`hs`, `hs_seq`) of a relayed event.
    pub origin: Option<(&'a str, &'a str)>,
}

impl<'a> EventRef<'a> {
    pub fn user(&self) -> &'a str {
        &self.key[..USER_KEY_LEN]
    }

    pub fn path(&self) -> &'a str {
        &self.key[USER_KEY_LEN..]
    }

    pub fn to_event(self) -> Event {
        Event {
            seq: self.seq,
            kind: self.kind,
            key: self.key.to_string(),
            ts_ms: self.ts_ms,
            hash: self.hash.copied(),
            size: self.size,
            origin: self.origin.map(|(hs, hs_seq)| Origin {
                hs: hs.to_string(),
                hs_seq: hs_seq.to_string(),
            }),
        }
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
    decode_ref(seq, bytes).map(EventRef::to_event)
}

/// The event a record holds, borrowed from the record's bytes.
///
/// Replay decodes every record it passes, so this reads format 2 by hand rather than through
/// serde: postcard's encoding of `RecordV2` is a varint variant index, then each field in order
/// (strings as a varint length and UTF-8 bytes, integers as LEB128 varints, an option as a 0 or
/// 1 byte before its value, an array as its bytes). A test checks it against postcard itself.
pub(crate) fn decode_ref(seq: u64, bytes: &[u8]) -> Result<EventRef<'_>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event {seq}: {what}"));
    let rest = match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => rest,
        Some((format, _)) => return Err(corrupt(&format!("unknown record format {format}"))),
        None => return Err(corrupt("empty record")),
    };
    let mut reader = Reader { rest };
    let bad = |_| corrupt("the record does not decode");
    let kind = match reader.varint().map_err(bad)? {
        0 => EventKind::Put,
        1 => EventKind::Del,
        _ => return Err(corrupt("the record does not decode")),
    };
    let key = reader.str().map_err(bad)?;
    let ts_ms = reader.varint().map_err(bad)?;
    let hash = match reader.flag().map_err(bad)? {
        false => None,
        true => Some(reader.array().map_err(bad)?),
    };
    let size = match reader.flag().map_err(bad)? {
        false => None,
        true => Some(reader.varint().map_err(bad)?),
    };
    let origin = match reader.flag().map_err(bad)? {
        false => None,
        true => Some((reader.str().map_err(bad)?, reader.str().map_err(bad)?)),
    };
    if key.len() < USER_KEY_LEN || !key.is_char_boundary(USER_KEY_LEN) {
        return Err(corrupt(&format!(
            "the key {key:?} does not start with a user key"
        )));
    }
    Ok(EventRef {
        seq,
        kind,
        key,
        ts_ms,
        hash,
        size,
        origin,
    })
}

/// Reads postcard's encoding of the few types a record holds.
struct Reader<'a> {
    rest: &'a [u8],
}

/// A record that ends early or holds a value postcard would refuse.
struct Malformed;

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < len {
            return Err(Malformed);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// An unsigned LEB128 varint of at most 64 bits (postcard's `u64`, `usize` and variant
    /// indexes; a variant index is a `u32`, but only 0 and 1 are valid there anyway).
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for index in 0..10 {
            let (&byte, rest) = self.rest.split_first().ok_or(Malformed)?;
            self.rest = rest;
            let bits = u64::from(byte & 0x7f);
            if index == 9 && byte > 1 {
                return Err(Malformed);
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Malformed),
        }
    }

    fn str(&mut self) -> Result<&'a str, Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| Malformed)
    }

    fn array(&mut self) -> Result<&'a [u8; 32], Malformed> {
        self.take(32)?.try_into().map_err(|_| Malformed)
    }
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

    fn arb_event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        (
            any::<u64>(),
            any::<bool>(),
            "\\PC{0,300}",
            any::<u64>(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(("\\PC{0,60}", "\\PC{0,20}")),
        )
            .prop_map(|(seq, put, path, ts_ms, hash, size, origin)| Event {
                seq,
                kind: if put { EventKind::Put } else { EventKind::Del },
                key: format!("{ALICE}{path}"),
                ts_ms,
                hash,
                size,
                origin: origin.map(|(hs, hs_seq)| Origin { hs, hs_seq }),
            })
    }

    proptest::proptest! {
        /// The hand-written reader agrees with postcard on every record, and refuses every
        /// truncated one.
        #[test]
        fn the_reader_agrees_with_postcard(event in arb_event()) {
            let bytes = encode(&event).unwrap();
            let theirs: RecordV2 = postcard::from_bytes(&bytes[1..]).unwrap();
            let ours = decode_ref(event.seq, &bytes).unwrap();
            proptest::prop_assert_eq!(ours.to_event(), event.clone());
            proptest::prop_assert_eq!(ours.key, theirs.key);
            proptest::prop_assert_eq!(ours.ts_ms, theirs.ts_ms);
            for cut in 1..bytes.len() {
                proptest::prop_assert!(decode_ref(event.seq, &bytes[..cut]).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let mut record = vec![FORMAT_V2];
            record.extend_from_slice(&bytes);
            let ours = decode_ref(1, &record).map(EventRef::to_event).ok();
            if let Some(event) = ours {
                // Whatever the reader accepts, postcard reads the same way.
                let theirs: RecordV2 = postcard::from_bytes(&bytes).unwrap();
                proptest::prop_assert_eq!(event.key.as_str(), theirs.key);
                proptest::prop_assert_eq!(event.hash, theirs.hash);
                proptest::prop_assert_eq!(event.size, theirs.size);
            }
        }
    }
}
