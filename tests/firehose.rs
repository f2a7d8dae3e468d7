//! The firehose and Pubky's event endpoints, against a real server over HTTP.
//!
//! No mocks and no timing assertions: every test waits for what it expects (with a generous
//! guard against hangs) and compares what arrived with the server's own event log.

mod common;
/// Client-side SSE (kept apart from `common`, which the load tool's tests share too).
#[path = "common/sse.rs"]
mod sse;

use std::net::SocketAddr;

use common::{TestServer, User};
use hearth::ids as id;
use hearth::log::{Event, EventKind};
use reqwest::StatusCode;
use sse::{seed, take_message, Message, Rng, Sse, GUARD};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

async fn server() -> TestServer {
    TestServer::start_with(|config| config.sync = false).await
}

async fn open(ts: &TestServer, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = ts.http.get(ts.url(&format!("/firehose{query}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("firehose request")
}

async fn stream(ts: &TestServer, query: &str, last_event_id: Option<&str>) -> Sse {
    let response = open(ts, query, last_event_id).await;
    assert_eq!(response.status(), StatusCode::OK, "firehose{query}");
    Sse::new(response)
}

/// A pattern as the spec defines it, matched here independently of the server.
fn matches(pattern: &str, event: &Event) -> bool {
    let (user, path) = (&event.key[..52], &event.key[52..]);
    let (pattern_user, pattern_path) = match pattern.strip_prefix('*') {
        Some(path) => (None, path),
        None => (Some(&pattern[..52]), &pattern[52..]),
    };
    if pattern_user.is_some_and(|u| u != user) {
        return false;
    }
    match pattern_path.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern_path,
    }
}

fn expected(ts: &TestServer, patterns: &[String], after: u64) -> Vec<u64> {
    ts.events()
        .into_iter()
        .filter(|e| e.seq > after && patterns.iter().any(|p| matches(p, e)))
        .map(|e| e.seq)
        .collect()
}

fn query_of(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("sub={}", urlencode(p)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn put(user: &User, path: &str, body: &str) {
    let response = user.put(path, body.to_string()).await;
    assert_eq!(response.status(), StatusCode::CREATED, "PUT {path}");
}

/// Clients connect while writers write, read a random number of events, drop, and resume
/// with `Last-Event-ID`; each must see exactly its matching events, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_live_join_without_gap_or_duplicate_under_concurrent_writes() {
    let ts = server().await;
    let users = [ts.signup().await, ts.signup().await, ts.signup().await];
    let seed = seed();

    let mut writers = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let user = user.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_add(n as u64 * 7919) | 1);
            for i in 0..150 {
                let folder = ["app/posts", "app", "other"][rng.below(3) as usize];
                let path = format!("/pub/{folder}/{}.json", rng.below(12));
                if rng.below(4) == 0 {
                    // 404 when absent: then no event, which the log shows too.
                    user.delete(&path).await;
                } else {
                    put(&user, &path, &format!("{i}")).await;
                }
            }
        }));
    }

    let client_patterns: Vec<Vec<String>> = vec![
        vec!["*/pub/*".into()],
        vec![format!("{}/*", users[0].z32)],
        vec!["*/pub/app/posts/*".into()],
        vec![
            format!("{}/pub/app/*", users[1].z32),
            "*/pub/other/*".into(),
        ],
        vec![format!("{}/pub/app/3.json", users[2].z32)],
    ];
    let mut clients = Vec::new();
    for (n, patterns) in client_patterns.iter().enumerate() {
        let base = ts.server.url();
        let http = ts.http.clone();
        let patterns = patterns.clone();
        // The last matching sequence, known once the writers are done.
        let (target_tx, mut target) = tokio::sync::watch::channel(None::<u64>);
        let query = query_of(&patterns);
        let handle = tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(n as u64 + 3) | 1);
            let mut seen: Vec<u64> = Vec::new();
            let mut connections = 0;
            'connections: loop {
                let last_seen = seen.last().copied().unwrap_or(0);
                if target.borrow().is_some_and(|last| last_seen >= last) {
                    break;
                }
                connections += 1;
                let request = match seen.last() {
                    Some(&seq) => http
                        .get(format!("{base}/firehose?{query}"))
                        .header("Last-Event-ID", id::encode(seq)),
                    None => http.get(format!("{base}/firehose?{query}&lastSeq=0000000000000")),
                };
                let response = request.send().await.expect("connect");
                assert_eq!(response.status(), StatusCode::OK);
                let mut sse = Sse::new(response);
                for _ in 0..1 + rng.below(40) {
                    let last_seen = seen.last().copied().unwrap_or(0);
                    let reached = target.wait_for(|t| t.is_some_and(|last| last_seen >= last));
                    tokio::select! {
                        message = sse.next_event() => {
                            seen.push(message.expect("a live stream stays open").seq());
                        }
                        _ = reached => break 'connections,
                    }
                }
                // Dropping `sse` here closes the connection mid-stream.
            }
            (seen, connections)
        });
        clients.push((patterns, target_tx, handle));
    }

    for writer in writers {
        writer.await.expect("writer");
    }
    for (patterns, target_tx, _) in &clients {
        let want = expected(&ts, patterns, 0);
        target_tx
            .send(Some(want.last().copied().unwrap_or(0)))
            .expect("client waiting");
    }
    for (patterns, _, handle) in clients {
        let want = expected(&ts, &patterns, 0);
        let (seen, connections) = tokio::time::timeout(GUARD, handle)
            .await
            .expect("client finishes")
            .expect("client task");
        assert_eq!(
            seen, want,
            "patterns {patterns:?} (seed {seed}, {connections} connections)"
        );
    }
}

/// A chunked HTTP/1.1 response read by hand from a socket with a tiny receive buffer.
struct RawStream {
    reader: BufReader<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl RawStream {
    async fn connect(addr: SocketAddr, target: &str) -> RawStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        let mut tcp = socket.connect(addr).await.expect("connect");
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut reader = BufReader::with_capacity(4096, tcp);
        let mut status = String::new();
        reader.read_line(&mut status).await.expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
        }
        RawStream {
            reader,
            buf: Vec::new(),
        }
    }

    async fn next_chunk(&mut self) -> bool {
        let mut size_line = String::new();
        self.reader
            .read_line(&mut size_line)
            .await
            .expect("chunk size");
        let size = usize::from_str_radix(size_line.trim(), 16).expect("hex chunk size");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.expect("chunk");
        chunk.truncate(size);
        self.buf.extend_from_slice(&chunk);
        size > 0
    }

    async fn next_message(&mut self) -> Message {
        loop {
            if let Some(message) = take_message(&mut self.buf) {
                return message;
            }
            assert!(self.next_chunk().await, "the server ended the stream");
        }
    }
}

/// A client that stops reading while far more events are written than any queue or socket
/// buffer holds, then reads again: it gets every event, in order, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_everything_in_order_on_the_same_connection() {
    const EVENTS: usize = 20_000;
    let ts = server().await;
    let user = ts.signup().await;
    let mut raw = RawStream::connect(
        ts.server.addr(),
        "/firehose?sub=*/pub/*&lastSeq=0000000000000",
    )
    .await;
    // Subscribed: the headers only come once the connection is registered.
    let first = tokio::time::timeout(GUARD, raw.next_message())
        .await
        .expect("the stream opens");
    assert!(first.retry.is_some(), "the stream opens with retry:");

    // Long paths make big frames: ~20k * ~700 bytes, far over the socket buffers.
    let padding = "p".repeat(150);
    let mut writers = Vec::new();
    for w in 0..8 {
        let user = user.clone();
        let padding = padding.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..EVENTS).step_by(8) {
                put(&user, &format!("/pub/slow/{padding}/{i}"), "x").await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let want: Vec<u64> = ts.events().iter().map(|e| e.seq).collect();
    assert_eq!(want.len(), EVENTS);
    let mut got = Vec::with_capacity(EVENTS);
    let read_all = async {
        while got.len() < EVENTS {
            let message = raw.next_message().await;
            if message.event.is_some() {
                got.push(message.seq());
            }
        }
    };
    // Keep-alives keep arriving even if events do not: the guard is on the whole read.
    if tokio::time::timeout(GUARD, read_all).await.is_err() {
        panic!(
            "only {} of {EVENTS} events arrived within {GUARD:?}",
            got.len()
        );
    }
    assert_eq!(got, want);
}

/// The seed's four subscriptions, an exact file, and a union where one event matches twice:
/// each gets exactly its events, live and replayed.
#[tokio::test]
async fn seed_subscriptions_deliver_exactly_what_they_match() {
    let ts = server().await;
    let alice = ts.signup().await;
    let bob = ts.signup().await;
    let (a, b) = (alice.z32.clone(), bob.z32.clone());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("all of one user", vec![format!("{a}/*")]),
        (
            "one folder of one user",
            vec![format!("{a}/pub/app/posts/*")],
        ),
        ("one folder of every user", vec!["*/pub/app/posts/*".into()]),
        ("every public event", vec!["*/pub/*".into()]),
        ("one exact file", vec![format!("{b}/pub/app/profile.json")]),
        (
            "a union where alice's posts match both",
            vec![format!("{a}/*"), "*/pub/app/posts/*".into()],
        ),
    ];
    let writes = |alice: User, bob: User| async move {
        put(&alice, "/pub/app/profile.json", "{}").await;
        put(&alice, "/pub/app/posts/1.json", "1").await;
        put(&bob, "/pub/app/posts/1.json", "1").await;
        put(&bob, "/pub/app/profile.json", "{}").await;
        put(&alice, "/pub/app/posts/2.json", "2").await;
        put(&alice, "/pub/other/x", "x").await;
        put(&bob, "/pub/app/postscript", "not in the folder").await;
        assert_eq!(
            alice.delete("/pub/app/posts/1.json").await.status(),
            StatusCode::NO_CONTENT
        );
        put(&bob, "/pub/app/profile.json", "{\"v\":2}").await;
    };
    // Hand-written expectations (sequences 1..=9 in the order above).
    let want: Vec<Vec<u64>> = vec![
        vec![1, 2, 5, 6, 8],
        vec![2, 5, 8],
        vec![2, 3, 5, 8],
        (1..=9).collect(),
        vec![4, 9],
        vec![1, 2, 3, 5, 6, 8],
    ];

    // Live: subscribed before the writes, each stream closes after its expected count.
    let mut live = Vec::new();
    for ((_, patterns), want) in cases.iter().zip(&want) {
        let query = format!("?{}&limit={}", query_of(patterns), want.len());
        live.push(stream(&ts, &query, None).await);
    }
    writes(alice.clone(), bob.clone()).await;
    let events = ts.events();
    for (((name, patterns), want), sse) in cases.iter().zip(&want).zip(&mut live) {
        assert_eq!(
            &expected(&ts, patterns, 0),
            want,
            "{name}: test's own expectation"
        );
        let got: Vec<u64> = sse.all_events().await.iter().map(Message::seq).collect();
        assert_eq!(&got, want, "{name}, live");
    }

    // Replayed from the start, closing once caught up.
    for ((name, patterns), want) in cases.iter().zip(&want) {
        let query = format!("?{}&lastSeq=0000000000000&live=false", query_of(patterns));
        let messages = stream(&ts, &query, None).await.all_events().await;
        let got: Vec<u64> = messages.iter().map(Message::seq).collect();
        assert_eq!(&got, want, "{name}, replayed");
        for message in &messages {
            let event = &events[(message.seq() - 1) as usize];
            let json = message.json();
            assert_eq!(json["seq"], message.id.clone().expect("id"));
            assert_eq!(json["user"], event.key[..52]);
            assert_eq!(json["path"], event.key[52..]);
            assert_eq!(json["uri"], format!("pubky://{}", event.key));
            assert_eq!(json["ts"], event.ts_ms);
            match event.kind {
                EventKind::Put => {
                    assert_eq!(message.event.as_deref(), Some("PUT"));
                    assert_eq!(json["size"], event.size.expect("size"));
                    assert_eq!(
                        json["hash"],
                        hearth::log::hash_base64(&event.hash.expect("hash"))
                    );
                }
                EventKind::Del => {
                    assert_eq!(message.event.as_deref(), Some("DEL"));
                    assert!(json.get("hash").is_none() && json.get("size").is_none());
                }
            }
        }
    }

    // The hash is the file's ETag.
    let etag = bob.get("/pub/app/profile.json").await.headers()["etag"]
        .to_str()
        .expect("etag")
        .trim_matches('"')
        .to_string();
    let last = stream(
        &ts,
        &format!("?sub={b}/pub/app/profile.json&lastSeq=0000000000004&live=false"),
        None,
    )
    .await
    .all_events()
    .await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].json()["hash"], etag);
}

#[tokio::test]
async fn resuming_with_an_id_and_the_header_winning() {
    let ts = server().await;
    let user = ts.signup().await;
    for i in 0..5 {
        put(&user, &format!("/pub/r/{i}"), "x").await;
    }
    let seqs = |messages: Vec<Message>| messages.iter().map(Message::seq).collect::<Vec<_>>();
    // lastSeq alone.
    let got = stream(&ts, "?lastSeq=0000000000002&live=false", None)
        .await
        .all_events()
        .await;
    assert_eq!(seqs(got), vec![3, 4, 5]);
    // The header wins over lastSeq.
    let got = stream(
        &ts,
        "?lastSeq=0000000000001&live=false",
        Some("0000000000003"),
    )
    .await
    .all_events()
    .await;
    assert_eq!(seqs(got), vec![4, 5]);
    // limit closes after N, even on a live stream.
    let got = stream(&ts, "?lastSeq=0000000000000&limit=2", None)
        .await
        .all_events()
        .await;
    assert_eq!(seqs(got), vec![1, 2]);
    // No id: live from the newest, nothing replayed.
    let mut live = stream(&ts, "?limit=1", None).await;
    put(&user, "/pub/r/new", "x").await;
    assert_eq!(seqs(live.all_events().await), vec![6]);
    // The newest id itself is fine: nothing to replay.
    let got = stream(&ts, "?lastSeq=0000000000006&live=false", None)
        .await
        .all_events()
        .await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let ts = TestServer::start_with(|config| {
        config.sync = false;
        config.max_patterns = 3;
    })
    .await;
    let user = ts.signup().await;
    put(&user, "/pub/a", "x").await;
    put(&user, "/pub/b", "x").await;
    let cases: Vec<(String, Option<&str>, StatusCode, &str)> = vec![
        (
            "?lastSeq=42".into(),
            None,
            StatusCode::BAD_REQUEST,
            "13 characters",
        ),
        (
            "?lastSeq=000000000000U".into(),
            None,
            StatusCode::BAD_REQUEST,
            "Crockford",
        ),
        (
            "".into(),
            Some("not-an-id"),
            StatusCode::BAD_REQUEST,
            "Last-Event-ID",
        ),
        (
            "?lastSeq=0000000000003".into(),
            None,
            StatusCode::BAD_REQUEST,
            "ahead of the newest event, 0000000000002",
        ),
        (
            "".into(),
            Some("0000000000009"),
            StatusCode::BAD_REQUEST,
            "ahead of the newest event, 0000000000002",
        ),
        (
            "?sub=*/a*&sub=*/b*&sub=*/c*&sub=*/d*".into(),
            None,
            StatusCode::BAD_REQUEST,
            "at most 3",
        ),
        (
            "?sub=nobody/*".into(),
            None,
            StatusCode::BAD_REQUEST,
            "subscription",
        ),
        (
            format!("?sub={}/pub/*/x", user.z32),
            None,
            StatusCode::BAD_REQUEST,
            "* may only end",
        ),
        ("?limit=0".into(), None, StatusCode::BAD_REQUEST, "limit"),
    ];
    for (query, header, status, says) in cases {
        let response = open(&ts, &query, header).await;
        assert_eq!(response.status(), status, "{query} {header:?}");
        let body = response.text().await.expect("body");
        assert!(body.contains(says), "{query} {header:?}: {body:?}");
    }
}

/// What a browser's `EventSource` on another origin needs, and keep-alive comments.
#[tokio::test]
async fn the_stream_works_for_a_browser_on_another_origin() {
    let ts = TestServer::start_with(|config| {
        config.sync = false;
        config.keepalive_secs = 1;
    })
    .await;
    let response = ts
        .http
        .get(ts.url("/firehose"))
        .header("Origin", "https://app.example")
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(headers.get("content-encoding").is_none());
    let mut sse = Sse::new(response);
    let first = sse.next_any().await.expect("retry");
    assert!(first.retry.is_some(), "{first:?}");
    let idle = sse.next_any().await.expect("keep-alive");
    assert!(idle.comment && idle.event.is_none(), "{idle:?}");

    // The preflight a reconnecting EventSource may need.
    let preflight = ts
        .http
        .request(reqwest::Method::OPTIONS, ts.url("/firehose"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
}

#[tokio::test]
async fn streams_end_cleanly_on_shutdown() {
    let ts = server().await;
    let mut sse = stream(&ts, "", None).await;
    assert!(sse.next_any().await.expect("retry").retry.is_some());
    ts.server.shutdown();
    assert!(sse.next_event().await.is_none(), "the stream ends");
    ts.server.stopped().await.expect("stops");
}

/// Pubky's `/events/` paged to the end as `pubky-nexus` does.
#[tokio::test]
async fn pubky_events_feed_pages_to_the_end() {
    let ts = server().await;
    let alice = ts.signup().await;
    let bob = ts.signup().await;
    for i in 0..12 {
        let user = if i % 2 == 0 { &alice } else { &bob };
        put(user, &format!("/pub/feed/{i}"), "x").await;
    }
    alice.delete("/pub/feed/0").await;
    let want: Vec<String> = ts
        .events()
        .iter()
        .map(|e| format!("{} pubky://{}", e.kind.as_str(), e.key))
        .collect();
    assert_eq!(want.len(), 13);

    let mut cursor = "0".to_string();
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let response = ts
            .http
            .get(ts.url(&format!("/events/?cursor={cursor}&limit=5")))
            .send()
            .await
            .expect("feed");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let body = response.text().await.expect("body");
        if body.is_empty() {
            break;
        }
        pages += 1;
        assert!(
            !body.ends_with('\n'),
            "lines are joined, no trailing newline"
        );
        let mut lines: Vec<&str> = body.split('\n').collect();
        let last = lines.pop().expect("a cursor line");
        cursor = last
            .strip_prefix("cursor: ")
            .expect("cursor line")
            .to_string();
        assert!(cursor.parse::<u64>().is_ok(), "numeric cursor {cursor}");
        got.extend(lines.iter().map(|l| l.to_string()));
    }
    assert_eq!(pages, 3);
    assert_eq!(got, want);

    let status = |query: &str| {
        let http = ts.http.clone();
        let url = ts.url(&format!("/events/{query}"));
        async move { http.get(url).send().await.expect("feed").status() }
    };
    assert_eq!(status("?cursor=abc").await, StatusCode::BAD_REQUEST);
    assert_eq!(status("?cursor=0000000000000").await, StatusCode::OK);
    assert_eq!(status("?limit=lots").await, StatusCode::OK);
    assert_eq!(status("?reverse=maybe").await, StatusCode::BAD_REQUEST);
}

fn pubky_seq(message: &Message) -> u64 {
    message
        .data
        .iter()
        .find_map(|line| line.strip_prefix("cursor: "))
        .expect("a cursor line")
        .parse()
        .expect("numeric cursor")
}

/// `/events-stream` as the `pubky` SDK and `pubky-nexus` call it.
#[tokio::test]
async fn pubky_event_stream_as_the_sdk_calls_it() {
    let ts = server().await;
    let alice = ts.signup().await;
    let bob = ts.signup().await;
    for i in 0..6 {
        put(&alice, &format!("/pub/s/{i}"), &format!("{i}")).await;
        put(&bob, &format!("/pub/s/{i}"), "b").await;
    }
    alice.delete("/pub/s/0").await;
    let alice_seqs: Vec<u64> = ts
        .events()
        .iter()
        .filter(|e| e.key.starts_with(&alice.z32))
        .map(|e| e.seq)
        .collect();

    let get = |query: String| {
        let http = ts.http.clone();
        let url = ts.url(&format!("/events-stream?{query}"));
        async move { http.get(url).send().await.expect("events-stream") }
    };
    // After alice's second event, three of them, under /pub/.
    let cursor = alice_seqs[1];
    let response = get(format!(
        "user={}:{cursor}&limit=3&path=%2Fpub%2F",
        alice.z32
    ))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let messages = Sse::new(response).all_events().await;
    let got: Vec<u64> = messages.iter().map(pubky_seq).collect();
    assert_eq!(got, alice_seqs[2..5]);
    for message in &messages {
        assert_eq!(message.event.as_deref(), Some("PUT"));
        assert_eq!(message.seq(), pubky_seq(message), "id: is the same event");
        assert!(message.data[0].starts_with(&format!("pubky://{}/pub/s/", alice.z32)));
        let path = &message.data[0][8 + 52..];
        let etag = alice.get(path).await.headers()["etag"]
            .to_str()
            .expect("etag")
            .trim_matches('"')
            .to_string();
        assert_eq!(message.data[2], format!("content_hash: {etag}"));
    }

    // Everything of alice from the start, then close (no live): the DEL has no hash.
    let messages = Sse::new(get(format!("user={}", alice.z32)).await)
        .all_events()
        .await;
    assert_eq!(
        messages.iter().map(pubky_seq).collect::<Vec<_>>(),
        alice_seqs
    );
    let del = messages.last().expect("events");
    assert_eq!(del.event.as_deref(), Some("DEL"));
    assert_eq!(del.data.len(), 2);

    // Two users, an exact path filter and a prefix.
    let both = Sse::new(
        get(format!(
            "user={}&user={}:0&path=/pub/s/1&path=pub/s/5",
            alice.z32, bob.z32
        ))
        .await,
    )
    .all_events()
    .await;
    assert_eq!(both.len(), 4);

    // Reverse: newest first.
    let reversed = Sse::new(get(format!("user={}&reverse=true&limit=2", alice.z32)).await)
        .all_events()
        .await;
    let mut newest = alice_seqs.clone();
    newest.reverse();
    assert_eq!(
        reversed.iter().map(pubky_seq).collect::<Vec<_>>(),
        newest[..2]
    );

    // Live: history, then what is written afterwards.
    let last = *alice_seqs.last().expect("events");
    let mut live = Sse::new(
        get(format!(
            "user={}:{}&live=true&path=%2Fpub%2F",
            alice.z32, alice_seqs[5]
        ))
        .await,
    );
    assert_eq!(pubky_seq(&live.next_event().await.expect("history")), last);
    put(&bob, "/pub/s/ignored", "b").await;
    put(&alice, "/pub/s/live", "new").await;
    let message = live.next_event().await.expect("live event");
    assert_eq!(pubky_seq(&message), last + 2);

    // Resuming with Last-Event-ID skips what was already seen.
    let resumed = ts
        .http
        .get(ts.url(&format!("/events-stream?user={}", alice.z32)))
        .header("Last-Event-ID", id::encode(last))
        .send()
        .await
        .expect("resume");
    let resumed = Sse::new(resumed).all_events().await;
    assert_eq!(
        resumed.iter().map(pubky_seq).collect::<Vec<_>>(),
        vec![last + 2]
    );

    // Errors, as Pubky answers them.
    let unknown = pkarr::Keypair::random().public_key().to_string();
    let cases = [
        (String::new(), StatusCode::BAD_REQUEST),
        (format!("user={unknown}"), StatusCode::NOT_FOUND),
        (
            format!("user={}&live=true&reverse=true", alice.z32),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("user={}&limit=0", alice.z32),
            StatusCode::BAD_REQUEST,
        ),
        (format!("user={}:x", alice.z32), StatusCode::BAD_REQUEST),
        ("user=nobody".to_string(), StatusCode::BAD_REQUEST),
    ];
    for (query, status) in cases {
        let response = get(query.clone()).await;
        assert_eq!(response.status(), status, "{query}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(!response.text().await.expect("body").is_empty(), "{query}");
    }
}
