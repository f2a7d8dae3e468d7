//! Version 3: the event log's second record format, and its per-user index.
//!
//! Format 1 stored each event as a bare postcard struct with the content's type; format 2
//! (see `log::event`) opens with a format byte, drops the content type (the file's metadata
//! keeps it), makes the hash and size optional and adds where a relayed event came from.
//! Every stored event is re-encoded, and the `by_user` index (`<user z32><seq BE>` -> ())
//! is built from the same pass, all in this migration's one transaction.

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Unit, U64};
use heed::RwTxn;
use serde::Deserialize;

use crate::log::event::{encode, Event, EventKind};
use crate::log::store::{names, user_key};
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 3,
    name: "event log v2: record format 2, by_user index",
    apply,
};

/// Events re-encoded per pass: bounds the memory a large log needs here.
const PASS: usize = 4096;

/// Format 1, as it was written (the sequence was the key, not a field).
#[derive(Deserialize)]
struct EventV1 {
    kind: KindV1,
    key: String,
    ts_ms: u64,
    content: Option<ContentV1>,
}

#[derive(Deserialize)]
enum KindV1 {
    Put,
    Del,
}

#[derive(Deserialize)]
struct ContentV1 {
    hash: [u8; 32],
    size: u64,
    #[allow(dead_code)]
    content_type: String,
}

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    let by_user = env.create_database::<Bytes, Unit>(txn, Some(names::BY_USER))?;
    let events = env
        .open_database::<U64<BigEndian>, Bytes>(txn, Some(names::EVENTS))?
        .ok_or_else(|| decoding("the store has no events table".into()))?;
    let mut start = 0;
    loop {
        let pass: Vec<(u64, Vec<u8>)> = events
            .range(txn, &(start..))?
            .take(PASS)
            .map(|entry| entry.map(|(seq, bytes)| (seq, bytes.to_vec())))
            .collect::<heed::Result<_>>()?;
        let Some(&(last, _)) = pass.last() else {
            return Ok(());
        };
        for (seq, bytes) in pass {
            let event = upgrade(seq, &bytes)?;
            let user = event.key.get(..crate::keys::USER_KEY_LEN).ok_or_else(|| {
                decoding(format!(
                    "event {seq}: the key {:?} has no user key",
                    event.key
                ))
            })?;
            by_user.put(txn, &user_key(user, seq), &())?;
            let record = encode(&event).map_err(|err| decoding(err.to_string()))?;
            events.put(txn, &seq, &record)?;
        }
        let Some(next) = last.checked_add(1) else {
            return Ok(());
        };
        start = next;
    }
}

/// A format 1 record as an event.
fn upgrade(seq: u64, bytes: &[u8]) -> heed::Result<Event> {
    let old: EventV1 = postcard::from_bytes(bytes)
        .map_err(|err| decoding(format!("event {seq} (format 1): {err}")))?;
    Ok(Event {
        seq,
        kind: match old.kind {
            KindV1::Put => EventKind::Put,
            KindV1::Del => EventKind::Del,
        },
        key: old.key,
        ts_ms: old.ts_ms,
        hash: old.content.as_ref().map(|content| content.hash),
        size: old.content.as_ref().map(|content| content.size),
        origin: None,
    })
}

fn decoding(message: String) -> heed::Error {
    heed::Error::Decoding(message.into())
}
