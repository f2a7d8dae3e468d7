//! End-to-end fuzzing: seeded random requests (methods, paths, queries, headers, bodies,
//! broken framing) sent byte for byte to a real server, one at a time. For every one:
//! - an answer: a status line comes back (no connection dropped in silence, no hang);
//! - no 5xx (a 507 for the quota excepted: that is the contract's answer);
//! - the event log grows by one for an accepted PUT or DELETE under /pub/, and is unchanged
//!   by everything else, refusals above all.
//!
//! `HEARTH_FUZZ_REQUESTS` (default 300) sets how many, `HEARTH_FUZZ_SEED` which ones; a failure
//! prints the seed, the index and the request, so it replays exactly.

mod common;

use std::time::Duration;

use common::{sign_token, TestServer, User};
use pubky_common::crypto::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// SplitMix64: small, seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What the generator knows of the server: real users, their cookies, a stranger.
struct World {
    users: Vec<User>,
    stranger: String,
}

fn segment(rng: &mut Rng) -> String {
    match rng.below(14) {
        0 => ".".into(),
        1 => "..".into(),
        2 => "".into(),
        3 => "%2e%2e".into(),
        4 => "%2F".into(),
        5 => "%00".into(),
        6 => "%ff%fe".into(),
        7 => "%".into(),
        8 => "x".repeat(1 + rng.below(300)),
        9 => "%C3%A9".into(),
        10 => "a%20b".into(),
        11 => "*".into(),
        _ => format!("f{}", rng.below(6)),
    }
}

fn path(rng: &mut Rng, world: &World) -> String {
    let fixed = [
        "/",
        "/info",
        "/signup",
        "/session",
        "/auth/grant/signup",
        "/auth/grant/session",
        "/firehose",
        "/events/",
        "/events",
        "/events-stream",
        "/pub",
        "/pub/",
        "/priv/x",
        "/generate_signup_token",
    ];
    match rng.below(10) {
        0..=2 => rng.pick(&fixed).to_string(),
        3 => format!("/pub/{}", "d/".repeat(rng.below(2100))),
        4 => format!("/{}", world.stranger),
        _ => {
            let mut path = String::from("/pub/");
            for i in 0..1 + rng.below(4) {
                if i > 0 {
                    path.push('/');
                }
                path.push_str(&segment(rng));
            }
            if rng.chance(20) {
                path.push('/');
            }
            path
        }
    }
}

fn query(rng: &mut Rng, world: &World) -> String {
    let user = &rng.pick(&world.users).z32;
    let keys = [
        "sub",
        "lastSeq",
        "live",
        "limit",
        "cursor",
        "reverse",
        "shallow",
        "user",
        "path",
        "pubky-host",
        "signup_token",
        "x",
    ];
    let values = [
        String::new(),
        "true".into(),
        "yes".into(),
        "maybe".into(),
        "0".into(),
        "1".into(),
        "70000".into(),
        "-1".into(),
        "0000000000000".into(),
        "ZZZZZZZZZZZZZ".into(),
        "18446744073709551615".into(),
        format!("{user}:3"),
        format!("{user}/pub/*"),
        "*/pub/*".into(),
        "*".into(),
        user.clone(),
        world.stranger.clone(),
        "/pub/f1/".into(),
        format!("pubky://{user}/pub/f1"),
        "%00%ff".into(),
        "x".repeat(600),
        "AAAA-BBBB-CCCC".into(),
    ];
    let mut pairs = Vec::new();
    for _ in 0..rng.below(6) {
        let key = *rng.pick(&keys);
        let value = rng.pick(&values).clone();
        pairs.push(if rng.chance(10) {
            key.to_string()
        } else {
            format!("{key}={value}")
        });
    }
    // /events-stream: live would never end; the answer's head is enough, but keep most
    // streams finite so that their bodies are read too.
    pairs.join("&")
}

/// One request, as bytes on the wire, and whether it is broken as HTTP (not parsable as a
/// request at all: the connection layer refuses those before any route).
fn request(rng: &mut Rng, world: &World, addr: std::net::SocketAddr) -> (Vec<u8>, bool) {
    let mut broken = false;
    // Some requests are what a client would send (so that writes land, and the log's growth
    // is checked on successes too); the rest are anything.
    let plausible = rng.chance(40);
    let methods = [
        "GET", "GET", "GET", "HEAD", "PUT", "PUT", "PUT", "POST", "DELETE", "DELETE", "PATCH",
        "OPTIONS", "TRACE", "FOO", "get",
    ];
    let method = if plausible {
        *rng.pick(&["PUT", "PUT", "PUT", "DELETE", "GET", "HEAD"])
    } else {
        *rng.pick(&methods)
    };
    let mut target = if plausible {
        let (dir, file) = (rng.below(3), rng.below(4));
        match rng.below(4) {
            0 => format!("/pub/f{dir}"),
            1 => format!("/pub/f{dir}/"),
            _ => format!("/pub/f{dir}/g{file}"),
        }
    } else {
        path(rng, world)
    };
    if rng.chance(if plausible { 15 } else { 50 }) {
        target.push('?');
        target.push_str(&query(rng, world));
    }
    let user = rng.pick(&world.users).clone();
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    headers.push((
        "Host".into(),
        match if plausible { 5 } else { rng.below(6) } {
            0 => format!("_pubky.{}", user.z32),
            1 => format!("{}:{}", user.z32, addr.port()),
            2 => "[::1]:6287".into(),
            3 => "".into(),
            _ => addr.to_string(),
        }
        .into_bytes(),
    ));
    if plausible || rng.chance(60) {
        let host = match if plausible { 4 } else { rng.below(5) } {
            0 => world.stranger.clone(),
            1 => "not-a-key".into(),
            2 => format!("pubky{}", user.z32),
            _ => user.z32.clone(),
        };
        headers.push(("pubky-host".into(), host.into_bytes()));
    }
    if plausible || rng.chance(60) {
        let cookie = user.cookie.clone().unwrap_or_default();
        let value = match if plausible { 5 } else { rng.below(6) } {
            0 => format!("{}=", user.z32),
            1 => format!("{}=; {cookie}", user.z32),
            2 => {
                let len = rng.below(700);
                format!("{}={}", user.z32, "Z".repeat(len))
            }
            3 => format!("junk; ;=;{cookie}"),
            _ => cookie,
        };
        headers.push(("Cookie".into(), value.into_bytes()));
    }
    if rng.chance(15) {
        let token = match rng.below(3) {
            0 => "x".repeat(43),
            1 => String::new(),
            _ => {
                let len = rng.below(200);
                "A".repeat(len)
            }
        };
        headers.push((
            "Authorization".into(),
            format!("Bearer {token}").into_bytes(),
        ));
    }
    if rng.chance(15) {
        let id = rng.pick(&[
            "0000000000001",
            "",
            "nope",
            "FZZZZZZZZZZZZ",
            "0000000000000",
        ]);
        headers.push(("Last-Event-ID".into(), id.as_bytes().to_vec()));
    }
    if rng.chance(10) {
        headers.push(("If-None-Match".into(), b"\"x\", *".to_vec()));
    }
    if rng.chance(10) {
        headers.push((
            "If-Modified-Since".into(),
            b"Thu, 01 Jan 1970 00:00:00 GMT".to_vec(),
        ));
    }
    if rng.chance(10) {
        headers.push(("Origin".into(), b"https://example.com".to_vec()));
    }
    if rng.chance(5) {
        // Bytes a header may not hold: the server must still answer (400).
        headers.push(("X-Junk".into(), vec![b'a', 0, b'\n', b'b']));
        broken = true;
    }
    let body: Vec<u8> = match if plausible {
        3 + 5 * rng.below(2)
    } else {
        rng.below(9)
    } {
        0..=2 => Vec::new(),
        3 => {
            let len = rng.below(2000);
            rng.bytes(len)
        }
        4 => rng.bytes(40 * 1024),
        5 => sign_token(&user.keypair, "/pub/:rw"),
        6 => sign_token(&Keypair::random(), "/:rw"),
        7 => br#"{"grant":"a.b.c","pop":"d.e.f"}"#.to_vec(),
        _ => format!("{{\"v\":{}}}", rng.next()).into_bytes(),
    };
    let framing = if plausible {
        3 * rng.below(2)
    } else {
        rng.below(10)
    };
    let mut wire = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    match if plausible { 2 } else { rng.below(40) } {
        0 => {
            wire = format!("{method} {target}\r\n").into_bytes();
            broken = true;
        }
        1 => {
            wire = format!("{method} {target} x HTTP/1.1\r\n").into_bytes();
            broken = true;
        }
        _ => {}
    }
    for (name, value) in &headers {
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"Connection: close\r\n");
    match framing {
        // Chunked, well formed.
        0..=1 => {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(1000) {
                wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        }
        // Both lengths: a smuggling shape.
        2 => {
            broken = true;
            wire.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        _ => {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(&body);
        }
    }
    (wire, broken)
}

/// Send `wire`, read the answer: (status, content type, body prefix). `None`: no status line
/// came back before the connection closed.
async fn exchange(addr: std::net::SocketAddr, wire: &[u8]) -> Option<(u16, String, String)> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    // The server may answer (and close) before it has read everything: that is fine.
    let _ = socket.write_all(wire).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&received);
        // An event stream stays open: its head is the answer.
        if text.contains("text/event-stream") && text.contains("\r\n\r\n") {
            break;
        }
        if received.len() > 1 << 20 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Some((status, content_type, body.chars().take(300).collect()))
}

/// A fresh session cookie for `keypair`'s user (`name=value`).
async fn sign_in(hs: &TestServer, keypair: &Keypair) -> String {
    let response = hs
        .http
        .post(hs.url("/session"))
        .body(sign_token(keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "signing in again");
    common::session_cookie(response.headers()).expect("a session cookie")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_answers_and_refusals_change_nothing() {
    let seed = env_number("HEARTH_FUZZ_SEED", 0x4845_4152_5448);
    let count = env_number("HEARTH_FUZZ_REQUESTS", 300);
    let hs = TestServer::start_with(|c| {
        c.quota_bytes = Some(256 * 1024);
        c.max_body_bytes = 32 * 1024;
        c.keepalive_secs = 1;
    })
    .await;
    let mut world = World {
        users: vec![hs.signup().await, hs.signup().await],
        stranger: Keypair::random().public_key().z32(),
    };
    let addr = hs.server.addr();
    let mut rng = Rng(seed);
    let mut statuses = std::collections::BTreeMap::new();
    for index in 0..count {
        // A fuzzed DELETE /session may have signed a user out: sign in again now and then.
        if index % 100 == 99 {
            for user in &mut world.users {
                user.cookie = Some(sign_in(&hs, &user.keypair).await);
            }
        }
        let (wire, broken) = request(&mut rng, &world, addr);
        let shown = String::from_utf8_lossy(&wire[..wire.len().min(600)]).into_owned();
        let replay = format!("seed {seed} request {index}:\n{shown}");
        let before = hs.server.log().last_seq().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), exchange(addr, &wire)).await;
        let Ok(answer) = answer else {
            panic!("no answer within 20 s: {replay}");
        };
        let Some((status, content_type, body)) = answer else {
            panic!("the connection closed without an answer: {replay}");
        };
        *statuses.entry(status).or_insert(0u32) += 1;
        let quota = status == 507 && body.contains("quota");
        assert!(status < 500 || quota, "{status} {body:?}: {replay}");
        // A head that is not HTTP is refused by the connection layer, with a body too.
        if broken {
            assert!(
                (400..500).contains(&status) || status < 300,
                "{status}: {replay}"
            );
        }
        if status >= 400 && !wire.starts_with(b"HEAD ") {
            assert!(!body.trim().is_empty(), "{status} without a body: {replay}");
            assert!(
                content_type.starts_with("text/plain"),
                "{status} {content_type}: {replay}"
            );
        }
        let after = hs.server.log().last_seq().unwrap();
        let write = wire.starts_with(b"PUT /pub/") || wire.starts_with(b"DELETE /pub/");
        let accepted = (200..300).contains(&status) && write;
        let grew = after - before;
        assert_eq!(grew, u64::from(accepted), "{status}, log +{grew}: {replay}");
    }
    // The run meant something: successes and refusals of several kinds.
    let ok = statuses.range(200..300).map(|(_, n)| n).sum::<u32>();
    assert!(ok > 0, "{statuses:?}");
    assert!(
        statuses.keys().filter(|s| **s >= 400).count() >= 4,
        "{statuses:?}"
    );
    eprintln!("seed {seed}: {count} requests, statuses {statuses:?}");
}
