//! The connection layer against real servers on 127.0.0.1: the TLS listener (PubkyTLS),
//! deadlines, early refusals on keep-alive connections, the connection limit, the data
//! directory lock, and a bounded stop of the real binary.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A PubkyTLS connection that accepts exactly `z32`'s key (the relay's client config).
async fn tls_connect(addr: std::net::SocketAddr, z32: &str) -> Result<TlsStream, std::io::Error> {
    let key = pkarr::PublicKey::try_from(z32).expect("a server key");
    let config = hearth::pkarr::tls::client_config(&key).expect("a client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a name");
    connector.connect(name, tcp).await
}

/// GET `path` on an HTTP/1.1 connection: (status, body).
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, String) {
    let request = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tls_listener_serves_the_router_under_the_server_key() {
    let ts = TestServer::start_with(|c| c.tls_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let key = ts.server.public_key().to_string();
    let addr = ts.server.tls_addr().expect("a TLS listener");

    let stream = tls_connect(addr, &key)
        .await
        .expect("handshake with the server key as a raw public key");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    // One connection, several requests: the same router as the plain listener.
    let (status, body) = get(&mut sender, &key, "/").await;
    assert_eq!((status, body.trim()), (200, key.as_str()));
    let (status, body) = get(&mut sender, &key, "/info").await;
    assert_eq!(status, 200);
    assert!(body.contains("features"), "{body}");
    let (status, body) = get(
        &mut sender,
        &key,
        "/firehose?lastSeq=0000000000000&live=false",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("retry:"), "{body}");

    // Another key is refused: the client really checks what the server presents.
    let other = pubky_common::crypto::Keypair::random().public_key().z32();
    let refused = tls_connect(addr, &other).await;
    assert!(refused.is_err(), "a handshake under another key must fail");
    ts.server.shutdown();
    ts.server.stopped().await.expect("stops");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let ts = TestServer::start().await;
    let second = hearth::server::Server::start(ts.config.clone()).await;
    let err = second
        .err()
        .expect("a second server on the same directory must not start")
        .to_string();
    assert!(
        err.contains("in use") && err.contains(&format!("pid {}", std::process::id())),
        "the refusal names the holder: {err}"
    );
    // The first one is unharmed, and the directory is free again once it stops.
    let response = reqwest::get(ts.url("/")).await.expect("GET /");
    assert_eq!(response.status(), 200);
    let ts = ts.restart().await;
    assert_eq!(
        reqwest::get(ts.url("/")).await.expect("GET /").status(),
        200
    );
}

/// A raw HTTP/1.1 client on one socket: what a keep-alive client or an attacker sends,
/// byte for byte.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// A response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            stream: tokio::net::TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn fill(&mut self) -> usize {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One response (Content-Length or chunked body); None if the server closed first.
    async fn response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.fill().await == 0 {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().ok()?;
            while self.buf.len() < length {
                if self.fill().await == 0 {
                    return None;
                }
            }
            response.body = self.buf.drain(..length).collect();
        } else if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    if self.fill().await == 0 {
                        return None;
                    }
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&self.buf[..line_end]).trim(),
                    16,
                )
                .ok()?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    if self.fill().await == 0 {
                        return None;
                    }
                }
                response
                    .body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        }
        Some(response)
    }

    /// Wait until the server closes the connection (EOF or reset), reading and dropping
    /// whatever it sends; false if it is still open after `within`.
    async fn closed_within(&mut self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, async {
            while self.fill().await > 0 {
                self.buf.clear();
            }
        })
        .await
        .is_ok()
    }
}

/// The head of a raw PUT of `length` bytes to `path` for `user`, with their session or not.
fn put_head(user: &common::User, path: &str, length: usize, session: bool) -> Vec<u8> {
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\npubky-host: {}\r\nContent-Length: {length}\r\n",
        user.z32
    );
    if let (true, Some(cookie)) = (session, &user.cookie) {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

const GENEROUS: std::time::Duration = std::time::Duration::from_secs(10);

async fn short_deadlines() -> TestServer {
    TestServer::start_with(|c| {
        c.head_timeout_secs = 1;
        c.idle_timeout_secs = 1;
        c.body_stall_secs = 1;
        c.keepalive_secs = 1;
        c.max_body_bytes = 8 << 20;
    })
    .await
}

#[tokio::test]
async fn silent_trickling_and_idle_connections_are_closed() {
    let ts = short_deadlines().await;
    let addr = ts.server.addr();

    // Nothing at all.
    let mut silent = Raw::connect(addr).await;
    // A byte every 300 ms: each read is quick, the head never completes in time.
    let mut trickle = Raw::connect(addr).await;
    let trickling = tokio::spawn(async move {
        for byte in
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            use tokio::io::AsyncWriteExt;
            if trickle.stream.write_all(&[*byte]).await.is_err() {
                return trickle.closed_within(GENEROUS).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        trickle.closed_within(GENEROUS).await
    });
    // A kept-alive connection after one answered request.
    let mut idle = Raw::connect(addr).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answered = idle.response().await.expect("an answer");
    assert_eq!(answered.status, 200);
    assert!(!answered.closes(), "kept alive");

    assert!(
        silent.closed_within(GENEROUS).await,
        "a silent connection is closed"
    );
    assert!(
        idle.closed_within(GENEROUS).await,
        "an idle keep-alive connection is closed"
    );
    assert!(
        trickling.await.expect("trickler"),
        "a head trickling in past its deadline is closed"
    );
    // The server itself is fine.
    assert_eq!(reqwest::get(ts.url("/")).await.expect("GET").status(), 200);
}

#[tokio::test]
async fn event_streams_are_exempt_from_the_idle_deadline() {
    let ts = short_deadlines().await;
    let user = ts.signup().await;
    let mut stream = Raw::connect(ts.server.addr()).await;
    stream
        .send(b"GET /firehose HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    // Well past the head and idle deadlines, with only keep-alives flowing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(user.put("/pub/late.txt", "late").await.status(), 201);
    let found = tokio::time::timeout(GENEROUS, async {
        loop {
            if stream.buf.windows(13).any(|w| w == b"/pub/late.txt") {
                return true;
            }
            if stream.fill().await == 0 {
                return false;
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "the stream is still open and delivers");
}

#[tokio::test]
async fn a_stalled_body_is_a_408_and_leaves_no_spool_file() {
    let ts = short_deadlines().await;
    let user = ts.signup().await;
    let mut put = Raw::connect(ts.server.addr()).await;
    put.send(&put_head(&user, "/pub/stalled.bin", 4 << 20, true))
        .await;
    // Past the in-memory limit, so that the body is spooled to a file; then silence.
    put.send(&vec![b'x'; 2 << 20]).await;
    let spool = ts.dir.path().join("tmp");
    let response = tokio::time::timeout(GENEROUS, put.response())
        .await
        .expect("answered within the deadline")
        .expect("a response");
    assert_eq!(response.status, 408);
    assert!(response.closes(), "a 408 closes the connection");
    assert!(String::from_utf8_lossy(&response.body).contains("stalled"));
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
    assert!(ts.events().is_empty(), "nothing was committed");
    assert_eq!(user.get("/pub/stalled.bin").await.status(), 404);
}

#[tokio::test]
async fn a_response_the_client_stops_reading_is_dropped_after_the_stall_deadline() {
    const SIZE: usize = 48 << 20;
    let ts = TestServer::start_with(|c| {
        c.body_stall_secs = 1;
        c.max_body_bytes = 64 << 20;
    })
    .await;
    let user = ts.signup().await;
    assert_eq!(
        user.put("/pub/big.bin", vec![b'x'; SIZE]).await.status(),
        201
    );

    // A reader with a small window that reads the head, then nothing for a while: far more
    // than the socket buffers hold is left to send, so the server's writes wait on it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut slow = Raw {
        stream: socket.connect(ts.server.addr()).await.expect("connect"),
        buf: Vec::new(),
    };
    slow.send(
        format!(
            "GET /pub/big.bin HTTP/1.1\r\nHost: x\r\npubky-host: {}\r\n\r\n",
            user.z32
        )
        .as_bytes(),
    )
    .await;
    while !slow.buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(slow.fill().await > 0, "the response head arrives");
    }
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut received = slow.buf.len();
    let drained = tokio::time::timeout(GENEROUS, async {
        loop {
            let n = slow.fill().await;
            slow.buf.clear();
            if n == 0 {
                break;
            }
            received += n;
        }
    })
    .await;
    assert!(drained.is_ok(), "the server closed the stalled connection");
    assert!(
        received < SIZE,
        "the server gave up on the response ({received} of {SIZE} bytes sent)"
    );

    // A client that reads is served the whole file, however long it takes.
    let whole = user.get("/pub/big.bin").await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.expect("body").len(), SIZE);
}

#[tokio::test]
async fn early_refusals_keep_a_keep_alive_connection_honest() {
    let ts = TestServer::start_with(|c| {
        c.max_body_bytes = 1000;
        c.quota_bytes = Some(50_000);
    })
    .await;
    let user = ts.signup().await;
    let mut raw = Raw::connect(ts.server.addr()).await;
    let get_root = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    // 401 before the body is read, with a small body: drained, the connection kept.
    raw.send(&put_head(&user, "/pub/a.txt", 600, false)).await;
    raw.send(&[b'a'; 600]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 401);
    raw.send(get_root).await;
    let next = raw.response().await.expect("the next request is answered");
    assert_eq!(next.status, 200);

    // 413 from the declared length (small enough to drain): same.
    raw.send(&put_head(&user, "/pub/b.txt", 5000, true)).await;
    raw.send(&[b'b'; 5000]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 413);
    raw.send(get_root).await;
    assert_eq!(raw.response().await.expect("answered").status, 200);

    // A refusal whose body is too large to drain says so: Connection: close.
    raw.send(&put_head(&user, "/pub/c.txt", 10 << 20, true))
        .await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 413);
    assert!(refused.closes(), "{refused:?}");

    // 507 over quota, declared length, drained when small.
    let mut raw = Raw::connect(ts.server.addr()).await;
    for i in 0..55 {
        let response = user.put(&format!("/pub/fill/{i}"), vec![b'f'; 900]).await;
        assert_eq!(response.status(), 201);
    }
    raw.send(&put_head(&user, "/pub/d.txt", 900, true)).await;
    raw.send(&[b'd'; 900]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 507, "{refused:?}");
    raw.send(get_root).await;
    assert_eq!(raw.response().await.expect("answered").status, 200);
}

/// The real `hearth` binary, serving a data directory on an ephemeral port; killed if a test
/// fails before it stops it.
struct Binary {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Binary {
    /// Start `hearth serve` with `args`; `open_files` sets its soft and hard open-file limits.
    fn start(dir: &std::path::Path, args: &[&str], open_files: Option<u64>) -> Binary {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "hearth=warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(limit) = open_files {
            // SAFETY: only setrlimit, which is async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("hearth starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("hearth prints its address")
                .expect("stdout");
            if let Some(url) = line.strip_prefix("hearth listening on http://") {
                break url.trim().parse().expect("an address");
            }
        };
        // Keep reading, so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Binary { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Wait for the process to exit, at most `within`.
    fn exited_within(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sign a new user up on a server by URL.
async fn signup_at(base: &str) -> common::User {
    let keypair = pubky_common::crypto::Keypair::random();
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/signup"))
        .body(common::sign_token(&keypair, "/pub/:rw"))
        .send()
        .await
        .expect("signup");
    assert_eq!(response.status(), 200, "signup");
    common::User {
        z32: keypair.public_key().z32(),
        cookie: common::session_cookie(response.headers()),
        keypair,
        base: base.to_string(),
        http,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_grace_and_keeps_every_acknowledged_write() {
    const GRACE: u64 = 2;
    let dir = tempfile::tempdir().expect("temp dir");
    let grace = GRACE.to_string();
    let args = [
        "--shutdown-grace-secs",
        grace.as_str(),
        // Long deadlines: only the stop may end the stalled clients below.
        "--head-timeout-secs",
        "60",
        "--idle-timeout-secs",
        "60",
        "--body-stall-secs",
        "60",
    ];
    let mut server = Binary::start(dir.path(), &args, None);
    let user = signup_at(&server.url("")).await;

    // Writers that keep going through the stop, remembering every 201.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let user = user.clone();
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let path = format!("/pub/w{w}/{i}");
                let sent = user
                    .request(reqwest::Method::PUT, &path)
                    .body(format!("{w}-{i}"))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => {
                        acknowledged.lock().expect("lock").push(path)
                    }
                    _ => break,
                }
            }
        }));
    }
    // Stalled clients: half a head, a PUT that declared 1 MiB and sent 100 KiB, an idle
    // keep-alive connection, an idle event stream.
    let mut half_head = Raw::connect(server.addr).await;
    half_head.send(b"GET / HTTP/1.1\r\nHo").await;
    let mut partial_put = Raw::connect(server.addr).await;
    partial_put
        .send(&put_head(&user, "/pub/partial.bin", 1 << 20, true))
        .await;
    partial_put.send(&vec![b'p'; 100 << 10]).await;
    let mut idle = Raw::connect(server.addr).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(idle.response().await.expect("answered").status, 200);
    let mut stream = Raw::connect(server.addr).await;
    stream
        .send(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;

    while acknowledged.lock().expect("lock").len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.terminate();
    let status = tokio::task::block_in_place(|| {
        server.exited_within(std::time::Duration::from_secs(GRACE + 8))
    })
    .expect("the server exits within the grace and a margin");
    assert!(status.success(), "a clean exit: {status:?}");
    for writer in writers {
        writer.await.expect("writer");
    }
    for client in [&mut half_head, &mut partial_put, &mut idle, &mut stream] {
        assert!(client.closed_within(GENEROUS).await, "closed by the stop");
    }

    // Every acknowledged write is there after a restart; the cut-off PUT is not.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let server = Binary::start(dir.path(), &args, None);
    let user = common::User {
        base: server.url(""),
        ..user
    };
    for path in &acknowledged {
        let response = user.get(path).await;
        assert_eq!(response.status(), 200, "{path} was acknowledged");
        let (w, i) = path["/pub/w".len()..].split_once('/').expect("w/i");
        assert_eq!(response.text().await.expect("body"), format!("{w}-{i}"));
    }
    assert_eq!(user.get("/pub/partial.bin").await.status(), 404);
}

/// Connections held open without a word, returning how many of them the server refused
/// (answered 503 and closed) within a moment.
async fn hold_silent(addr: std::net::SocketAddr, count: usize) -> (Vec<Raw>, usize) {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(Raw::connect(addr).await);
    }
    // A refusal waits up to a second for the request; by now it waits in the socket buffer.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut refused = 0;
    for raw in &mut held {
        let mut answer = [0u8; 64];
        if let Ok(n) = raw.stream.try_read(&mut answer) {
            if n > 0 {
                assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
                refused += 1;
            }
        }
    }
    (held, refused)
}

/// GET / until it is a 200, for at most `GENEROUS`; the statuses seen on the way.
async fn get_until_ok(url: &str) -> Vec<u16> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + GENEROUS;
    while tokio::time::Instant::now() < deadline {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        match tokio::time::timeout(std::time::Duration::from_secs(2), client.get(url).send()).await
        {
            Ok(Ok(response)) => {
                seen.push(response.status().as_u16());
                if response.status() == 200 {
                    return seen;
                }
            }
            Ok(Err(_)) => seen.push(0),
            Err(_) => seen.push(1),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_clients_are_refused_at_once_and_served_once_slots_free() {
    // 256 descriptors: by default 128 connections, the rest in reserve.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Binary::start(dir.path(), &["--head-timeout-secs", "4"], Some(256));
    let (held, refused) = hold_silent(server.addr, 160).await;
    assert!(
        refused >= 20,
        "only {refused} of 160 over the limit were refused at once"
    );
    // A new client meanwhile is answered at once, not left waiting in the backlog.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reqwest::get(server.url("/")),
    )
    .await
    .expect("an answer while the server is full")
    .expect("a response");
    assert_eq!(answer.status(), 503);
    assert!(answer
        .text()
        .await
        .expect("body")
        .contains("connection limit"));
    // The silent ones hit the head deadline; then new clients are served.
    let seen = get_until_ok(&server.url("/")).await;
    assert_eq!(seen.last(), Some(&200), "statuses seen: {seen:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_neither_spins_nor_stalls_the_accept_loop() {
    // A connection limit above the descriptor limit: accept itself fails with EMFILE.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Binary::start(
        dir.path(),
        &["--head-timeout-secs", "4", "--max-connections", "1000"],
        Some(256),
    );
    let (held, refused) = hold_silent(server.addr, 300).await;
    assert!(refused > 0, "connections past the descriptors are refused");
    let seen = get_until_ok(&server.url("/")).await;
    assert_eq!(seen.last(), Some(&200), "statuses seen: {seen:?}");
    drop(held);
    // And it goes on serving.
    let user = signup_at(&server.url("")).await;
    assert_eq!(user.put("/pub/after.txt", "ok").await.status(), 201);
}

/// Event streams are written off hyper: a finished stream leaves the connection usable for
/// the next request, a refused one closes it, and both are well-formed HTTP/1.1.
#[tokio::test]
async fn a_finished_event_stream_keeps_the_connection_a_refused_one_closes_it() {
    let ts = TestServer::start().await;
    let user = ts.signup().await;
    for i in 0..3 {
        assert_eq!(user.put(&format!("/pub/s/{i}"), "x").await.status(), 201);
    }
    let mut raw = Raw::connect(ts.server.addr()).await;
    raw.send(b"GET /firehose?lastSeq=0000000000000&live=false HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let stream = raw.response().await.expect("a whole stream");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert!(!stream.closes());
    let text = String::from_utf8_lossy(&stream.body).into_owned();
    assert_eq!(text.matches("event: PUT").count(), 3, "{text}");
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let next = raw.response().await.expect("the next request is answered");
    assert_eq!(next.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&next.body).trim(),
        ts.server.public_key()
    );

    let mut raw = Raw::connect(ts.server.addr()).await;
    raw.send(b"GET /events-stream?user=nobody HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.closes());
    assert!(!refused.body.is_empty(), "the refusal says why");
    assert!(raw.closed_within(GENEROUS).await);
}
