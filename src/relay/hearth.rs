//! Reading a Hearth homeserver or relay: its `/firehose`, resumed after our cursor with
//! `Last-Event-ID`.
//!
//! The stream is cut into messages as bytes arrive (`SseReader`: one scan for the blank line
//! that ends a message, never a rescan), and each message is checked into an `Incoming` or
//! counted as skipped. While a batch is in the writer the next is read; a batch goes to the
//! writer as soon as the previous one is committed and nothing more is already buffered, so
//! live events wait for no timer. A batch is full at `BATCH_EVENTS` events or `BATCH_BYTES`
//! of frames; full batches may queue behind it, up to `PIPELINE`, so that a source catching up
//! puts several into each group commit (one fsync); then reading waits for the writer, and
//! the source's TCP window fills.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;

use super::follow::{describe, Failure, Outcome, Session, REQUEST_TIMEOUT};
use super::ingest::{Incoming, IngestError, Ingested};
use super::source::Endpoint;
use super::tables::order;
use super::State;
use crate::ids::{self, Id};
use crate::keys::{self, USER_KEY_LEN};
use crate::log::EventKind;
use crate::path::FilePath;

/// A batch is full at this many events...
const BATCH_EVENTS: usize = 1000;
/// Batches of one source in the writer's queue at most.
const PIPELINE: usize = 4;
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
        sse: SseReader::default(),
        taker: Taker {
            hs,
            position: after,
            newest: newest.unwrap_or(after).max(after),
            keys: KeyCheck::default(),
        },
        batch: Batch::default(),
    };
    session.status.lock().lag = Some(reader.taker.newest - after);
    let mut body = response.bytes_stream();
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    // The cursor after the last batch handed to the writer: the next batch follows it.
    let mut submitted = cursor;
    let ended = loop {
        reader.drain()?;
        // The first batch goes at once; more queue behind it only when full, so that a
        // catching-up source fills the writer's next group commit with whole batches.
        let room = inflight.is_empty() || (inflight.len() < PIPELINE && reader.batch.is_full());
        if room && !reader.batch.is_empty() {
            let batch = reader.batch.take();
            let cursor = batch.cursor().or_else(|| submitted.clone());
            let follows = std::mem::replace(&mut submitted, cursor.clone());
            let ingest = session.ingest(hs, batch.events, batch.skipped, follows, cursor.clone());
            let writer = session.context.writer.clone();
            inflight.push_back(Box::pin(async move {
                writer.submit(ingest).await.map(|done| (done, cursor))
            }));
            continue;
        }
        let reading = !reader.batch.is_full();
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => {
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
    while let Some(done) = inflight.next().await {
        committed(session, &reader, done)?;
    }
    reader.drain()?;
    if !reader.batch.is_empty() {
        let batch = reader.batch.take();
        let cursor = batch.cursor().or_else(|| submitted.clone());
        session
            .commit(hs, batch.events, batch.skipped, submitted, cursor)
            .await?;
    }
    Err(Failure::Retry(ended))
}

type Pending =
    Pin<Box<dyn Future<Output = Result<(Ingested, Option<String>), IngestError>> + Send>>;

fn committed(
    session: &mut Session<'_>,
    reader: &Reader<'_>,
    done: Result<(Ingested, Option<String>), IngestError>,
) -> Result<(), Failure> {
    // A batch that did not land (and the ones queued behind it, which no longer follow the
    // stored cursor): the stream is ahead of the stored cursor, so read again from there.
    let (done, cursor) =
        done.map_err(|err| Failure::Retry(format!("storing a batch failed: {err}")))?;
    let at = cursor
        .as_deref()
        .and_then(|cursor| ids::decode(cursor).ok())
        .unwrap_or(reader.taker.position);
    session.committed(&done, cursor);
    session.status.lock().lag = Some(reader.taker.newest.saturating_sub(at));
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
    sse: SseReader,
    taker: Taker<'a>,
    batch: Batch,
}

impl Reader<'_> {
    /// Move complete messages into the batch until it is full.
    fn drain(&mut self) -> Result<(), Failure> {
        while !self.batch.is_full() {
            let Some((end, consumed)) = self.sse.next_message().map_err(Failure::Retry)? else {
                return Ok(());
            };
            self.taker.take(&self.sse.buf[..end], &mut self.batch);
            self.sse.consume(consumed);
        }
        Ok(())
    }
}

/// What reading messages into batches needs to know.
struct Taker<'a> {
    /// The source's key: the `hs` of events that name none.
    hs: &'a str,
    /// The id of the last message taken into a batch.
    position: u64,
    /// The newest id known at the source (at connect, or seen since).
    newest: u64,
    keys: KeyCheck,
}

impl Taker<'_> {
    fn take(&mut self, message: &[u8], batch: &mut Batch) {
        let Some(frame) = Frame::parse(message) else {
            return;
        };
        let (id, id_text) = match frame.id.map(|text| (ids::decode(text), text)) {
            Some((Ok(id), text)) if id > self.position => (id, text),
            Some((Ok(id), _)) => {
                let reason = format!("id {} is not after {}", Id(id), Id(self.position));
                return self.skip(batch, None, &reason);
            }
            Some((Err(err), _)) => return self.skip(batch, None, &format!("bad id: {err}")),
            None => return self.skip(batch, None, "an event without an id"),
        };
        self.position = id;
        self.newest = self.newest.max(id);
        batch.bytes += message.len();
        match frame.incoming(id_text, &mut self.keys) {
            Ok(incoming) => {
                batch.events.push(incoming);
                batch.last = Some(id);
            }
            Err(reason) => self.skip(batch, Some(id), &reason),
        }
    }

    /// A message that is not an event we can store: counted, logged, passed over (the cursor
    /// moves past it when its id is good).
    fn skip(&mut self, batch: &mut Batch, id: Option<u64>, reason: &str) {
        let shown = id.map(|id| Id(id).to_string());
        tracing::warn!(
            hs = self.hs,
            id = shown.as_deref(),
            "skipped an event: {reason}"
        );
        batch.skipped += 1;
        if id.is_some() {
            batch.last = id;
        }
    }
}

/// Events read and not yet submitted.
#[derive(Default)]
struct Batch {
    events: Vec<Incoming>,
    skipped: u64,
    /// The id of the last message in the batch.
    last: Option<u64>,
    bytes: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.last.is_none() && self.skipped == 0
    }

    fn is_full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES
    }

    fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// The batch's cursor as the source writes it; None if no message of it had an id.
    fn cursor(&self) -> Option<String> {
        self.last.map(|id| Id(id).to_string())
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

    /// Drop the first `n` bytes: a message read.
    pub(crate) fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.scanned = 0;
    }

    /// Where the next complete message ends (without the blank line that ends it) and how
    /// many bytes it takes with that line: `buf[..end]` is the message, `consume` drops it.
    pub(crate) fn next_message(&mut self) -> Result<Option<(usize, usize)>, String> {
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
            Some((at, blank)) => Ok(Some((at, at + blank))),
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
        let mut rest = message;
        while !rest.is_empty() {
            let line = match memchr::memchr(b'\n', rest) {
                Some(at) => {
                    let line = &rest[..at];
                    rest = &rest[at + 1..];
                    line
                }
                None => std::mem::take(&mut rest),
            };
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
        let data = match Data::read_plain(&self.data) {
            Some(data) => data,
            None => serde_json::from_slice(&self.data)
                .map_err(|err| format!("data is not the event JSON: {err}"))?,
        };
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
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
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

impl<'a> Data<'a> {
    /// The event's fields from JSON as Hearth writes it: one flat object whose values are
    /// strings without escapes, whole numbers or null. Anything else (an escape, a nested
    /// value, a duplicate or missing field, bad JSON) is None, and serde_json reads it
    /// instead: this is the same answer, at a third of the cost, for nearly every event.
    fn read_plain(json: &'a [u8]) -> Option<Data<'a>> {
        let text = std::str::from_utf8(json).ok()?;
        let bytes = text.as_bytes();
        let mut at = 0;
        let skip_space = |at: &mut usize| {
            while bytes
                .get(*at)
                .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                *at += 1;
            }
        };
        // A string without escapes or control characters, at `at` (its opening quote).
        let string = |at: &mut usize| -> Option<&'a str> {
            let start = *at + 1;
            let len = memchr::memchr2(b'"', b'\\', bytes.get(start..)?)?;
            let end = start + len;
            let value = &text[start..end];
            if bytes[end] != b'"' || value.bytes().any(|b| b < 0x20) {
                return None;
            }
            *at = end + 1;
            Some(value)
        };
        let mut data = Data::default();
        let (mut user, mut path) = (false, false);
        skip_space(&mut at);
        if bytes.get(at) != Some(&b'{') {
            return None;
        }
        at += 1;
        skip_space(&mut at);
        if bytes.get(at) == Some(&b'}') {
            return None;
        }
        loop {
            skip_space(&mut at);
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let key = string(&mut at)?;
            skip_space(&mut at);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at += 1;
            skip_space(&mut at);
            let value = match bytes.get(at)? {
                b'"' => Value::Text(string(&mut at)?),
                b'0'..=b'9' => {
                    let start = at;
                    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                        at += 1;
                    }
                    let digits = &text[start..at];
                    if matches!(bytes.get(at), Some(b'.' | b'e' | b'E'))
                        || (digits.len() > 1 && digits.starts_with('0'))
                    {
                        return None;
                    }
                    Value::Number(digits.parse().ok()?)
                }
                b'n' if bytes.get(at..at + 4) == Some(b"null") => {
                    at += 4;
                    Value::Null
                }
                _ => return None,
            };
            let seen = |slot: bool| (!slot).then_some(());
            match (key, value) {
                ("user", Value::Text(v)) => {
                    seen(user)?;
                    user = true;
                    data.user = Cow::Borrowed(v);
                }
                ("path", Value::Text(v)) => {
                    seen(path)?;
                    path = true;
                    data.path = Cow::Borrowed(v);
                }
                ("hash", v) => data.hash = Some(v.text(data.hash.is_some())?).flatten(),
                ("hs", v) => data.hs = Some(v.text(data.hs.is_some())?).flatten(),
                ("hs_seq", v) => data.hs_seq = Some(v.text(data.hs_seq.is_some())?).flatten(),
                ("size", v) => data.size = Some(v.number(data.size.is_some())?).flatten(),
                ("ts", v) => data.ts = Some(v.number(data.ts.is_some())?).flatten(),
                ("user" | "path", _) => return None,
                _ => {}
            }
            skip_space(&mut at);
            match bytes.get(at)? {
                b',' => at += 1,
                b'}' => break,
                _ => return None,
            }
        }
        at += 1;
        skip_space(&mut at);
        (at == bytes.len() && user && path).then_some(data)
    }
}

/// A value `Data::read_plain` understands.
enum Value<'a> {
    Text(&'a str),
    Number(u64),
    Null,
}

impl<'a> Value<'a> {
    /// For an optional string field: Some(None) for null; None (not plain) for a number or a
    /// field seen before (an optional field set to null and repeated is left to serde too).
    fn text(self, repeated: bool) -> Option<Option<Cow<'a, str>>> {
        match (self, repeated) {
            (_, true) | (Value::Number(_), _) => None,
            (Value::Text(v), _) => Some(Some(Cow::Borrowed(v))),
            (Value::Null, _) => Some(None),
        }
    }

    fn number(self, repeated: bool) -> Option<Option<u64>> {
        match (self, repeated) {
            (_, true) | (Value::Text(_), _) => None,
            (Value::Number(n), _) => Some(Some(n)),
            (Value::Null, _) => Some(None),
        }
    }
}

fn decode_hash(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    // Base64 of 32 bytes is 44 characters, which the decoder sizes at 33 bytes.
    let mut decoded = [0u8; 33];
    match base64::engine::general_purpose::STANDARD.decode_slice(text, &mut decoded) {
        Ok(32) => {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&decoded[..32]);
            Ok(hash)
        }
        _ => Err(format!("hash {text:?} is not the base64 of 32 bytes")),
    }
}

/// A stored path is a normalized file path under `/pub/`, as a homeserver stores it.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if FilePath::is_normalized_file(path) {
        return Ok(());
    }
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
            while let Some((end, consumed)) = reader.next_message().unwrap() {
                out.push(String::from_utf8(reader.buf[..end].to_vec()).unwrap());
                reader.consume(consumed);
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
    fn plain_json_reads_as_serde_reads_it() {
        fn serde(json: &str) -> Option<Data<'_>> {
            serde_json::from_str(json).ok()
        }
        for json in [
            format!(
                r#"{{"seq":"0000000000003","user":"{ALICE}","path":"/pub/a","uri":"pubky://x","hash":"h","size":5,"ts":9}}"#
            ),
            format!(r#" {{ "user" : "{ALICE}" , "path":"/pub/a", "hs":null, "x":0 }} "#),
            format!(r#"{{"path":"/pub/a","user":"{ALICE}","hs":"k","hs_seq":"42","size":null}}"#),
        ] {
            let plain = Data::read_plain(json.as_bytes());
            assert!(plain.is_some(), "{json}");
            assert_eq!(plain, serde(&json), "{json}");
        }
        // Left to serde: escapes, nesting, duplicates, fractions, missing fields, trailing bytes.
        for json in [
            format!(r#"{{"user":"{ALICE}","path":"/pub/a\"b"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","x":[1]}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","path":"/pub/b"}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","size":1.5}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","size":01}}"#),
            format!(r#"{{"user":"{ALICE}","size":1}}"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a"}} x"#),
            format!(r#"{{"user":"{ALICE}","path":"/pub/a","ts":"1"}}"#),
            "{}".to_string(),
            "[]".to_string(),
        ] {
            assert_eq!(Data::read_plain(json.as_bytes()), None, "{json}");
        }
    }

    proptest::proptest! {
        /// Whatever the event, the frame's data reads the same both ways (when plain).
        #[test]
        fn frames_read_the_same_both_ways(
            path in "/pub/\\PC{0,30}",
            hs_seq in proptest::option::of("[0-9A-Z\"\\\\]{1,13}"),
            put: bool,
            ts: u64,
        ) {
            let event = crate::log::Event {
                seq: 7,
                kind: if put { EventKind::Put } else { EventKind::Del },
                key: format!("{ALICE}{path}"),
                ts_ms: ts,
                hash: put.then_some([3; 32]),
                size: put.then_some(ts / 3),
                origin: hs_seq.map(|hs_seq| crate::log::Origin { hs: ALICE.into(), hs_seq }),
            };
            let frame = crate::log::frame::native(&event);
            let text = std::str::from_utf8(&frame).expect("UTF-8");
            let data = text.lines().nth(2).and_then(|l| l.strip_prefix("data: ")).expect("data");
            let via_serde = serde_json::from_str::<Data>(data).ok();
            proptest::prop_assert!(via_serde.is_some());
            if let Some(plain) = Data::read_plain(data.as_bytes()) {
                proptest::prop_assert_eq!(Some(plain), via_serde);
            }
        }
    }

    #[test]
    fn finds_the_newest_id_in_a_refusal() {
        let probe = Id(u64::MAX >> 4).to_string();
        let body = format!("event id {probe} is ahead of the newest event, 000000000001B\n");
        assert_eq!(named_id(&body, &probe), Some(43));
        assert_eq!(named_id("nothing here", &probe), None);
    }
}
