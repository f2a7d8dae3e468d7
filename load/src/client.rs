//! The load tool's HTTP side: where the server is, and the few requests the scenarios make.
//!
//! One `Conn` is one keep-alive HTTP/1.1 connection (hyper's low-level client, no pool): a
//! writer owns its connection, so a measured latency is one request on one socket. Only
//! loopback targets are accepted: the tool is a load generator and must not be aimed at
//! anybody else's server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::{Capabilities, Capability};
use pubky_common::crypto::Keypair;
use tokio::net::{TcpSocket, TcpStream};

use super::LoadError;

/// The most of a response body the tool reads into memory (an `/events/` page is ~100 KiB).
const MAX_BODY: usize = 16 << 20;
/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server to load: its socket address, the `Host` header to send, and a path prefix.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the `Host` header.
    pub authority: String,
    /// A path prefix from the URL (empty, or `/something` without a trailing slash).
    pub base: String,
}

impl Target {
    /// Parse `http://host[:port][/base]`; refuse anything that is not loopback.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let uri: Uri = url
            .parse()
            .map_err(|err| LoadError::Usage(format!("--url {url:?} is not a URL: {err}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            other => {
                return Err(LoadError::Usage(format!(
                    "--url must be http://, not {}",
                    other.unwrap_or("a relative URL")
                )))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| LoadError::Usage(format!("--url {url:?} names no host")))?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        let ip = loopback_ip(host).ok_or_else(|| {
            LoadError::Usage(format!(
                "--url host {host:?} is not loopback; the load tool only targets \
                 127.0.0.0/8, ::1 or localhost"
            ))
        })?;
        let base = uri.path().trim_end_matches('/').to_string();
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            authority: authority.as_str().to_string(),
            base,
        })
    }

    /// The request target for `path_and_query` (which starts with `/`).
    pub fn path(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }
}

/// The loopback address a host names, if it names one. No DNS: `localhost` is 127.0.0.1.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// A signed-up user: its key and the session cookie that lets it write.
#[derive(Debug, Clone)]
pub struct User {
    pub z32: String,
    /// `name=value`, as sent back in the `Cookie` header.
    pub cookie: String,
}

/// A response, read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    target: Target,
}

/// A TCP connection to `target`, as every request of the tool (PUTs and streams alike) uses
/// it: Nagle off, and `recv_buffer` (if given) as the socket's receive buffer.
pub(crate) async fn connect_socket(
    target: &Target,
    recv_buffer: Option<u32>,
) -> Result<TokioIo<TcpStream>, LoadError> {
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
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(target.addr))
        .await
        .map_err(|_| LoadError::Http(format!("connecting to {} timed out", target.addr)))?
        .map_err(|err| io(&format!("connecting to {}", target.addr), err))?;
    // Small requests: don't let Nagle hold a PUT back waiting for an ACK.
    stream
        .set_nodelay(true)
        .map_err(|err| io("setting TCP_NODELAY", err))?;
    Ok(TokioIo::new(stream))
}

impl Conn {
    pub async fn connect(target: &Target) -> Result<Conn, LoadError> {
        let io = connect_socket(target, None).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|err| LoadError::Http(format!("HTTP handshake: {err}")))?;
        // The connection task ends when `sender` is dropped or the server closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            target: target.clone(),
        })
    }

    /// Send one request and read its whole answer, within `REQUEST_TIMEOUT`.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, LoadError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(request))
            .await
            .map_err(|_| LoadError::Http("request timed out".into()))?
    }

    async fn send_inner(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, LoadError> {
        self.sender
            .ready()
            .await
            .map_err(|err| LoadError::Http(format!("connection closed: {err}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|err| LoadError::Http(format!("request failed: {err}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|err| LoadError::Http(format!("reading the response: {err}")))?
            .to_bytes();
        Ok(Answer { status, body })
    }

    fn request(&self, method: Method, path_and_query: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.target.path(path_and_query))
            .header(HOST, self.target.authority.as_str())
    }

    /// Any request: a method, a path, headers and a body (the admin APIs).
    pub async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, LoadError> {
        let mut request = self.request(method, path_and_query);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        self.send(request).await
    }

    /// `GET`, public.
    pub async fn get(&mut self, path_and_query: &str) -> Result<Answer, LoadError> {
        let request = self
            .request(Method::GET, path_and_query)
            .body(Full::new(Bytes::new()))
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        self.send(request).await
    }

    /// `PUT` a file as `user`.
    pub async fn put(&mut self, user: &User, path: &str, body: Bytes) -> Result<Answer, LoadError> {
        let request = self
            .request(Method::PUT, path)
            .header("pubky-host", user.z32.as_str())
            .header(COOKIE, user.cookie.as_str())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body))
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        self.send(request).await
    }

    /// Ask an admin endpoint for a new signup token.
    pub async fn mint_signup_token(&mut self, password: &str) -> Result<String, LoadError> {
        let request = self
            .request(Method::GET, "/generate_signup_token")
            .header("x-admin-password", password)
            .body(Full::new(Bytes::new()))
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        let answer = self.send(request).await?;
        let text = String::from_utf8_lossy(&answer.body).trim().to_string();
        if !answer.status.is_success() {
            return Err(LoadError::Http(format!(
                "minting a signup token answered {}: {text}",
                answer.status
            )));
        }
        // Tokens are `XXXX-XXXX-XXXX`: safe in a query string as they are.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(LoadError::Protocol(format!(
                "the admin endpoint returned {text:?}, not a signup token"
            )));
        }
        Ok(text)
    }

    /// Create a fresh user with a session that may write under `/pub/`.
    pub async fn signup(&mut self, signup_token: Option<&str>) -> Result<User, LoadError> {
        let keypair = Keypair::random();
        let z32 = keypair.public_key().z32();
        let capability = Capability::read_write("/pub/")
            .map_err(|err| LoadError::Http(format!("building a capability: {err}")))?;
        let token = AuthToken::sign(&keypair, Capabilities::from(vec![capability]));
        let path = match signup_token {
            Some(code) => format!("/signup?signup_token={code}"),
            None => "/signup".to_string(),
        };
        let request = self
            .request(Method::POST, &path)
            .header("pubky-host", z32.as_str())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(token.serialize())))
            .map_err(|err| LoadError::Http(format!("building a request: {err}")))?;
        self.sender
            .ready()
            .await
            .map_err(|err| LoadError::Http(format!("connection closed: {err}")))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.sender.send_request(request))
            .await
            .map_err(|_| LoadError::Http("signup timed out".into()))?
            .map_err(|err| LoadError::Http(format!("signup failed: {err}")))?;
        let status = response.status();
        let cookie = session_cookie(response.headers().get_all(SET_COOKIE).iter(), &z32);
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|err| LoadError::Http(format!("reading the signup answer: {err}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(LoadError::Http(format!(
                "signup answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let cookie = cookie.ok_or_else(|| {
            LoadError::Http("signup succeeded but set no session cookie".to_string())
        })?;
        Ok(User { z32, cookie })
    }
}

/// The `name=value` of the session cookie: the one named after the user, else the first.
fn session_cookie<'a>(headers: impl Iterator<Item = &'a HeaderValue>, z32: &str) -> Option<String> {
    let mut first = None;
    for value in headers {
        let Ok(text) = value.to_str() else { continue };
        let pair = text.split(';').next().unwrap_or("").trim();
        let Some((name, _)) = pair.split_once('=') else {
            continue;
        };
        if name == z32 {
            return Some(pair.to_string());
        }
        first.get_or_insert_with(|| pair.to_string());
    }
    first
}

/// How new users get past the server's signup policy.
#[derive(Debug, Clone)]
pub enum Admission {
    /// The server allows open signup.
    Open,
    /// One signup token for every user (a server that lets a token be reused).
    Token(String),
    /// Mint a fresh token per user from the admin endpoint (`GET /generate_signup_token` with
    /// `X-Admin-Password`), as Hearth and the Pubky homeserver both offer.
    Mint { admin: Target, password: String },
}

/// Sign up `count` users, `parallel` at a time; every signup must succeed.
pub async fn signup_many(
    target: &Target,
    count: usize,
    parallel: usize,
    admission: &Admission,
) -> Result<Vec<User>, LoadError> {
    let parallel = parallel.clamp(1, count.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..parallel {
        let target = target.clone();
        let admission = admission.clone();
        let mine = (worker..count).step_by(parallel).count();
        tasks.spawn(async move {
            let mut conn = Conn::connect(&target).await?;
            let mut admin = match &admission {
                Admission::Mint { admin, .. } => Some(Conn::connect(admin).await?),
                _ => None,
            };
            let mut users = Vec::with_capacity(mine);
            for _ in 0..mine {
                let token = match (&admission, admin.as_mut()) {
                    (Admission::Token(token), _) => Some(token.clone()),
                    (Admission::Mint { password, .. }, Some(admin)) => {
                        Some(admin.mint_signup_token(password).await?)
                    }
                    _ => None,
                };
                users.push(conn.signup(token.as_deref()).await?);
            }
            Ok::<_, LoadError>(users)
        });
    }
    let mut users = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        let mut some =
            done.map_err(|err| LoadError::Http(format!("a signup task died: {err}")))??;
        users.append(&mut some);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_loopback() {
        let t = Target::parse("http://127.0.0.1:6287").expect("loopback");
        assert_eq!(t.addr, "127.0.0.1:6287".parse().expect("addr"));
        assert_eq!(t.authority, "127.0.0.1:6287");
        assert_eq!(t.base, "");
        assert!(Target::parse("http://127.1.2.3:80/base/").is_ok());
        assert_eq!(
            Target::parse("http://localhost:1/x/")
                .expect("localhost")
                .base,
            "/x"
        );
        assert!(Target::parse("http://[::1]:6287").is_ok());
        assert!(Target::parse("http://10.0.0.1:6287").is_err());
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("https://127.0.0.1").is_err());
        assert!(Target::parse("127.0.0.1:6287").is_err());
        assert!(Target::parse("http://[::2]:1").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn picks_the_users_cookie() {
        let values = [
            HeaderValue::from_static("other=1; Path=/"),
            HeaderValue::from_static("me=secret; HttpOnly; Path=/"),
        ];
        assert_eq!(
            session_cookie(values.iter(), "me").as_deref(),
            Some("me=secret")
        );
        assert_eq!(
            session_cookie(values.iter(), "nobody").as_deref(),
            Some("other=1")
        );
        assert_eq!(session_cookie([].iter(), "me"), None);
    }
}
