//! The test harness: a real server on 127.0.0.1:0 with a real LMDB in a temp dir, and users
//! that sign up and write the way a Pubky client does (AuthToken from `pubky-common`, the
//! session cookie named by their key, the `pubky-host` header).
#![allow(dead_code)]

use hearth::config::Config;
use hearth::server::Server;
use pubky_common::auth::AuthToken;
use pubky_common::capabilities::Capabilities;
use pubky_common::crypto::Keypair;
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use reqwest::{Method, Response, StatusCode};

pub const ADMIN_PASSWORD: &str = "hunter2";

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Start with a tweaked configuration (quota, signup mode, ...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::ephemeral(dir.path());
        tweak(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        TestServer {
            server,
            dir,
            config,
            http: reqwest::Client::new(),
        }
    }

    /// Stop the server cleanly and start a new one on the same data directory.
    pub async fn restart(self) -> TestServer {
        let TestServer {
            server,
            dir,
            config,
            http,
        } = self;
        server.shutdown();
        server.stopped().await.expect("server stops cleanly");
        let server = Server::start(config.clone())
            .await
            .expect("server restarts");
        TestServer {
            server,
            dir,
            config,
            http,
        }
    }

    /// A server in `token` signup mode, with its admin listener on.
    pub async fn start_token_mode() -> TestServer {
        Self::start_with(|c| {
            c.signup_mode = hearth::config::SignupMode::Token;
            c.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
            c.admin_password = Some(ADMIN_PASSWORD.into());
        })
        .await
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.server.admin_addr().expect("an admin listener")
        )
    }

    /// Mint a signup token on the admin listener.
    pub async fn mint_signup_token(&self) -> String {
        let response = self
            .http
            .get(format!("{}/generate_signup_token", self.admin_url()))
            .header("x-admin-password", ADMIN_PASSWORD)
            .send()
            .await
            .expect("mint request");
        assert_eq!(response.status(), StatusCode::OK, "minting a signup token");
        response.text().await.expect("token body")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    /// Sign up a new user with write access to `/pub/`.
    pub async fn signup(&self) -> User {
        self.signup_with_caps("/pub/:rw").await
    }

    pub async fn signup_with_caps(&self, caps: &str) -> User {
        self.signup_at("/signup", caps).await
    }

    /// Sign up a new user (`/pub/:rw`) with a signup token (token signup mode).
    pub async fn signup_with_token(&self, signup_token: &str) -> User {
        self.signup_at(&format!("/signup?signup_token={signup_token}"), "/pub/:rw")
            .await
    }

    async fn signup_at(&self, path: &str, caps: &str) -> User {
        let keypair = Keypair::random();
        let token = sign_token(&keypair, caps);
        let response = self
            .http
            .post(self.url(path))
            .body(token)
            .send()
            .await
            .expect("signup request");
        assert_eq!(response.status(), StatusCode::OK, "signup");
        let cookie = session_cookie(response.headers()).expect("a session cookie");
        User {
            z32: keypair.public_key().z32(),
            keypair,
            cookie: Some(cookie),
            base: self.server.url(),
            http: self.http.clone(),
        }
    }

    /// Every committed event, in sequence order, read from the server's LMDB.
    pub fn events(&self) -> Vec<hearth::log::Event> {
        let mut events = Vec::new();
        self.server
            .log()
            .scan(0, usize::MAX, |e| {
                events.push(e);
                true
            })
            .expect("scan events");
        events
    }
}

pub fn sign_token(keypair: &Keypair, caps: &str) -> Vec<u8> {
    let capabilities: Capabilities = caps.parse().expect("capabilities");
    AuthToken::sign(keypair, capabilities).serialize()
}

/// `name=value` of the session cookie in a response.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .find(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
}

/// Log in on an admin listener's status page with the test password: the login cookie
/// (`name=value`), as a browser would keep it.
pub async fn admin_login(admin_url: &str) -> String {
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{admin_url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("password={ADMIN_PASSWORD}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    session_cookie(login.headers()).expect("a login cookie")
}

/// A signed-up user and a client acting for them.
#[derive(Clone)]
pub struct User {
    pub keypair: Keypair,
    pub z32: String,
    /// `name=value`; None to act without a session.
    pub cookie: Option<String>,
    pub base: String,
    pub http: reqwest::Client,
}

impl User {
    /// A request about this user's files (tenant header, session cookie).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("pubky-host", &self.z32);
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, HeaderValue::from_str(cookie).expect("cookie"));
        }
        request
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.request(Method::PUT, path)
            .body(body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }

    /// The listing of `dir` as lines.
    pub async fn list(&self, dir_and_query: &str) -> Vec<String> {
        let response = self.get(dir_and_query).await;
        if response.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert_eq!(response.status(), StatusCode::OK, "listing {dir_and_query}");
        let text = response.text().await.expect("listing body");
        text.lines().map(str::to_string).collect()
    }
}

/// A raw HTTP/1.1 request, byte for byte: HTTP clients normalize `..` and `%2e%2e` away, and
/// the server must be tested with what an attacker really sends. Returns (status, body).
pub async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
