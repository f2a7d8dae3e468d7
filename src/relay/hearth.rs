//! Reading a Hearth homeserver or relay: its `/firehose`, resumed after our cursor with
//! `Last-Event-ID`.
//!
//! The stream is cut into messages as bytes arrive (`SseReader`: one scan for the blank line
//! that ends a message, never a rescan), and each message is checked into an `Incoming` or
//! counted as skipped. While one batch is in the writer the next is read; a batch goes to the
//! writer as soon as the previous one is committed and nothing more is already buffered, so
//! live events wait for no timer. A batch is full at `BATCH_EVENTS` events or `BATCH_BYTES`
//! of frames: reading then waits for the writer, and the source's TCP window fills.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;

use super::follow::{describe, Failure, Outcome, Session, REQUEST_TIMEOUT};
use super::ingest::{Incoming, Ingested};
use super::source::Endpoint;
use super::tables::order;
use super::State;
use crate::ids::{self, Id};
use crate::keys::{self, USER_KEY_LEN};
use crate::log::EventKind;
use crate::path::FilePath;
use crate::store::StoreError;

/// A batch is full at this many events...
const BATCH_EVENTS: usize = 1000;
/// ...or this many bytes of frames.
const BATCH_BYTES: usize = 256 << 10;
/// A message longer than this is not an event: the source is sending garbage.
const MAX_MESSAGE: usize = 1 << 20;
/// A stream silent this long (not even a keep-alive) is presumed dead and reopened.
const IDLE_LIMIT: Duration = Duration::from_secs(75);

/// Follow a Hearth source after `cursor` until it fails.
pub(crate) async fn follow(
    session: &mut Session<'_>,
    endpoint: &Endpoint,
    hs: &str,
    cursor: Option<String>,
) -> Outcome {
    let after = match cursor.as_deref() {
        None => 0,
        Some(text) => ids::decode(text).map_err(|err| {
            Failure::Fatal(format!(
                "the stored cursor {text:?} is not a Hearth id ({err}): was this source once a \
                 Pubky one? remove it with forget=true to start over"
            ))
        })?,
    };
    let newest = newest(session, endpoint).await;
    if let Some(newest) = newest.filter(|&newest| newest < after) {
        return Err(rewound(after, newest));
    }
    let response = session
        .context
        .client
        .get(endpoint.url("/firehose"))
        .header("last-event-id", Id(after).to_string())
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|err| {
            Failure::Retry(format!(
                "GET {}/firehose: {}",
                endpoint.base,
                describe(&err)
            ))
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body = body.trim();
        if status == reqwest::StatusCode::BAD_REQUEST && body.contains("ahead of the newest") {
            return Err(Failure::Retry(format!(
                "the source rewound: our cursor {} is ahead of its newest event (it says: \
                 {body}); the cursor is kept and retried; if its history was replaced, remove \
                 the source with forget=true",
                Id(after)
            )));
        }
        return Err(Failure::Retry(format!(
            "GET {}/firehose answered {status}: {body}",
            endpoint.base
        )));
    }
    session.set_state(State::Following);
    let mut reader = Reader {
        hs,
        position: after,
        newest: newest.unwrap_or(after).max(after),
        sse: SseReader::default(),
        keys: KeyCheck::default(),
        batch: Batch::default(),
    };
    session.status.lock().lag = Some(reader.newest - after);
    let mut body = response.bytes_stream();
    let mut inflight: Option<Pending> = None;
    let ended = loop {
        reader.drain()?;
        if inflight.is_none() && !reader.batch.is_empty() {
            let batch = reader.batch.take();
            let ingest = session.ingest(hs, batch.events, batch.skipped, batch.cursor.clone());
            let writer = session.context.writer.clone();
            let cursor = batch.cursor;
            inflight = Some(Box::pin(async move {
                writer.submit(ingest).await.map(|done| (done, cursor))
            }));
        }
        let reading = !reader.batch.is_full();
        tokio::select! {
            biased;
            done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                committed(session, &reader, done)?;
            }
            chunk = tokio::time::timeout(IDLE_LIMIT, body.next()), if reading => match chunk {
                Err(_) => break format!("the stream was silent for {} s", IDLE_LIMIT.as_secs()),
                Ok(None) => break "the source closed the stream".to_string(),
                Ok(Some(Err(err))) => break format!("reading the stream: {}", describe(&err)),
                Ok(Some(Ok(bytes))) => {
                    reader.sse.push(&bytes);
                    reader.drain()?;
                    // Take what has arrived already, without waiting, before the next batch.
                    while !reader.batch.is_full() {
                        match body.next().now_or_never() {
                            Some(Some(Ok(bytes))) => {
                                reader.sse.push(&bytes);
                                reader.drain()?;
                            }
                            _ => break,
                        }
                    }
                }
            },
        }
    };
    // Store what was read before the stream ended: the cursor moves with it.
    if let Some(pending) = inflight.take() {
        committed(session, &reader, pending.await)?;
    }
    reader.drain()?;
    if !reader.batch.is_empty() {
        let batch = reader.batch.take();
        session
            .commit(hs, batch.events, batch.skipped, batch.cursor)
            .await?;
    }
    Err(Failure::Retry(ended))
}

type Pending = Pin<Box<dyn Future<Output = Result<(Ingested, String), StoreError>> + Send>>;

fn committed(
    session: &mut Session<'_>,
    reader: &Reader<'_>,
    done: Result<(Ingested, String), StoreError>,
) -> Result<(), Failure> {
    // A batch that did not land: the stream is ahead of the stored cursor, so read again from
    // the stored one.
    let (done, cursor) =
        done.map_err(|err| Failure::Retry(format!("storing a batch failed: {err}")))?;
    let at = ids::decode(&cursor).unwrap_or(reader.position);
    session.committed(&done, cursor);
    session.status.lock().lag = Some(reader.newest.saturating_sub(at));
    Ok(())
}

fn rewound(after: u64, newest: u64) -> Failure {
    Failure::Retry(format!(
        "the source rewound: its newest event is {}, before our cursor {}; the cursor is kept \
         and retried; if its history was replaced, remove the source with forget=true",
        Id(newest),
        Id(after)
    ))
}

/// The source's newest id: a Hearth server refuses a resume position ahead of its newest
/// event with a 400 that names it (spec section 4). None if it does not say.
async fn newest(session: &Session<'_>, endpoint: &Endpoint) -> Option<u64> {
    let probe = Id(u64::MAX >> 4).to_string();
    let response = session
        .context
        .client
        .get(endpoint.url(&format!("/firehose?lastSeq={probe}&live=false")))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .ok()?;
    if response.status() != reqwest::StatusCode::BAD_REQUEST {
        return None;
    }
    let body = response.text().await.ok()?;
    named_id(&body, &probe)
}

/// The last 13-character id in `text` other than `probe`.
fn named_id(text: &str, probe: &str) -> Option<u64> {
    text.rsplit(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.len() == ids::ID_LEN && *word != probe)
        .find_map(|word| ids::decode(word).ok())
}

/// The state of reading one stream.
struct Reader<'a> {
    /// The source's key: the `hs` of events that name none.
    hs: &'a str,
    /// The id of the last message taken into a batch.
    position: u64,
    /// The newest id known at the source (at connect, or seen since).
    newest: u64,
    sse: SseReader,
    keys: KeyCheck,
    batch: Batch,
}

impl Reader<'_> {
    /// Move complete messages into the batch until it is full.
    fn drain(&mut self) -> Result<(), Failure> {
        while !self.batch.is_full() {
            let Some(message) = self.sse.next_message().map_err(Failure::Retry)? else {
                return Ok(());
            };
            self.take(&message);
        }
        Ok(())
    }

    fn take(&mut self, message: &[u8]) {
        let frame = match Frame::parse(message) {
            Some(frame) => frame,
            None => return,
        };
        let id = match frame.id.map(ids::decode) {
            Some(Ok(id)) if id > self.position => id,
            Some(Ok(id)) => {
                self.skip(
                    None,
                    &format!("id {} is not after {}", Id(id), Id(self.position)),
                );
                return;
            }
            Some(Err(err)) => return self.skip(None, &format!("bad id: {err}")),
            None => return self.skip(None, "an event without an id"),
        };
        self.position = id;
        self.newest = self.newest.max(id);
        self.batch.bytes += message.len();
        let id_text = Id(id).to_string();
        match frame.incoming(&id_text, &mut self.keys) {
            Ok(incoming) => {
                self.batch.events.push(incoming);
                self.batch.cursor = id_text;
            }
            Err(reason) => self.skip(Some(id_text), &reason),
        }
    }

    /// A message that is not an event we can store: counted, logged, passed over (the cursor
    /// moves past it when its id is good).
    fn skip(&mut self, id: Option<String>, reason: &str) {
        tracing::warn!(
            hs = self.hs,
            id = id.as_deref(),
            "skipped an event: {reason}"
        );
        self.batch.skipped += 1;
        if let Some(id) = id {
            self.batch.cursor = id;
        }
    }
}

/// Events read and not yet submitted.
#[derive(Default)]
struct Batch {
    events: Vec<Incoming>,
    skipped: u64,
    /// The id of the last message in the batch (empty until one is).
    cursor: String,
    bytes: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.cursor.is_empty()
    }

    fn is_full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES
    }

    fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}

/// Cuts an SSE byte stream into messages (blocks ending in a blank line). Lines end in `\n`
/// (a `\r` before it is dropped when the fields are read).
#[derive(Default)]
pub(crate) struct SseReader {
    buf: BytesMut,
    /// Bytes of `buf` already searched for the end of a message.
    scanned: usize,
}

impl SseReader {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, without the blank line that ends it.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, String> {
        let from = self.scanned;
        let mut end = None;
        for at in memchr::memchr_iter(b'\n', &self.buf[from..]) {
            let at = from + at;
            match &self.buf[at + 1..] {
                [b'\n', ..] => end = Some((at, 2)),
                [b'\r', b'\n', ..] => end = Some((at, 3)),
                _ => continue,
            }
            break;
        }
        match end {
            Some((at, blank)) => {
                let message = self.buf.split_to(at + blank).freeze();
                self.scanned = 0;
                Ok(Some(message.slice(..at)))
            }
            None if self.buf.len() > MAX_MESSAGE => Err(format!(
                "the source sent {} bytes without ending a message: not an event stream",
                self.buf.len()
            )),
            None => {
                // A line end in the last two bytes may yet be followed by a blank line.
                self.scanned = self.buf.len().saturating_sub(2);
                Ok(None)
            }
        }
    }
}

/// The fields of one message that matter here.
struct Frame<'a> {
    id: Option<&'a str>,
    event: Option<&'a [u8]>,
    data: Cow<'a, [u8]>,
}

impl<'a> Frame<'a> {
    /// The fields of an event message; None for a message that is not an event (a comment, a
    /// `retry:`).
    fn parse(message: &'a [u8]) -> Option<Frame<'a>> {
        let mut frame = Frame {
            id: None,
            event: None,
            data: Cow::Borrowed(&[]),
        };
        let mut has_data = false;
        for line in message.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(at) => {
                    let value = &line[at + 1..];
                    (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"id" => frame.id = std::str::from_utf8(value).ok().or(Some("")),
                b"event" => frame.event = Some(value),
                b"data" if !has_data => {
                    has_data = true;
                    frame.data = Cow::Borrowed(value);
                }
                b"data" => {
                    let data = frame.data.to_mut();
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                _ => {}
            }
        }
        (frame.event.is_some() || has_data || frame.id.is_some()).then_some(frame)
    }

    /// The event, checked; or why it cannot be stored.
    fn incoming(&self, id: &str, keys: &mut KeyCheck) -> Result<Incoming, String> {
        let kind = match self.event {
            Some(b"PUT") => EventKind::Put,
            Some(b"DEL") => EventKind::Del,
            Some(other) => {
                return Err(format!(
                    "event type {:?} is neither PUT nor DEL",
                    String::from_utf8_lossy(other)
                ))
            }
            None => return Err("a message with an id but no event type".into()),
        };
        let data: Data = serde_json::from_slice(&self.data)
            .map_err(|err| format!("data is not the event JSON: {err}"))?;
        keys.check(&data.user)?;
        check_path(&data.path)?;
        let hash = match (&data.hash, kind) {
            (Some(text), EventKind::Put) => Some(decode_hash(text)?),
            _ => None,
        };
        let size = if kind == EventKind::Put {
            data.size
        } else {
            None
        };
        let (hs, hs_seq) = match (data.hs, data.hs_seq) {
            (Some(hs), Some(hs_seq)) => {
                keys.check(&hs)?;
                (Some(hs.into_owned()), hs_seq.into_owned())
            }
            (None, None) => (None, id.to_string()),
            _ => return Err("an event with only one of hs and hs_seq".into()),
        };
        let order =
            order(&hs_seq).ok_or_else(|| format!("hs_seq {hs_seq:?} is not an event id"))?;
        let mut key = String::with_capacity(USER_KEY_LEN + data.path.len());
        key.push_str(&data.user);
        key.push_str(&data.path);
        Ok(Incoming {
            kind,
            key,
            ts_ms: data.ts,
            hash,
            size,
            hs,
            hs_seq,
            order,
        })
    }
}

/// The JSON of a Hearth event (spec section 4); other fields are ignored.
#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow, default)]
    hash: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(borrow, default)]
    hs: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    hs_seq: Option<Cow<'a, str>>,
}

fn decode_hash(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("hash {text:?} is not the base64 of 32 bytes"))
}

/// A stored path is a normalized file path under `/pub/`, as a homeserver stores it.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    match FilePath::parse(path).and_then(FilePath::into_file) {
        Ok(file) if file.as_str() == path => Ok(()),
        Ok(file) => Err(format!(
            "path {path:?} is not normalized (it would be {file})"
        )),
        Err(err) => Err(format!("path {path:?}: {err}")),
    }
}

/// Checks user keys, remembering the good ones: parsing a key checks that it is a point on
/// the curve, which costs far more than reading the rest of an event, and a stream names the
/// same users again and again.
#[derive(Default)]
pub(crate) struct KeyCheck {
    known: HashSet<Box<str>>,
}

impl KeyCheck {
    /// Keys remembered at most; then the memory starts over.
    const CAPACITY: usize = 1 << 16;

    pub(crate) fn check(&mut self, key: &str) -> Result<(), String> {
        if self.known.contains(key) {
            return Ok(());
        }
        keys::canonical(key).map_err(|err| format!("user {key:?}: {err}"))?;
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(key.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn messages(chunks: &[&[u8]]) -> Vec<String> {
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        for chunk in chunks {
            reader.push(chunk);
            while let Some(message) = reader.next_message().unwrap() {
                out.push(String::from_utf8(message.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn cuts_messages_across_chunks() {
        assert_eq!(
            messages(&[b"retry: 2000\n", b"\nid: 1\n", b"data: x\n\n: keep\n\n"]),
            vec!["retry: 2000", "id: 1\ndata: x", ": keep"]
        );
        assert_eq!(messages(&[b"a\r\n", b"\r\nb\n", b"\n"]), vec!["a\r", "b"]);
        let mut reader = SseReader::default();
        reader.push(&vec![b'x'; MAX_MESSAGE + 1]);
        assert!(reader.next_message().is_err());
    }

    fn event(data: &str) -> Result<Incoming, String> {
        let message = format!("id: 0000000000003\nevent: PUT\ndata: {data}");
        let frame = Frame::parse(message.as_bytes()).expect("an event");
        frame.incoming("0000000000003", &mut KeyCheck::default())
    }

    #[test]
    fn reads_events_and_refuses_garbage() {
        let hash = crate::log::hash_base64(&[7; 32]);
        let good = event(&format!(
            r#"{{"seq":"0000000000003","user":"{ALICE}","path":"/pub/a\"b","hash":"{hash}","size":5,"ts":9,"x":[1]}}"#
        ))
        .unwrap();
        assert_eq!(good.key, format!("{ALICE}/pub/a\"b"));
        assert_eq!(
            (good.hash, good.size, good.ts_ms),
            (Some([7; 32]), Some(5), Some(9))
        );
        assert_eq!((good.hs, good.hs_seq.as_str()), (None, "0000000000003"));
        let relayed = event(&format!(
            r#"{{"user":"{ALICE}","path":"/pub/a","hs":"{ALICE}","hs_seq":"42"}}"#
        ))
        .unwrap();
        assert_eq!(
            (relayed.hs.as_deref(), relayed.hs_seq.as_str()),
            (Some(ALICE), "42")
        );
        for bad in [
            "not json".to_string(),
            format!(r#"{{"user":"{ALICE}"}}"#),
            format!(r#"{{"user":"x{}","path":"/pub/a"}}"#, &ALICE[1..]),
            format!(r#"{{"user":"{ALICE}","path":"/priv/a"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a/../b"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","hash":"nope"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","hs":"{ALICE}"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","hs":"{ALICE}","hs_seq":"x"}}"#),
        ] {
            assert!(event(&bad).is_err(), "{bad}");
        }
        assert!(Frame::parse(b"retry: 5").is_none());
        assert!(Frame::parse(b": comment").is_none());
    }

    #[test]
    fn finds_the_newest_id_in_a_refusal() {
        let probe = Id(u64::MAX >> 4).to_string();
        let body = format!("event id {probe} is ahead of the newest event, 000000000001B\n");
        assert_eq!(named_id(&body, &probe), Some(43));
        assert_eq!(named_id("nothing here", &probe), None);
    }
}
