//! SSE frames: the bytes of one event on the wire, in Hearth's format and in Pubky's.
//!
//! A frame depends only on the event, never on who reads it, so the hub encodes each event at
//! most once per format and every matching subscriber writes the same shared bytes; replay
//! encodes straight from the stored records into one buffer per batch. Encoding is by hand: no
//! JSON library per event, and careful string escaping, because paths may hold `"`, `\` and
//! any non-control character. Nearly no key needs escaping, so each one is checked first, a
//! chunk of bytes at a time, and copied whole when clean.

use bytes::{BufMut, Bytes, BytesMut};

use super::event::EventRef;
use super::{Event, EventKind};
use crate::ids::{encode_into, ID_LEN};

/// Which frames a stream writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hearth's `/firehose` (spec section 4).
    Native,
    /// Pubky's `/events-stream` (spec section 5).
    Pubky,
}

impl Format {
    /// Append the frame of `event` to `out`.
    pub(crate) fn encode_into(self, out: &mut BytesMut, event: EventRef<'_>) {
        match self {
            Format::Native => native_into(out, event),
            Format::Pubky => pubky_into(out, event),
        }
    }
}

/// The first bytes of every stream: how long a browser's `EventSource` waits to reconnect.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// A comment line: keeps idle connections (and the proxies on their way) open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Where a frame is written: a caller's growing buffer, or a fixed one on the stack.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

/// A frame is first written into a buffer on the stack and then copied once into the batch:
/// one capacity check and one copy instead of one per field. A frame too big for it (a very
/// long path) is written again straight into the batch.
struct Stack {
    buf: [u8; STACK_FRAME],
    len: usize,
    overflow: bool,
}

const STACK_FRAME: usize = 512;

impl Sink for Stack {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflow = true,
        }
    }
}

impl Stack {
    fn new() -> Stack {
        Stack {
            buf: [0; STACK_FRAME],
            len: 0,
            overflow: false,
        }
    }

    /// Append what was written to `out`; false if it did not fit (nothing appended).
    fn finish(&self, out: &mut BytesMut) -> bool {
        if !self.overflow {
            out.put_slice(&self.buf[..self.len]);
        }
        !self.overflow
    }
}

/// Standard base64 (padded) of a BLAKE3 hash: 44 characters. By hand, for this one fixed
/// size: it is in every PUT frame.
fn put_hash<S: Sink>(out: &mut S, hash: &[u8; 32]) {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = [b'='; 44];
    for (group, chunk) in hash.chunks(3).enumerate() {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let at = group * 4;
        text[at] = TABLE[(n >> 18) as usize & 63];
        text[at + 1] = TABLE[(n >> 12) as usize & 63];
        if chunk.len() > 1 {
            text[at + 2] = TABLE[(n >> 6) as usize & 63];
        }
        if chunk.len() > 2 {
            text[at + 3] = TABLE[n as usize & 63];
        }
    }
    out.put(&text);
}

fn put_id<S: Sink>(out: &mut S, seq: u64) {
    let mut id = [0u8; ID_LEN];
    encode_into(seq, &mut id);
    out.put(&id);
}

/// Hearth's frame (spec section 4):
///
/// ```text
/// id: 0000000000011
/// event: PUT
/// data: {"seq":"0000000000011","user":"…","path":"…","uri":"pubky://…","hash":"…","size":123,"ts":…}
/// ```
///
/// A relayed event adds `"hs":"<z32>","hs_seq":"<id>"` after `ts`.
pub fn native(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    native_into(&mut out, event.as_ref());
    out.freeze()
}

/// Hearth's frame of `event`, appended to `out`.
pub(crate) fn native_into(out: &mut BytesMut, event: EventRef<'_>) {
    let clean = !needs_json_escape(event.key.as_bytes());
    let mut stack = Stack::new();
    write_native(&mut stack, event, clean);
    if !stack.finish(out) {
        write_native(out, event, clean);
    }
}

/// The two lines every frame opens with: `id: <id>` and `event: PUT|DEL`.
fn write_head<S: Sink>(out: &mut S, event: EventRef<'_>) {
    out.put(b"id: ");
    put_id(out, event.seq);
    out.put(b"\nevent: ");
    out.put(event.kind.as_str().as_bytes());
    out.put(b"\n");
}

fn write_native<S: Sink>(out: &mut S, event: EventRef<'_>, clean: bool) {
    write_head(out, event);
    out.put(b"data: {\"seq\":\"");
    put_id(out, event.seq);
    out.put(b"\",\"user\":\"");
    if clean {
        out.put(event.user().as_bytes());
        out.put(b"\",\"path\":\"");
        out.put(event.path().as_bytes());
        out.put(b"\",\"uri\":\"pubky://");
        out.put(event.key.as_bytes());
    } else {
        put_json_escaped(out, event.user());
        out.put(b"\",\"path\":\"");
        put_json_escaped(out, event.path());
        out.put(b"\",\"uri\":\"pubky://");
        put_json_escaped(out, event.key);
    }
    out.put(b"\"");
    if event.kind == EventKind::Put {
        // A PUT from a source that gave no hash (or size) has none to show.
        if let Some(hash) = event.hash {
            out.put(b",\"hash\":\"");
            // Base64 needs no escaping.
            put_hash(out, hash);
            out.put(b"\"");
        }
        if let Some(size) = event.size {
            out.put(b",\"size\":");
            put_decimal(out, size);
        }
    }
    out.put(b",\"ts\":");
    put_decimal(out, event.ts_ms);
    // A relayed event names where it was committed. At the end, after `ts`, so that the
    // frame of a local event (no origin) is byte for byte what it always was.
    if let Some((hs, hs_seq)) = event.origin {
        out.put(b",\"hs\":");
        put_json_string(out, hs);
        out.put(b",\"hs_seq\":");
        put_json_string(out, hs_seq);
    }
    out.put(b"}\n\n");
}

/// Pubky's `/events-stream` frame (spec section 5), with an `id:` line added so that a
/// browser's `EventSource` resumes by itself:
///
/// ```text
/// id: 0000000000011
/// event: PUT
/// data: pubky://<z32>/pub/…
/// data: cursor: 33
/// data: content_hash: <base64>
/// ```
pub fn pubky(event: &Event) -> Bytes {
    let mut out = BytesMut::new();
    pubky_into(&mut out, event.as_ref());
    out.freeze()
}

/// Pubky's frame of `event`, appended to `out`.
pub(crate) fn pubky_into(out: &mut BytesMut, event: EventRef<'_>) {
    let mut stack = Stack::new();
    write_pubky(&mut stack, event);
    if !stack.finish(out) {
        write_pubky(out, event);
    }
}

fn write_pubky<S: Sink>(out: &mut S, event: EventRef<'_>) {
    write_head(out, event);
    out.put(b"data: pubky://");
    put_line_safe(out, event.key);
    out.put(b"\ndata: cursor: ");
    put_decimal(out, event.seq);
    if let (EventKind::Put, Some(hash)) = (event.kind, event.hash) {
        out.put(b"\ndata: content_hash: ");
        put_hash(out, hash);
    }
    out.put(b"\n\n");
}

/// One line of Pubky's `/events/` feed: `PUT pubky://<z32><path>`.
pub(crate) fn feed_line_ref(out: &mut String, event: EventRef<'_>) {
    out.push_str(event.kind.as_str());
    out.push_str(" pubky://");
    let key = event.key;
    if !has_line_break(key.as_bytes()) {
        out.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
}

/// `0x01` in every byte of a word, and `0x80`.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether some byte of `word` is below `n` (`n` at most 128), exactly (a classic bit trick).
#[inline]
fn has_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// Whether some byte of `word` is `byte`.
#[inline]
fn has_byte(word: u64, byte: u8) -> u64 {
    has_below(word ^ (ONES * u64::from(byte)), 1)
}

/// The bytes JSON strings must escape (and DEL, which we escape too).
#[inline]
fn json_special(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\' || byte == 0x7f
}

/// Whether `bytes` holds a byte JSON must escape: eight at a time, in a word.
fn needs_json_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        found |= has_below(word, 0x20)
            | has_byte(word, b'"')
            | has_byte(word, b'\\')
            | has_byte(word, 0x7f);
    }
    found != 0 || chunks.remainder().iter().any(|&b| json_special(b))
}

/// Whether `bytes` holds a CR or an LF: eight at a time, in a word.
fn has_line_break(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        found |= has_byte(word, b'\r') | has_byte(word, b'\n');
    }
    found != 0 || chunks.remainder().iter().any(|&b| b == b'\r' || b == b'\n')
}

fn put_decimal<S: Sink>(out: &mut S, value: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut rest = value;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.put(&buf[at..]);
}

fn put_json_string<S: Sink>(out: &mut S, text: &str) {
    out.put(b"\"");
    put_json_escaped(out, text);
    out.put(b"\"");
}

/// JSON string escaping: `"` and `\` escaped, control characters as `\n`-style or `\u00XX`;
/// everything else (all other UTF-8) passes through unchanged. A clean string is one copy.
fn put_json_escaped<S: Sink>(out: &mut S, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    if !needs_json_escape(bytes) {
        out.put(bytes);
        return;
    }
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if !json_special(byte) {
            continue;
        }
        out.put(&bytes[start..at]);
        start = at + 1;
        match byte {
            b'"' => out.put(b"\\\""),
            b'\\' => out.put(b"\\\\"),
            b'\n' => out.put(b"\\n"),
            b'\r' => out.put(b"\\r"),
            b'\t' => out.put(b"\\t"),
            0x08 => out.put(b"\\b"),
            0x0c => out.put(b"\\f"),
            _ => out.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xf) as usize],
            ]),
        }
    }
    out.put(&bytes[start..]);
}

/// SSE ends a line at CR or LF; paths never hold them (control characters are refused), but a
/// frame must not break even if one did.
fn put_line_safe<S: Sink>(out: &mut S, text: &str) {
    let bytes = text.as_bytes();
    if !has_line_break(bytes) {
        out.put(bytes);
        return;
    }
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'\r' => b"%0D",
            b'\n' => b"%0A",
            _ => continue,
        };
        out.put(&bytes[start..at]);
        out.put(escape);
        start = at + 1;
    }
    out.put(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::event::Origin;
    use crate::log::hash_base64;
    use proptest::prelude::*;

    /// The escaping as the first version wrote it, byte by byte: the reference.
    fn escaped_slowly(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out
    }

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn put(seq: u64, path: &str) -> Event {
        Event {
            seq,
            kind: EventKind::Put,
            key: format!("{ALICE}{path}"),
            ts_ms: 1_763_812_345_678,
            hash: Some([7; 32]),
            size: Some(123),
            origin: None,
        }
    }

    fn del(seq: u64, path: &str) -> Event {
        Event {
            seq,
            kind: EventKind::Del,
            key: format!("{ALICE}{path}"),
            ts_ms: 5,
            hash: None,
            size: None,
            origin: None,
        }
    }

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).expect("frames are UTF-8")
    }

    #[test]
    fn native_put_is_the_spec_format() {
        let hash = hash_base64(&[7; 32]);
        assert_eq!(
            text(native(&put(33, "/pub/app/posts/1.json"))),
            format!(
                "id: 0000000000011\nevent: PUT\ndata: {{\"seq\":\"0000000000011\",\"user\":\"{ALICE}\",\
                 \"path\":\"/pub/app/posts/1.json\",\"uri\":\"pubky://{ALICE}/pub/app/posts/1.json\",\
                 \"hash\":\"{hash}\",\"size\":123,\"ts\":1763812345678}}\n\n"
            )
        );
    }

    #[test]
    fn native_del_has_no_hash_or_size() {
        assert_eq!(
            text(native(&del(1, "/pub/a"))),
            format!(
                "id: 0000000000001\nevent: DEL\ndata: {{\"seq\":\"0000000000001\",\"user\":\"{ALICE}\",\
                 \"path\":\"/pub/a\",\"uri\":\"pubky://{ALICE}/pub/a\",\"ts\":5}}\n\n"
            )
        );
    }

    #[test]
    fn native_put_without_hash_or_size_omits_them() {
        let bare = Event {
            hash: None,
            size: None,
            ..put(2, "/pub/a")
        };
        assert_eq!(
            text(native(&bare)),
            format!(
                "id: 0000000000002\nevent: PUT\ndata: {{\"seq\":\"0000000000002\",\"user\":\"{ALICE}\",\
                 \"path\":\"/pub/a\",\"uri\":\"pubky://{ALICE}/pub/a\",\"ts\":1763812345678}}\n\n"
            )
        );
        let sized = Event {
            hash: None,
            ..put(2, "/pub/a")
        };
        assert!(text(native(&sized)).contains("\"uri\":\"pubky://"));
        assert!(text(native(&sized)).contains("/pub/a\",\"size\":123,\"ts\":"));
        assert_eq!(
            text(pubky(&bare)),
            format!(
                "id: 0000000000002\nevent: PUT\ndata: pubky://{ALICE}/pub/a\ndata: cursor: 2\n\n"
            )
        );
    }

    #[test]
    fn native_relayed_events_name_their_origin_after_ts() {
        let hash = hash_base64(&[7; 32]);
        let relayed = Event {
            origin: Some(Origin {
                hs: ALICE.into(),
                hs_seq: "000000000001B".into(),
            }),
            ..put(33, "/pub/x")
        };
        assert_eq!(
            text(native(&relayed)),
            format!(
                "id: 0000000000011\nevent: PUT\ndata: {{\"seq\":\"0000000000011\",\"user\":\"{ALICE}\",\
                 \"path\":\"/pub/x\",\"uri\":\"pubky://{ALICE}/pub/x\",\
                 \"hash\":\"{hash}\",\"size\":123,\"ts\":1763812345678,\
                 \"hs\":\"{ALICE}\",\"hs_seq\":\"000000000001B\"}}\n\n"
            )
        );
        // The Pubky format has no place for them: its frame is the local one.
        let local = put(33, "/pub/x");
        assert_eq!(pubky(&relayed), pubky(&local));
        // Whatever a source calls its ids, the data line stays one line of JSON.
        let odd = Event {
            origin: Some(Origin {
                hs: ALICE.into(),
                hs_seq: "a\"b\nc".into(),
            }),
            ..put(1, "/pub/x")
        };
        let frame = text(native(&odd));
        let data = frame
            .lines()
            .nth(2)
            .expect("data line")
            .strip_prefix("data: ")
            .expect("data");
        let json: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
        assert_eq!(json["hs_seq"], "a\"b\nc");
        assert_eq!(json["hs"], ALICE);
    }

    #[test]
    fn pubky_frames() {
        let hash = hash_base64(&[7; 32]);
        assert_eq!(
            text(pubky(&put(42, "/pub/example.txt"))),
            format!(
                "id: 000000000001A\nevent: PUT\ndata: pubky://{ALICE}/pub/example.txt\n\
                 data: cursor: 42\ndata: content_hash: {hash}\n\n"
            )
        );
        assert_eq!(
            text(pubky(&del(100, "/pub/old.txt"))),
            format!("id: 0000000000034\nevent: DEL\ndata: pubky://{ALICE}/pub/old.txt\ndata: cursor: 100\n\n")
        );
        for path in ["/pub/a\nb", "/pub/abcdefgh\r", "/pub/\nabcdefghijkl"] {
            let frame = text(pubky(&del(1, path)));
            assert_eq!(frame.matches('\n').count(), 5, "{frame:?}");
            assert!(!frame.contains('\r'), "{frame:?}");
        }
        assert_eq!(
            text(pubky(&del(1, "/pub/a\nb"))),
            format!("id: 0000000000001\nevent: DEL\ndata: pubky://{ALICE}/pub/a%0Ab\ndata: cursor: 1\n\n")
        );
        let mut line = String::new();
        feed_line_ref(&mut line, del(1, "/pub/x").as_ref());
        assert_eq!(line, format!("DEL pubky://{ALICE}/pub/x"));
    }

    #[test]
    fn decimals() {
        for value in [0, 1, 9, 10, 123, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, value);
            assert_eq!(&out[..], value.to_string().as_bytes());
        }
    }

    proptest! {
        /// Whatever the path, the data line is one line of JSON that decodes to the event.
        #[test]
        fn native_data_is_json_of_the_event(path in "/pub/\\PC{0,40}", seq: u64, kind: bool) {
            let event = if kind { put(seq, &path) } else { del(seq, &path) };
            let frame = text(native(&event));
            let lines: Vec<&str> = frame.strip_suffix("\n\n").expect("ends a message").split('\n').collect();
            prop_assert_eq!(lines.len(), 3);
            let data = lines[2].strip_prefix("data: ").expect("data line");
            let json: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
            prop_assert_eq!(json["path"].as_str(), Some(path.as_str()));
            prop_assert_eq!(json["uri"].as_str().map(str::to_owned), Some(format!("pubky://{ALICE}{path}")));
            prop_assert_eq!(json["seq"].as_str().map(str::to_owned), Some(crate::ids::encode(seq)));
            prop_assert_eq!(json.get("size").is_some(), kind);
        }

        #[test]
        fn control_characters_stay_escaped(path in "/pub/[\\x00-\\x1f\"\\\\a]{0,20}") {
            let frame = text(native(&del(1, &path)));
            let data = frame.lines().nth(2).expect("data line").strip_prefix("data: ").expect("data");
            let json: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
            prop_assert_eq!(json["path"].as_str(), Some(path.as_str()));
        }

        /// The fast path and the escaper agree with the byte-by-byte reference.
        #[test]
        fn escaping_matches_the_reference(text in "[a-z/\"\\\\\\x00-\\x1f\\x7fé😀]{0,70}") {
            let mut out = BytesMut::new();
            put_json_escaped(&mut out, &text);
            prop_assert_eq!(std::str::from_utf8(&out).unwrap(), escaped_slowly(&text));
        }

        #[test]
        fn the_hash_is_base64(hash: [u8; 32]) {
            let mut out = BytesMut::new();
            put_hash(&mut out, &hash);
            prop_assert_eq!(std::str::from_utf8(&out).unwrap(), hash_base64(&hash));
        }

        /// Frames too long for the stack buffer come out the same way.
        #[test]
        fn long_frames(path in "/pub/[a-z\"é]{500,900}", kind: bool) {
            let event = if kind { put(7, &path) } else { del(7, &path) };
            let frame = text(native(&event));
            let data = frame.lines().nth(2).expect("data line").strip_prefix("data: ").expect("data");
            let json: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
            prop_assert_eq!(json["path"].as_str(), Some(path.as_str()));
            let pubky = text(pubky(&event));
            let line = format!("data: pubky://{ALICE}{path}\n");
            prop_assert!(pubky.contains(&line));
        }
    }
}
