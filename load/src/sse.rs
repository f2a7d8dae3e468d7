//! A Server-Sent Events reader over the tool's one HTTP client (hyper's HTTP/1.1 client
//! connection, as `client::Conn` uses for every other request).
//!
//! Thousands of subscribers must be cheap on the client too, and a stalled reader must really
//! stop reading (so the server sees back-pressure): each stream is one connection whose body
//! hyper reads only when asked, cut into SSE frames on blank lines. Frames are handed out as
//! borrowed slices; nothing is allocated per event.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, HOST};
use hyper::{Method, Request};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::client::{connect_socket, Target};
use super::LoadError;

/// A frame longer than this is a protocol error, not something to buffer forever.
const MAX_FRAME: usize = 1 << 20;
/// How much of the body one read takes from what has already arrived.
const READ_AHEAD: usize = 64 << 10;

/// The connection of a stream, driven by the stream's own reads (not a task of its own): a
/// body chunk goes from the socket to the frames without a hand-over between tasks.
type Connection =
    Pin<Box<hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

/// One subscriber's connection, past the response head.
pub struct SseStream {
    /// Kept for the connection's life (dropping it may close the connection).
    _sender: SendRequest<Empty<Bytes>>,
    connection: Connection,
    /// The connection future finished (the server closed).
    closed: bool,
    body: Incoming,
    /// Body bytes not yet cut into frames.
    buf: Vec<u8>,
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
        let io = connect_socket(target, recv_buffer).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|err| LoadError::Http(format!("HTTP handshake: {err}")))?;
        let mut connection: Connection = Box::pin(connection);
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(target.path(path_and_query))
            .header(HOST, target.authority.as_str())
            .header(ACCEPT, "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        // The connection is driven here, beside the request, until the response head is in.
        let sent = sender.send_request(request);
        tokio::pin!(sent);
        let response = tokio::select! {
            // An answer that came with the connection's close is still the answer.
            biased;
            response = &mut sent => response,
            _ = &mut connection => {
                return Err(LoadError::Http(format!(
                    "GET {path_and_query}: the server closed before answering"
                )))
            }
        }
        .map_err(|err| LoadError::Http(format!("GET {path_and_query}: {err}")))?;
        let status = response.status();
        if !status.is_success() {
            // Read a little of the body: the message says what was wrong.
            let read = Limited::new(response.into_body(), 64 << 10).collect();
            let body = tokio::time::timeout(Duration::from_millis(500), async {
                tokio::select! {
                    body = read => body.ok().map(|body| body.to_bytes()),
                    _ = &mut connection => None,
                }
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            return Err(LoadError::Http(format!(
                "GET {path_and_query} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(SseStream {
            _sender: sender,
            connection,
            closed: false,
            body: response.into_body(),
            buf: Vec::new(),
            ended: false,
        })
    }

    /// Give back the memory of the buffer: an idle connection holds only its connection.
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Wait for more of the body. Returns false at its end (or when the server closed).
    async fn fill(&mut self) -> Result<bool, LoadError> {
        if self.ended {
            return Ok(false);
        }
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Drive the connection and take the body chunks it has, up to `READ_AHEAD` bytes, all in
    /// this task; ready once something came (or the body ended).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, LoadError>> {
        let mut got = false;
        loop {
            if !self.closed && self.connection.as_mut().poll(cx).is_ready() {
                self.closed = true;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry no data.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        got = true;
                        if self.buf.len() >= READ_AHEAD {
                            return Poll::Ready(Ok(true));
                        }
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(Err(LoadError::Http(format!("reading the stream: {err}"))));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(Ok(false));
                }
                Poll::Pending if got => return Poll::Ready(Ok(true)),
                Poll::Pending if self.closed => {
                    self.ended = true;
                    return Poll::Ready(Ok(false));
                }
                Poll::Pending => return Poll::Pending,
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
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[scan..]) {
            let line_start = scan;
            let line_end = scan + nl;
            scan = line_end + 1;
            let line = &self.buf[line_start..line_end];
            if line.is_empty() || line == b"\r" {
                if line_start > start {
                    visit(Frame {
                        raw: &self.buf[start..line_start],
                    });
                }
                start = scan;
            }
        }
        self.buf.drain(..start);
        // What is left is one incomplete frame.
        if self.buf.len() > MAX_FRAME {
            return Err(LoadError::Http(
                "an SSE frame is longer than 1 MiB".to_string(),
            ));
        }
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
