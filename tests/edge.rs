//! The connection layer against real servers on 127.0.0.1: the TLS listener (PubkyTLS),
//! deadlines, early refusals on keep-alive connections, the connection limit, the data
//! directory lock, and a bounded stop of the real binary.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts exactly one server key, sent as an RFC 7250 raw public key: what the Pubky SDK
/// checks once it has resolved the server's key.
#[derive(Debug)]
struct ExpectKey {
    spki: Vec<u8>,
}

impl ExpectKey {
    fn for_z32(z32: &str) -> ExpectKey {
        let key = pkarr::PublicKey::try_from(z32).expect("a server key");
        ExpectKey {
            spki: key.to_public_key_der().as_bytes().to_vec(),
        }
    }
}

impl ServerCertVerifier for ExpectKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.spki.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "raw public keys need TLS 1.3".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(
    addr: std::net::SocketAddr,
    expect: ExpectKey,
) -> Result<TlsStream, std::io::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(expect))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

    let stream = tls_connect(addr, ExpectKey::for_z32(&key))
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
    let refused = tls_connect(addr, ExpectKey::for_z32(&other)).await;
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
    let head = format!(
        "PUT /pub/stalled.bin HTTP/1.1\r\nHost: x\r\npubky-host: {}\r\nCookie: {}\r\n\
         Content-Length: {}\r\n\r\n",
        user.z32,
        user.cookie.as_deref().expect("a session"),
        4 << 20
    );
    put.send(head.as_bytes()).await;
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
async fn early_refusals_keep_a_keep_alive_connection_honest() {
    let ts = TestServer::start_with(|c| {
        c.max_body_bytes = 1000;
        c.quota_bytes = Some(50_000);
    })
    .await;
    let user = ts.signup().await;
    let cookie = user.cookie.clone().expect("a session");
    let mut raw = Raw::connect(ts.server.addr()).await;
    let put = |path: &str, length: usize, cookie: Option<&str>| {
        let mut head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\npubky-host: {}\r\nContent-Length: {length}\r\n",
            user.z32
        );
        if let Some(cookie) = cookie {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    };
    let get_root = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    // 401 before the body is read, with a small body: drained, the connection kept.
    raw.send(&put("/pub/a.txt", 600, None)).await;
    raw.send(&[b'a'; 600]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 401);
    raw.send(get_root).await;
    let next = raw.response().await.expect("the next request is answered");
    assert_eq!(next.status, 200);

    // 413 from the declared length (small enough to drain): same.
    raw.send(&put("/pub/b.txt", 5000, Some(&cookie))).await;
    raw.send(&[b'b'; 5000]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 413);
    raw.send(get_root).await;
    assert_eq!(raw.response().await.expect("answered").status, 200);

    // A refusal whose body is too large to drain says so: Connection: close.
    raw.send(&put("/pub/c.txt", 10 << 20, Some(&cookie))).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 413);
    assert!(refused.closes(), "{refused:?}");

    // 507 over quota, declared length, drained when small.
    let mut raw = Raw::connect(ts.server.addr()).await;
    let mut head = format!(
        "PUT /pub/d.txt HTTP/1.1\r\nHost: x\r\npubky-host: {}\r\nCookie: {cookie}\r\n",
        user.z32
    );
    head.push_str("Content-Length: 900\r\n\r\n");
    for i in 0..55 {
        let response = user.put(&format!("/pub/fill/{i}"), vec![b'f'; 900]).await;
        assert_eq!(response.status(), 201);
    }
    raw.send(head.as_bytes()).await;
    raw.send(&[b'd'; 900]).await;
    let refused = raw.response().await.expect("an answer");
    assert_eq!(refused.status, 507, "{refused:?}");
    raw.send(get_root).await;
    assert_eq!(raw.response().await.expect("answered").status, 200);
}
