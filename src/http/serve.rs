//! The connection layer: accepting, TLS, deadlines, the connection limit, a bounded graceful
//! stop, and event streams served off hyper.
//!
//! Each listener runs one accept loop (`serve`). A connection takes a slot of a shared
//! semaphore; when none is free it is answered `503` at once and closed, so a flood of silent
//! clients never makes the others wait in the kernel's backlog. When `accept` itself fails for
//! want of descriptors, the loop sheds the waiting connections with a reserved descriptor and
//! backs off instead of spinning.
//!
//! The first request head of a connection is read here (`read_head`), so that a malformed one
//! is refused with a body (hyper's own 400 has none). On a listener that serves event streams,
//! `GET /firehose` and `GET /events-stream` are answered by the router and their frames written
//! straight to the socket (`serve_stream`), which keeps an idle stream at a few hundred bytes
//! instead of hyper's two 8 KiB buffers. Every other request goes to hyper, with the bytes
//! already read replayed in front of the socket, for the rest of the connection.
//!
//! Deadlines: a request head must arrive whole within `head` of its first byte (of the
//! connection, for the first one); a kept-alive connection may sit idle for `idle`; a request
//! body that sends nothing for `body_stall` is answered `408` and dropped (its spool file goes
//! with it), and a response the client reads nothing of for as long is abandoned with its
//! connection. Event streams are exempt: they are never idle, they send keep-alives, and a
//! subscriber that stops reading is served from the store when it resumes.
//!
//! Stopping: the loop stops accepting, idle connections close, requests in flight finish and
//! event streams end (the hub closes them); whatever is still open after `grace` is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// How connections are policed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A whole request head must arrive within this.
    pub head: Duration,
    /// A kept-alive connection with no request may wait this long.
    pub idle: Duration,
    /// A request body that sends nothing for this long is refused (408); a response the
    /// client reads nothing of for this long is dropped with its connection.
    pub body_stall: Duration,
    /// After a stop begins, how long connections get to finish.
    pub grace: Duration,
}

/// One listening socket and what it serves.
pub struct Listener {
    pub tcp: TcpListener,
    /// TLS (the server key as a raw public key), or plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub app: Router,
    /// Serve `/firehose` and `/events-stream` off hyper (the public routers).
    pub streams: bool,
    /// Connection slots, shared by the listeners that share a limit.
    pub slots: Arc<Semaphore>,
    /// For logs: "http", "tls", "admin".
    pub name: &'static str,
}

/// The largest request head read here before it is handed to hyper (which then refuses it).
const MAX_HEAD: usize = 64 << 10;
/// An unread request body this small is drained after an early answer, keeping the connection.
const DRAIN_LIMIT: u64 = 64 << 10;
/// How much an event stream writes in one go when frames are waiting.
const BATCH_BYTES: usize = 64 << 10;
const BATCH_FRAMES: usize = 256;
/// Bytes a client may send ahead while its event stream runs (its next request).
const MAX_PIPELINED: usize = 16 << 10;
/// Refusals waiting for their request at once, and how long each waits.
const REFUSALS: usize = 64;
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// After `accept` fails for want of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 56\r\n\
retry-after: 1\r\n\
connection: close\r\n\r\n\
the server is at its connection limit; try again shortly\n";

/// What every connection of a listener shares.
struct Shared {
    app: Router,
    tls: Option<TlsAcceptor>,
    streams: bool,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    http: http1::Builder,
}

/// Accept and serve connections until `shutdown` turns true, then stop within the grace.
pub async fn serve(listener: Listener, limits: Limits, shutdown: watch::Receiver<bool>) {
    let Listener {
        tcp,
        tls,
        app,
        streams,
        slots,
        name,
    } = listener;
    let mut http = http1::Builder::new();
    http.keep_alive(true).half_close(false);
    let grace = limits.grace;
    let shared = Arc::new(Shared {
        app,
        tls,
        streams,
        limits,
        shutdown: shutdown.clone(),
        http,
    });
    let mut reserve = Reserve::open();
    let mut starved = false;
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let mut connections = JoinSet::new();
    let stopping = signalled(shutdown);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = tcp.accept() => match accepted {
                Ok((socket, peer)) => {
                    if std::mem::take(&mut starved) {
                        tracing::info!(listener = name, "accept: descriptors are available again");
                    }
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            connections.spawn(connection(Arc::clone(&shared), socket, peer, permit));
                        }
                        Err(_) => refuse(socket, shared.tls.is_some(), &refusals),
                    }
                }
                Err(err) if out_of_descriptors(&err) => {
                    // Logged once per episode; the loop sheds and backs off every time.
                    if !std::mem::replace(&mut starved, true) {
                        tracing::warn!(listener = name, error = %err, "accept: out of descriptors; refusing new connections until some close");
                    }
                    reserve.shed(&tcp, shared.tls.is_some());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                // The connection died before it was accepted (ECONNABORTED and the like).
                Err(err) => tracing::debug!(listener = name, error = %err, "accept failed"),
            },
        }
    }
    drop(tcp);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            listener = name,
            open,
            "stopping: letting open connections finish"
        );
    }
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            () = &mut deadline => {
                tracing::info!(listener = name, left = connections.len(), "grace is over: closing what is left");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
}

async fn signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Over the limit: answer 503 and close. The answer waits (briefly, in a task of its own, at
/// most `REFUSALS` at once) for the request to arrive, since an HTTP client takes an answer
/// that comes before its request for a broken connection; past that many, or on TLS, the
/// connection is closed at once.
fn refuse(socket: TcpStream, tls: bool, refusals: &Arc<Semaphore>) {
    if tls {
        return;
    }
    match Arc::clone(refusals).try_acquire_owned() {
        Ok(slot) => {
            tokio::spawn(async move {
                // `peek` waits for data itself (readiness alone can be stale).
                let mut first = [0u8; 1];
                let _ = tokio::time::timeout(REFUSAL_WAIT, socket.peek(&mut first)).await;
                refuse_now(socket);
                drop(slot);
            });
        }
        Err(_) => refuse_now(socket),
    }
}

/// Write the 503 without waiting, and read away what the client sent, so that closing sends
/// a FIN after the answer rather than a reset that could destroy it.
fn refuse_now(socket: TcpStream) {
    let _ = socket.try_write(REFUSAL);
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        match socket.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// A descriptor kept in reserve: when `accept` fails for want of descriptors, it is given up
/// to accept and refuse the connections waiting in the backlog, then taken again.
struct Reserve(Option<std::fs::File>);

impl Reserve {
    fn open() -> Reserve {
        Reserve(std::fs::File::open("/dev/null").ok())
    }

    fn shed(&mut self, tcp: &TcpListener, tls: bool) {
        use futures_util::FutureExt;
        self.0 = None;
        for _ in 0..64 {
            match tcp.accept().now_or_never() {
                Some(Ok((socket, _))) if !tls => refuse_now(socket),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        *self = Reserve::open();
    }
}

/// One connection, from accept to close.
async fn connection(
    shared: Arc<Shared>,
    socket: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let accepted = Instant::now();
    match &shared.tls {
        None => serve_io(&shared, socket, peer, accepted).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout_at(accepted + shared.limits.head, acceptor.accept(socket));
            match handshake.await {
                Ok(Ok(tls)) => Box::pin(serve_io(&shared, tls, peer, accepted)).await,
                Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<IO>(shared: &Arc<Shared>, mut io: IO, peer: SocketAddr, accepted: Instant)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let head = read_head(
            &mut io,
            &mut buf,
            &shared.limits,
            first.then_some(accepted),
            &mut shutdown,
        )
        .await;
        first = false;
        match head {
            Head::Closed => return,
            Head::Malformed(reason) => {
                let body = format!("{reason}\n");
                let answer = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    io.write_all(answer.as_bytes()).await?;
                    io.shutdown().await
                })
                .await;
                return;
            }
            Head::Other => return Box::pin(serve_hyper(shared, io, peer, Bytes::from(buf))).await,
            // A listener without event streams (admin, metrics) answers it like any request.
            Head::Stream(..) if !shared.streams => {
                return Box::pin(serve_hyper(shared, io, peer, Bytes::from(buf))).await
            }
            Head::Stream(mut request, keep_alive) => {
                // Handlers see the client's address (rate limits keyed by it).
                request.extensions_mut().insert(ConnectInfo(peer));
                // The head was all there was: nothing of it is kept while the stream runs.
                drop(std::mem::take(&mut buf));
                let leftover = Box::pin(serve_stream(shared, &mut io, request, keep_alive)).await;
                match leftover {
                    Some(leftover) if !*shutdown.borrow() => buf = leftover,
                    _ => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                        return;
                    }
                }
            }
        }
    }
}

/// A request head read here.
enum Head {
    /// An event stream request, and whether the connection may be kept after it.
    Stream(Box<Request<axum::body::Body>>, bool),
    /// Anything else: hyper takes the connection, with the bytes read so far.
    Other,
    /// Not an HTTP request head we accept: answered here, because hyper's own 400 has no body.
    Malformed(String),
    /// The client left, sent nothing in time, or the server is stopping.
    Closed,
}

/// Read a request head into `buf` (which may hold bytes already). `accepted` is set for the
/// first request of a connection: its head deadline counts from the accept.
async fn read_head<IO>(
    io: &mut IO,
    buf: &mut Vec<u8>,
    limits: &Limits,
    accepted: Option<Instant>,
    shutdown: &mut watch::Receiver<bool>,
) -> Head
where
    IO: AsyncRead + Unpin,
{
    let mut deadline = match accepted {
        Some(at) => at + limits.head,
        None if buf.is_empty() => Instant::now() + limits.idle,
        None => Instant::now() + limits.head,
    };
    let mut started = accepted.is_some() || !buf.is_empty();
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Parsed::Partial => {}
                Parsed::Other => return Head::Other,
                Parsed::Malformed(err) => return Head::Malformed(err),
                Parsed::Stream(request, keep_alive) => return Head::Stream(request, keep_alive),
            }
            if buf.len() >= MAX_HEAD {
                return Head::Other;
            }
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(if buf.capacity() == 0 {
                1024
            } else {
                buf.capacity()
            });
        }
        let read = tokio::select! {
            read = io.read_buf(buf) => read,
            () = tokio::time::sleep_until(deadline) => return Head::Closed,
            _ = shutdown.wait_for(|stop| *stop), if buf.is_empty() => return Head::Closed,
        };
        match read {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) if !started => {
                started = true;
                deadline = Instant::now() + limits.head;
            }
            Ok(_) => {}
        }
    }
}

enum Parsed {
    Partial,
    Other,
    Malformed(String),
    Stream(Box<Request<axum::body::Body>>, bool),
}

/// Is this head an event stream request this layer serves? Only a complete `GET` of
/// `/firehose` or `/events-stream` without a body; every other whole head is hyper's. A whole
/// head is read before hyper gets the connection, so that a malformed one is refused here with
/// a body (hyper's own 400 has none).
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut headers);
    let length = match head.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // hyper allows more headers than this parser holds: its to judge.
        Err(httparse::Error::TooManyHeaders) => return Parsed::Other,
        Err(err) => return Parsed::Malformed(format!("the request is not HTTP/1.1: {err}")),
    };
    // Which of the two frames the body is a guess between this server and any proxy before
    // it (request smuggling): refuse rather than pick one, as RFC 9112 allows.
    let has = |name: &str| {
        head.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    if has("content-length") && has("transfer-encoding") {
        return Parsed::Malformed(
            "a request may not carry both Content-Length and Transfer-Encoding".into(),
        );
    }
    if !head
        .method
        .zip(head.path)
        .is_some_and(|(m, p)| is_stream(m, p))
    {
        return Parsed::Other;
    }
    // Bytes after the head (a body, a pipelined request): hyper's to sort out.
    if length != buf.len() {
        return Parsed::Other;
    }
    let version = match head.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder()
        .method(axum::http::Method::GET)
        .uri(head.path.unwrap_or("/"))
        .version(version);
    let mut keep_alive = version == Version::HTTP_11;
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") && h.value != b"0"
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Other;
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if value.contains("close") {
                keep_alive = false;
            } else if value.contains("keep-alive") && version == Version::HTTP_10 {
                keep_alive = true;
            }
        }
        builder = builder.header(h.name, h.value);
    }
    match builder.body(axum::body::Body::empty()) {
        Ok(request) => Parsed::Stream(Box::new(request), keep_alive),
        Err(_) => Parsed::Other,
    }
}

fn is_stream(method: &str, target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    method == "GET" && (path == "/firehose" || path == "/events-stream")
}

/// Answer one event stream request on `io`. Returns the bytes the client sent meanwhile when
/// the connection may carry another request, `None` when it must close.
async fn serve_stream<IO>(
    shared: &Arc<Shared>,
    io: &mut IO,
    request: Box<Request<axum::body::Body>>,
    keep_alive: bool,
) -> Option<Vec<u8>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let version = request.version();
    let mut app = shared.app.clone();
    let response = match app.call(*request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let is_stream = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        // An error (400, 404, 410...): small, whole, and the connection closes after it.
        let body = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let head = response_head(&parts, version, Some(body.len()), false);
        drop(parts);
        let _ = write_all_vectored(io, &mut [IoSlice::new(&head), IoSlice::new(&body)]).await;
        let _ = io.flush().await;
        return None;
    }
    let chunked = version == Version::HTTP_11;
    let keep_alive = keep_alive && chunked;
    let head = response_head(&parts, version, None, keep_alive);
    drop(parts);
    if write_all_vectored(io, &mut [IoSlice::new(&head)])
        .await
        .is_err()
    {
        return None;
    }
    drop(head);
    let mut body = body;
    let mut pending: Vec<u8> = Vec::new();
    let mut probe = [0u8; 32];
    loop {
        // Wait for a frame, and meanwhile notice a client that leaves.
        let first = tokio::select! {
            frame = body.frame() => frame,
            read = io.read(&mut probe), if pending.len() < MAX_PIPELINED => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    pending.extend_from_slice(&probe[..n]);
                    continue;
                }
            },
        };
        let mut frames: Vec<Bytes> = Vec::new();
        let mut size = 0;
        let mut ended = false;
        let mut next = first;
        loop {
            match next {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        size += data.len();
                        if !data.is_empty() {
                            frames.push(data);
                        }
                    }
                }
                Some(Err(_)) => return None,
                None => {
                    ended = true;
                    break;
                }
            }
            if size >= BATCH_BYTES || frames.len() >= BATCH_FRAMES {
                break;
            }
            // Take what is ready without waiting: one write for a burst of events.
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => next = frame,
                Poll::Pending => break,
            }
        }
        if write_frames(io, &frames, size, chunked, ended)
            .await
            .is_err()
        {
            return None;
        }
        if ended {
            return keep_alive.then_some(pending);
        }
    }
}

/// One batch of frames as one chunk (or raw, for HTTP/1.0), and the last chunk if `ended`.
async fn write_frames<IO>(
    io: &mut IO,
    frames: &[Bytes],
    size: usize,
    chunked: bool,
    ended: bool,
) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let size_line = format!("{size:x}\r\n");
    let mut slices = Vec::with_capacity(frames.len() + 3);
    if chunked && size > 0 {
        slices.push(IoSlice::new(size_line.as_bytes()));
    }
    slices.extend(frames.iter().map(|f| IoSlice::new(f)));
    if chunked && size > 0 {
        slices.push(IoSlice::new(b"\r\n"));
    }
    if chunked && ended {
        slices.push(IoSlice::new(b"0\r\n\r\n"));
    }
    write_all_vectored(io, &mut slices).await?;
    io.flush().await
}

async fn write_all_vectored<IO>(io: &mut IO, mut slices: &mut [IoSlice<'_>]) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Status line and headers. `length` for a whole body (which then closes the connection),
/// none for a stream (chunked on HTTP/1.1).
fn response_head(
    parts: &axum::http::response::Parts,
    version: Version,
    length: Option<usize>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let http = if version == Version::HTTP_11 {
        "HTTP/1.1"
    } else {
        "HTTP/1.0"
    };
    head.extend_from_slice(
        format!(
            "{http} {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes(),
    );
    match length {
        Some(length) => head.extend_from_slice(
            format!("content-length: {length}\r\nconnection: close\r\n").as_bytes(),
        ),
        None if version == Version::HTTP_11 => {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            if !keep_alive {
                head.extend_from_slice(b"connection: close\r\n");
            }
        }
        None => head.extend_from_slice(b"connection: close\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The rest of the connection, served by hyper: `replay` holds what was read already.
async fn serve_hyper<IO>(shared: &Arc<Shared>, io: IO, peer: SocketAddr, replay: Bytes)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let io = Watched::new(io, replay, Arc::clone(&phase), &shared.limits);
    let app = shared.app.clone();
    let stall = shared.limits.body_stall;
    let service = hyper::service::service_fn(move |request| {
        handle(app.clone(), Arc::clone(&phase), stall, peer, request)
    });
    let conn = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(err) = served {
                tracing::debug!(error = %err, "connection ended");
            }
            return;
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    // Stopping: finish the request in flight (if any), then close.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// How many requests of a connection began and ended: equal when it is between requests.
#[derive(Debug, Default)]
struct Phase {
    begun: AtomicU32,
    ended: AtomicU32,
}

impl Phase {
    fn idle(&self) -> Option<u32> {
        let ended = self.ended.load(Ordering::Acquire);
        (self.begun.load(Ordering::Acquire) == ended).then_some(ended)
    }
}

/// One request through the router, with its body policed and its end reported.
async fn handle(
    mut app: Router,
    phase: Arc<Phase>,
    stall: Duration,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    phase.begun.fetch_add(1, Ordering::AcqRel);
    let (mut parts, incoming) = request.into_parts();
    // Handlers see the client's address (rate limits keyed by it).
    parts.extensions.insert(ConnectInfo(peer));
    let (body, watch) = Guarded::new(incoming, stall);
    let request = Request::from_parts(parts, axum::body::Body::new(body));
    let response = match app.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = match watch {
        Some(watch) => settle(response, &watch, stall).await,
        None => response,
    };
    Ok(response.map(|body| Tracked {
        body,
        phase: Some(phase),
    }))
}

/// After the router answered: a stalled body becomes a 408; a body left unread is drained if
/// small, or the answer says `Connection: close`, so a keep-alive client is never surprised.
async fn settle(
    mut response: Response<axum::body::Body>,
    watch: &BodyWatch,
    stall: Duration,
) -> Response<axum::body::Body> {
    if watch.stalled.load(Ordering::Acquire) {
        let message = format!(
            "the request body stalled: nothing arrived for {} s\n",
            stall.as_secs()
        );
        let mut response = Response::new(axum::body::Body::from(message));
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let leftover = watch.leftover.lock().ok().and_then(|mut slot| slot.take());
    if let Some(mut body) = leftover {
        if !drain(&mut body, stall).await {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Read an unread body to its end, if it is small and keeps coming.
async fn drain(body: &mut Incoming, stall: Duration) -> bool {
    if body
        .size_hint()
        .upper()
        .is_none_or(|left| left > DRAIN_LIMIT)
        && body.size_hint().exact().is_some()
    {
        return false;
    }
    let mut drained = 0u64;
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                if drained > DRAIN_LIMIT {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// What a request body tells the connection after the router is done with it.
#[derive(Debug, Default)]
struct BodyWatch {
    /// The body, handed back when the router dropped it unread.
    leftover: Mutex<Option<Incoming>>,
    /// No bytes came for the stall deadline.
    stalled: AtomicBool,
}

/// A request body with a stall deadline, which gives itself back unread when dropped early.
struct Guarded {
    inner: Option<Incoming>,
    watch: Option<Arc<BodyWatch>>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    fn new(incoming: Incoming, stall: Duration) -> (Guarded, Option<Arc<BodyWatch>>) {
        let watch = (!incoming.is_end_stream()).then(Arc::<BodyWatch>::default);
        let body = Guarded {
            inner: Some(incoming),
            watch: watch.clone(),
            stall,
            timer: None,
        };
        (body, watch)
    }

    fn finished(&mut self) {
        self.inner = None;
        self.timer = None;
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.finished();
                Poll::Ready(Some(Err(io::Error::other(err))))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(watch) = &this.watch {
                    watch.stalled.store(true, Ordering::Release);
                }
                this.finished();
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body stalled",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let (Some(inner), Some(watch)) = (self.inner.take(), &self.watch) {
            if let Ok(mut slot) = watch.leftover.lock() {
                *slot = Some(inner);
            }
        }
    }
}

/// A response body that reports when it is done, so the connection's deadlines know it is
/// between requests again.
struct Tracked {
    body: axum::body::Body,
    phase: Option<Arc<Phase>>,
}

impl Tracked {
    fn done(&mut self) {
        if let Some(phase) = self.phase.take() {
            phase.ended.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.done();
    }
}

/// The socket under hyper: replays the bytes read before hyper took over, enforces the head
/// and idle deadlines while no request is in flight (failing the read, which closes the
/// connection), and fails a write that the client has let wait for `body_stall`.
struct Watched<IO> {
    io: IO,
    replay: Bytes,
    phase: Arc<Phase>,
    /// Requests ended when last seen; a change means a new idle period began.
    seen: u32,
    /// Bytes of the next head have arrived: the head deadline runs, not the idle one.
    in_head: bool,
    head: Duration,
    idle: Duration,
    /// When the current head or idle period runs out.
    deadline: Instant,
    /// The timer, armed at `armed`, never later than `deadline`. It is moved only when it
    /// fires early or a shorter deadline begins, not on every request: a busy keep-alive
    /// connection touches the timer wheel about once per head deadline.
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    /// How long a write may wait for the client to read, and the timer of the wait in
    /// progress (none while writes go through).
    write_stall: Duration,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> Watched<IO> {
    fn new(io: IO, replay: Bytes, phase: Arc<Phase>, limits: &Limits) -> Self {
        // The first head's deadline counts from the accept, close enough to now.
        let deadline = Instant::now() + limits.head;
        Watched {
            io,
            replay,
            phase,
            seen: 0,
            in_head: true,
            head: limits.head,
            idle: limits.idle,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            armed: deadline,
            write_stall: limits.body_stall,
            write_timer: None,
        }
    }

    /// What a write or flush came to: progress ends any wait; a wait that has lasted
    /// `write_stall` (the client reads nothing) fails the connection, which hyper then drops.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_timer = None;
            return poll;
        }
        let stall = self.write_stall;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response in time",
            ))),
        }
    }

    /// Between requests and nothing to read: has the deadline passed? If not, make sure the
    /// timer wakes the connection by then.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.armed > self.deadline {
                self.armed = self.deadline;
                self.timer.as_mut().reset(self.armed);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.armed >= self.deadline {
                return true;
            }
            // Fired early (the deadline moved on since it was armed): arm it again.
            self.armed = self.deadline;
            self.timer.as_mut().reset(self.armed);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let take = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(take));
            return Poll::Ready(Ok(()));
        }
        let idle = this.phase.idle();
        if let Some(ended) = idle {
            if ended != this.seen {
                this.seen = ended;
                this.in_head = false;
                this.deadline = Instant::now() + this.idle;
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if idle.is_some() && !this.in_head && buf.filled().len() > before {
                    this.in_head = true;
                    this.deadline = Instant::now() + this.head;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if idle.is_some() && this.expired(cx) => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    if this.in_head {
                        "the request head did not arrive in time"
                    } else {
                        "the connection was idle too long"
                    },
                )))
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.written(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The TLS of the TLS listener: the server key as an RFC 7250 raw public key (what the Pubky
/// SDK checks against the key it resolved), HTTP/1.1, no client certificate.
pub fn tls_acceptor(keypair: &pkarr::Keypair) -> TlsAcceptor {
    let mut config = keypair.to_rpk_rustls_server_config();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Raise the soft open-file limit to the hard one (each connection is a descriptor); returns
/// the soft limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read the struct passed; nothing else is touched.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 1024;
        }
        let soft = limit.rlim_cur;
        // An unlimited hard limit is still capped by the kernel's nr_open.
        let target = if limit.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            limit.rlim_max
        };
        if target > soft {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                tracing::info!(
                    soft,
                    hard = limit.rlim_max,
                    now = target,
                    "raised the open-file limit"
                );
                return target;
            }
        }
        tracing::info!(soft, hard = limit.rlim_max, "open-file limit");
        soft
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// Connections a server takes by default: its open-file limit less a reserve for LMDB, spool
/// files, refusals in progress, listeners and the runtime (a quarter, at least 128 and at most
/// 1,024 descriptors).
pub fn default_max_connections(open_files: u64) -> usize {
    let reserve = (open_files / 4).clamp(128, 1024);
    usize::try_from(open_files.saturating_sub(reserve).max(16)).unwrap_or(usize::MAX)
}
