//! A Server-Sent Events reader on a raw TCP socket.
//!
//! Thousands of subscribers must be cheap on the client too, and a stalled reader must really
//! stop reading (so the server sees back-pressure), so this speaks just enough HTTP/1.1 by hand:
//! one GET, the response head, then the body (chunked, sized or until close) cut into SSE
//! frames on blank lines. Frames are handed out as borrowed slices; nothing is allocated per
//! event.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::client::Target;
use super::LoadError;

/// The longest response head accepted.
const MAX_HEAD: usize = 16 << 10;
/// How much is read from the socket at a time.
const READ_SIZE: usize = 16 << 10;
/// A frame longer than this is a protocol error, not something to buffer forever.
const MAX_FRAME: usize = 1 << 20;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunk),
    Length(u64),
    UntilClose,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size line; the value so far, and whether an extension started.
    Size(u64, bool),
    /// Expecting `\n` after the size line's `\r`.
    SizeLf(u64),
    Data(u64),
    /// The `\r\n` after a chunk's data; how many of its two bytes are left.
    DataEnd(u8),
    /// After the last chunk: trailers until an empty line; whether the line so far is empty.
    Trailer(bool),
    Done,
}

/// One subscriber's connection, past the response head.
pub struct SseStream {
    stream: TcpStream,
    framing: Framing,
    /// Raw bytes read from the socket and not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet cut into frames.
    body: Vec<u8>,
    ended: bool,
}

/// One SSE frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    raw: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The values of every `name:` line, in order (one leading space dropped, as SSE says).
    pub fn fields(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.as_bytes();
        lines(self.raw).filter_map(move |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
            Some(rest.strip_prefix(b" ").unwrap_or(rest))
        })
    }

    /// The frame's length in bytes, without the blank line that ended it.
    pub fn size(&self) -> usize {
        self.raw.len()
    }

    pub fn field(&self, name: &'a str) -> Option<&'a [u8]> {
        self.fields(name).next()
    }

    /// An event carries data; a frame of only comments or `retry:` does not.
    pub fn is_event(&self) -> bool {
        self.field("data").is_some()
    }

    /// The path of the file the event is about, from either format: Hearth's JSON
    /// (`"path":"/pub/..."`) or Pubky's (`data: pubky://<z32>/pub/...`).
    pub fn path(&self) -> Option<&'a str> {
        for data in self.fields("data") {
            if let Some(uri) = data.strip_prefix(b"pubky://") {
                let slash = memchr::memchr(b'/', uri)?;
                return std::str::from_utf8(&uri[slash..]).ok();
            }
            if data.first() == Some(&b'{') {
                return json_string_field(data, b"\"path\":\"");
            }
        }
        None
    }
}

/// The value of a string field in a JSON object, found by its `"name":"` marker: cheap, and
/// enough for the paths this tool writes (no escapes). A value with an escape gives `None`.
fn json_string_field<'a>(json: &'a [u8], marker: &[u8]) -> Option<&'a str> {
    let at = find(json, marker)? + marker.len();
    let len = memchr::memchr(b'"', &json[at..])?;
    let value = &json[at..at + len];
    if value.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(value).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The lines of a frame, without their `\n` (found with memchr: this runs for every event).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(raw);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b'\n', text) {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

impl SseStream {
    /// Connect and send `GET path_and_query`; returns once the response head says 200.
    /// `recv_buffer` shrinks the socket's receive buffer (for the stalled-reader scenario).
    pub async fn open(
        target: &Target,
        path_and_query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
        timeout: Duration,
    ) -> Result<SseStream, LoadError> {
        tokio::time::timeout(
            timeout,
            Self::open_inner(target, path_and_query, headers, recv_buffer),
        )
        .await
        .map_err(|_| LoadError::Http(format!("opening {path_and_query} timed out")))?
    }

    async fn open_inner(
        target: &Target,
        path_and_query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<SseStream, LoadError> {
        let io = |what: &str, err: std::io::Error| LoadError::Http(format!("{what}: {err}"));
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|err| io("creating a socket", err))?;
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|err| io("setting SO_RCVBUF", err))?;
        }
        let mut stream = socket
            .connect(target.addr)
            .await
            .map_err(|err| io("connecting", err))?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            target.path(path_and_query),
            target.authority
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| io("sending the request", err))?;

        let mut raw = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end + 4;
            }
            if raw.len() > MAX_HEAD {
                return Err(LoadError::Http("the response head is too long".into()));
            }
            let mut chunk = [0u8; 1024];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|err| io("reading the response head", err))?;
            if n == 0 {
                return Err(LoadError::Http("the server closed before answering".into()));
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let status_line = head.lines().next().unwrap_or("");
        let status = status_line.split(' ').nth(1).unwrap_or("");
        let framing = framing_of(&head);
        if status != "200" {
            // Read a little of the body: the message says what was wrong.
            let mut reader = SseStream {
                stream,
                framing,
                raw: raw[head_end..].to_vec(),
                body: Vec::new(),
                ended: false,
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), reader.fill()).await;
            return Err(LoadError::Http(format!(
                "GET {path_and_query} answered {}: {}",
                status_line.trim(),
                String::from_utf8_lossy(&reader.body).trim()
            )));
        }
        raw.drain(..head_end);
        raw.shrink_to_fit();
        Ok(SseStream {
            stream,
            framing,
            raw,
            body: Vec::new(),
            ended: false,
        })
    }

    /// Give back the memory of the buffers: an idle connection holds only its socket.
    pub fn shrink(&mut self) {
        self.raw.shrink_to_fit();
        self.body.shrink_to_fit();
    }

    /// Read once from the socket (waiting for data) and decode what came. Returns false at
    /// the end of the body or when the server closed.
    async fn fill(&mut self) -> Result<bool, LoadError> {
        if self.ended {
            return Ok(false);
        }
        if self.raw.is_empty() {
            // Into spare capacity: no zeroing of a fresh buffer on every read.
            self.raw.reserve(READ_SIZE);
            let n = self
                .stream
                .read_buf(&mut self.raw)
                .await
                .map_err(|err| LoadError::Http(format!("reading the stream: {err}")))?;
            if n == 0 {
                self.ended = true;
                return Ok(false);
            }
        }
        let raw = std::mem::take(&mut self.raw);
        let used = self.decode(&raw)?;
        self.raw = raw;
        self.raw.drain(..used);
        if self.body.len() > MAX_FRAME + READ_SIZE {
            return Err(LoadError::Http(
                "an SSE frame is longer than 1 MiB".to_string(),
            ));
        }
        Ok(!self.ended)
    }

    /// Decode raw bytes into `body`; returns how many were consumed.
    fn decode(&mut self, raw: &[u8]) -> Result<usize, LoadError> {
        match &mut self.framing {
            Framing::UntilClose => {
                self.body.extend_from_slice(raw);
                Ok(raw.len())
            }
            Framing::Length(left) => {
                let take = (*left).min(raw.len() as u64) as usize;
                self.body.extend_from_slice(&raw[..take]);
                *left -= take as u64;
                if *left == 0 {
                    self.ended = true;
                }
                Ok(take)
            }
            Framing::Chunked(state) => {
                let (used, done) = decode_chunked(state, raw, &mut self.body)?;
                if done {
                    self.ended = true;
                }
                Ok(used)
            }
        }
    }

    /// Wait for more data and hand each complete frame to `visit`. Returns false once the
    /// stream has ended (after the last frames were visited).
    pub async fn next_frames(
        &mut self,
        mut visit: impl FnMut(Frame<'_>),
    ) -> Result<bool, LoadError> {
        let more = self.fill().await?;
        let mut start = 0;
        let mut scan = 0;
        // A frame ends at an empty line: "\n\n" (or "\n\r\n").
        while let Some(nl) = memchr::memchr(b'\n', &self.body[scan..]) {
            let line_start = scan;
            let line_end = scan + nl;
            scan = line_end + 1;
            let line = &self.body[line_start..line_end];
            if line.is_empty() || line == b"\r" {
                if line_start > start {
                    visit(Frame {
                        raw: &self.body[start..line_start],
                    });
                }
                start = scan;
            }
        }
        self.body.drain(..start);
        Ok(more)
    }
}

/// The body's framing, from the response head.
fn framing_of(head: &str) -> Framing {
    let mut length = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return Framing::Chunked(Chunk::Size(0, false));
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    match length {
        Some(len) => Framing::Length(len),
        None => Framing::UntilClose,
    }
}

/// Run the chunked decoder over `raw`, appending data to `out`. Returns the bytes consumed
/// and whether the body is complete.
fn decode_chunked(
    state: &mut Chunk,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(usize, bool), LoadError> {
    let bad = |what: &str| LoadError::Http(format!("bad chunked encoding: {what}"));
    let mut at = 0;
    while at < raw.len() {
        match *state {
            Chunk::Size(size, extension) => {
                let byte = raw[at];
                at += 1;
                match byte {
                    b'\r' => *state = Chunk::SizeLf(size),
                    b'\n' => *state = after_size(size),
                    _ if extension => {}
                    b';' | b' ' | b'\t' => *state = Chunk::Size(size, true),
                    _ => {
                        let digit = (byte as char)
                            .to_digit(16)
                            .ok_or_else(|| bad("a chunk size is not hex"))?;
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or_else(|| bad("a chunk size overflows"))?;
                        *state = Chunk::Size(size, false);
                    }
                }
            }
            Chunk::SizeLf(size) => {
                if raw[at] != b'\n' {
                    return Err(bad("a chunk size line ends without \\n"));
                }
                at += 1;
                *state = after_size(size);
            }
            Chunk::Data(left) => {
                let take = left.min((raw.len() - at) as u64) as usize;
                out.extend_from_slice(&raw[at..at + take]);
                at += take;
                *state = if left == take as u64 {
                    Chunk::DataEnd(2)
                } else {
                    Chunk::Data(left - take as u64)
                };
            }
            Chunk::DataEnd(left) => {
                let byte = raw[at];
                at += 1;
                *state = match (left, byte) {
                    (2, b'\r') => Chunk::DataEnd(1),
                    (_, b'\n') => Chunk::Size(0, false),
                    _ => return Err(bad("chunk data is not followed by \\r\\n")),
                };
            }
            Chunk::Trailer(empty) => {
                let byte = raw[at];
                at += 1;
                *state = match byte {
                    b'\n' if empty => Chunk::Done,
                    b'\n' => Chunk::Trailer(true),
                    b'\r' => Chunk::Trailer(empty),
                    _ => Chunk::Trailer(false),
                };
            }
            Chunk::Done => return Ok((at, true)),
        }
    }
    Ok((at, *state == Chunk::Done))
}

fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer(true)
    } else {
        Chunk::Data(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut state = Chunk::Size(0, false);
        let mut out = Vec::new();
        let mut done = false;
        for part in input.chunks(piece) {
            let (used, finished) = decode_chunked(&mut state, part, &mut out).expect("valid");
            assert!(used == part.len() || finished);
            done = finished;
        }
        (out, done)
    }

    #[test]
    fn decodes_chunked_bodies_in_any_pieces() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for piece in 1..input.len() {
            let (out, done) = decode_all(input, piece);
            assert_eq!(out, b"hello, world");
            assert!(done, "piece size {piece}");
        }
        let (out, done) = decode_all(b"a\r\n0123456789\r\n", 3);
        assert_eq!(out, b"0123456789");
        assert!(!done);
    }

    #[test]
    fn refuses_bad_chunks() {
        let mut state = Chunk::Size(0, false);
        let mut out = Vec::new();
        assert!(decode_chunked(&mut state, b"zz\r\n", &mut out).is_err());
        let mut state = Chunk::Size(0, false);
        assert!(decode_chunked(&mut state, b"1\r\nab\r\n", &mut out).is_err());
        let mut state = Chunk::Size(0, false);
        assert!(decode_chunked(&mut state, b"fffffffffffffffffff\r\n", &mut out).is_err());
    }

    #[test]
    fn reads_framing_from_the_head() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(framing_of(chunked), Framing::Chunked(Chunk::Size(0, false)));
        let sized = "HTTP/1.1 400 Bad\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(framing_of(sized), Framing::Length(12));
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
    }

    #[test]
    fn finds_paths_in_both_formats() {
        let hearth = Frame {
            raw: b"id: 0000000000011\nevent: PUT\ndata: {\"seq\":\"0000000000011\",\"user\":\"u\",\"path\":\"/pub/a/1\",\"size\":3}",
        };
        assert_eq!(hearth.path(), Some("/pub/a/1"));
        assert_eq!(hearth.field("id"), Some(&b"0000000000011"[..]));
        assert_eq!(hearth.field("event"), Some(&b"PUT"[..]));
        let pubky = Frame {
            raw: b"event: PUT\r\ndata: pubky://abc/pub/b/2\r\ndata: cursor: 12",
        };
        assert_eq!(pubky.path(), Some("/pub/b/2"));
        assert_eq!(pubky.fields("data").count(), 2);
        let comment = Frame {
            raw: b": keep-alive",
        };
        assert!(!comment.is_event());
        assert_eq!(comment.path(), None);
        let escaped = Frame {
            raw: b"data: {\"path\":\"/pub/\\\"q\"}",
        };
        assert_eq!(escaped.path(), None);
    }
}
