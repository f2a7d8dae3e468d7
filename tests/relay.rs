//! Relays against real servers on 127.0.0.1: homeservers in this process, relays in this
//! process or (to be killed with SIGKILL) as `hearth relay` processes of the built binary,
//! and two small test servers that speak only a remote protocol (Pubky's `/events/` pages, a
//! Hearth-like stream of garbage). No timing assertions: every wait is for a state, bounded
//! by a guard against hangs.

mod common;
#[path = "common/metrics.rs"]
mod metrics;
/// Client-side SSE (kept apart from `common`, which the load tool's tests share too).
#[path = "common/sse.rs"]
mod sse;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, User, ADMIN_PASSWORD};
use hearth::config::Config;
use hearth::ids::{self as id, Id};
use hearth::log::Event;
use hearth::relay::{SourceStatus, State};
use hearth::server::Server;
use reqwest::{Method, StatusCode};
use sse::{seed, Message, Rng, Sse, GUARD};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------
// Servers

async fn homeserver() -> TestServer {
    TestServer::start_with(|config| config.sync = false).await
}

/// Stop a server cleanly and start it again on the same data directory and address.
async fn restart_in_place(ts: TestServer) -> TestServer {
    let TestServer {
        server,
        dir,
        mut config,
        http,
    } = ts;
    config.listen = server.addr();
    if let Some(admin) = server.admin_addr() {
        config.admin_listen = Some(admin);
    }
    let relay = server.relay().is_some();
    server.shutdown();
    server.stopped().await.expect("stops cleanly");
    let server = if relay {
        Server::start_relay(config.clone()).await
    } else {
        Server::start(config.clone()).await
    }
    .expect("starts again");
    TestServer {
        server,
        dir,
        config,
        http,
    }
}

/// A relay in this process, following `sources`.
async fn relay(sources: &[String]) -> TestServer {
    relay_with(sources, |_| {}).await
}

/// The same, with a tweaked configuration.
async fn relay_with(sources: &[String], tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::ephemeral(dir.path());
    config.sync = false;
    config.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.sources = sources
        .iter()
        .map(|s| s.parse().expect("a source spec"))
        .collect();
    tweak(&mut config);
    let server = Server::start_relay(config.clone())
        .await
        .expect("relay starts");
    TestServer {
        server,
        dir,
        config,
        http: reqwest::Client::new(),
    }
}

fn statuses(relay: &TestServer) -> Vec<SourceStatus> {
    relay.server.relay().expect("a relay").sources()
}

fn status(relay: &TestServer, source: &str) -> SourceStatus {
    statuses(relay)
        .into_iter()
        .find(|s| s.source == source)
        .unwrap_or_else(|| panic!("no source {source}"))
}

/// Wait until `done` holds, polling; panic with `what` after the guard.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "waited {GUARD:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same, for a condition that needs a request.
async fn until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < GUARD, "waited {GUARD:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `hearth relay` process of the built binary, to be killed with SIGKILL.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    sources: Vec<String>,
}

impl RelayProcess {
    fn start(dir: &Path, listen: &str, sources: &[String]) -> RelayProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("relay.log"))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hearth"));
        command
            .args(["relay", "--no-sync", "--listen", listen, "--data-dir"])
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for source in sources {
            command.args(["--source", source]);
        }
        let mut child = command.spawn().expect("hearth relay starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the relay says where it listens")
                .expect("stdout line");
            if let Some(url) = line.strip_prefix("hearth listening on http://") {
                break url.parse().expect("an address");
            }
        };
        // Keep reading, so the relay never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        RelayProcess {
            child,
            addr,
            dir: dir.to_path_buf(),
            sources: sources.to_vec(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, then start again on the same address and data directory.
    fn kill_and_restart(&mut self, pause: Duration) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        std::thread::sleep(pause);
        let started = RelayProcess::start(&self.dir, &self.addr.to_string(), &self.sources);
        let old = std::mem::replace(self, started);
        drop(old);
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `/relay/sources` of a relay over HTTP.
async fn sources_over_http(http: &reqwest::Client, url: &str) -> Option<Vec<serde_json::Value>> {
    let response = http.get(format!("{url}/relay/sources")).send().await.ok()?;
    serde_json::from_str(&response.text().await.ok()?).ok()
}

/// Every event a server serves, read from its `/firehose` from the start.
async fn firehose_all(http: &reqwest::Client, url: &str) -> Vec<Message> {
    let response = http
        .get(format!("{url}/firehose?lastSeq=0000000000000&live=false"))
        .send()
        .await
        .expect("firehose");
    assert_eq!(response.status(), StatusCode::OK);
    Sse::new(response).all_events().await
}

/// A PUT or DELETE that may fail (its server may be restarting): the test compares with
/// what the homeserver committed, not with what was asked.
async fn try_write(user: &User, rng: &mut Rng, i: u64) {
    let path = format!("/pub/app/{}.json", rng.below(20));
    let request = if rng.below(5) == 0 {
        user.request(Method::DELETE, &path)
    } else {
        user.request(Method::PUT, &path).body(format!("{i}"))
    };
    let _ = request.send().await;
}

/// A homeserver event as a relay must carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Carried {
    hs_seq: String,
    kind: String,
    uri: String,
    hash: Option<String>,
    ts: u64,
}

fn carried_from_homeserver(event: &Event) -> Carried {
    Carried {
        hs_seq: id::encode(event.seq),
        kind: event.kind.as_str().to_string(),
        uri: event.uri(),
        hash: event.hash.as_ref().map(hearth::log::hash_base64),
        ts: event.ts_ms,
    }
}

fn carried_from_relay(message: &Message) -> (String, Carried) {
    let json = message.json();
    let text = |name: &str| json[name].as_str().map(str::to_string);
    (
        text("hs").expect("a relayed event names its homeserver"),
        Carried {
            hs_seq: text("hs_seq").expect("and its id there"),
            kind: message.event.clone().expect("a kind"),
            uri: text("uri").expect("a uri"),
            hash: text("hash"),
            ts: json["ts"].as_u64().expect("a ts"),
        },
    )
}

/// What each homeserver committed, by its key.
fn committed(homeservers: &[TestServer]) -> BTreeMap<String, Vec<Carried>> {
    homeservers
        .iter()
        .map(|hs| {
            let events = hs.events().iter().map(carried_from_homeserver).collect();
            (hs.server.public_key().to_string(), events)
        })
        .collect()
}

/// Check a relay's whole log against what the homeservers committed: sequences 1..N without
/// a gap, and per homeserver exactly its events, in its order, each once.
fn check_merged(served: &[Message], expected: &BTreeMap<String, Vec<Carried>>) {
    let seqs: Vec<u64> = served.iter().map(Message::seq).collect();
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "relay sequences are 1..N"
    );
    let mut by_hs: BTreeMap<String, Vec<Carried>> = BTreeMap::new();
    for message in served {
        let (hs, carried) = carried_from_relay(message);
        by_hs.entry(hs).or_default().push(carried);
    }
    for (hs, events) in expected {
        let got = by_hs.remove(hs).unwrap_or_default();
        assert_eq!(got.len(), events.len(), "how many events of {hs}");
        assert_eq!(&got, events, "the events of {hs}, in its order");
    }
    assert!(by_hs.is_empty(), "events of unknown homeservers: {by_hs:?}");
}

/// Follow a relay's firehose from the start, resuming with `Last-Event-ID` whenever the
/// stream breaks, until `target` events were seen. Returns the ids seen and the number of
/// connections it took.
async fn resuming_client(
    http: reqwest::Client,
    url: String,
    mut target: watch::Receiver<Option<u64>>,
) -> (Vec<u64>, usize) {
    let mut seen: Vec<u64> = Vec::new();
    let mut connections = 0;
    let reached = |seen: &Vec<u64>, target: &Option<u64>| {
        target.is_some_and(|n| seen.last().copied().unwrap_or(0) >= n)
    };
    'connections: loop {
        if reached(&seen, &target.borrow()) {
            break;
        }
        let request = match seen.last() {
            Some(&seq) => http
                .get(format!("{url}/firehose"))
                .header("Last-Event-ID", id::encode(seq)),
            None => http.get(format!("{url}/firehose?lastSeq=0000000000000")),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                // The relay is down: it is being restarted.
                tokio::time::sleep(Duration::from_millis(30)).await;
                continue;
            }
        };
        assert_eq!(response.status(), StatusCode::OK, "resuming after {seen:?}");
        connections += 1;
        let mut sse = Sse::new(response);
        loop {
            let done = seen.clone();
            tokio::select! {
                message = sse.next_event_or_end() => match message {
                    Some(message) => seen.push(message.seq()),
                    None => continue 'connections,
                },
                _ = target.wait_for(|t| reached(&done, t)) => break 'connections,
            }
        }
    }
    (seen, connections)
}

// ---------------------------------------------------------------------------------------
// Kills

/// Three homeservers with concurrent writers, a relay process following them that is
/// SIGKILLed and restarted at random moments, one homeserver stopped and restarted, and a
/// client that follows the relay across all of it: the relay ends with every event once, in
/// each homeserver's order, sequences without a gap, and the client saw each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_at_random_moments_keeps_every_event_once_in_order() {
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let mut homeservers = vec![homeserver().await, homeserver().await, homeserver().await];
    let sources: Vec<String> = homeservers.iter().map(|hs| hs.server.url()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = {
        let (dir, sources) = (dir.path().to_path_buf(), sources.clone());
        tokio::task::spawn_blocking(move || RelayProcess::start(&dir, "127.0.0.1:0", &sources))
            .await
            .expect("relay process")
    };
    let url = relay.url();
    let http = reqwest::Client::new();

    let (target_tx, target) = watch::channel(None);
    let client = tokio::spawn(resuming_client(http.clone(), url.clone(), target));

    let mut writers = Vec::new();
    for (n, hs) in homeservers.iter().enumerate() {
        for w in 0..2u64 {
            let user = hs.signup().await;
            let mut rng = Rng(seed.wrapping_add(n as u64 * 31 + w) | 1);
            writers.push(tokio::spawn(async move {
                for i in 0..150 {
                    try_write(&user, &mut rng, i).await;
                    tokio::time::sleep(Duration::from_millis(rng.below(25))).await;
                }
            }));
        }
    }

    let mut kills = 0;
    for step in 0..6 {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(500))).await;
        let pause = Duration::from_millis(rng.below(200));
        relay = tokio::task::spawn_blocking(move || {
            relay.kill_and_restart(pause);
            relay
        })
        .await
        .expect("restart");
        kills += 1;
        if step == 2 {
            // A source stops (cleanly) and comes back on the same address.
            let hs = homeservers.remove(1);
            homeservers.insert(1, restart_in_place(hs).await);
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    // Everything committed reaches the relay: each source's cursor is its server's newest.
    let expected = committed(&homeservers);
    let newest: Vec<(String, String)> = homeservers
        .iter()
        .map(|hs| {
            (
                hs.server.url(),
                Id(hs.server.log().last_seq().expect("last seq")).to_string(),
            )
        })
        .collect();
    until_async("the relay to catch up with every homeserver", || async {
        let Some(sources) = sources_over_http(&http, &url).await else {
            return false;
        };
        newest.iter().all(|(source, last)| {
            sources.iter().any(|s| {
                s["source"] == source.as_str() && s["cursor"].as_str() == Some(last.as_str())
            })
        })
    })
    .await;
    let served = firehose_all(&http, &url).await;
    check_merged(&served, &expected);

    let total = served.len() as u64;
    target_tx.send(Some(total)).expect("client waiting");
    let (seen, connections) = tokio::time::timeout(GUARD, client)
        .await
        .expect("the client finishes")
        .expect("client task");
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "the client saw each event once, in order (seed {seed}, {kills} kills)"
    );
    assert!(
        connections >= 2,
        "the client resumed across kills: {connections}"
    );
}

// ---------------------------------------------------------------------------------------
// Diamond

/// R1 and R2 follow homeserver A; R3 follows R1 and R2. R1 is restarted while A is written,
/// so R3 reads A's events now from one, now from the other: it holds each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_of_relays_stores_each_event_once() {
    let seed = seed();
    println!("seed {seed}");
    let a = homeserver().await;
    let r1 = relay(&[a.server.url()]).await;
    let r2 = relay(&[a.server.url()]).await;
    let r3 = relay(&[r1.server.url(), r2.server.url()]).await;

    let mut writers = Vec::new();
    for w in 0..2u64 {
        let user = a.signup().await;
        let mut rng = Rng(seed.wrapping_add(w) | 1);
        writers.push(tokio::spawn(async move {
            for i in 0..120 {
                try_write(&user, &mut rng, i).await;
                tokio::time::sleep(Duration::from_millis(rng.below(6))).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r1 = restart_in_place(r1).await;
    for writer in writers {
        writer.await.expect("writer");
    }

    let expected = committed(std::slice::from_ref(&a));
    let count = expected.values().map(Vec::len).sum::<usize>() as u64;
    let last = |ts: &TestServer| ts.server.log().last_seq().expect("last seq");
    until("R1 and R2 to hold every event of A", || {
        last(&r1) == count && last(&r2) == count
    })
    .await;
    until("R3 to read R1 and R2 to their ends", || {
        let (c1, c2) = (Id(last(&r1)).to_string(), Id(last(&r2)).to_string());
        statuses(&r3).iter().all(|s| {
            s.cursor.as_deref()
                == Some(if s.source == r1.server.url() {
                    &c1
                } else {
                    &c2
                })
        })
    })
    .await;
    let served = firehose_all(&r3.http, &r3.server.url()).await;
    check_merged(&served, &expected);
    let sources = statuses(&r3);
    let stored: u64 = sources.iter().map(|s| s.ingested).sum();
    let duplicates: u64 = sources.iter().map(|s| s.duplicates).sum();
    assert_eq!(stored, count, "{sources:?}");
    assert_eq!(duplicates, count, "each event came twice: {sources:?}");
}

// ---------------------------------------------------------------------------------------
// Pubky sources

/// Which Pubky homeserver a test double answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// 0.5.4: 13-character timestamp cursors, `cursor=0` refused.
    V05,
    /// 0.17.1: decimal ids shared with private events, so public pages have gaps.
    V17,
}

/// (id as the server writes it, numeric id, line, public)
type FeedEvent = (String, u64, String, bool);

#[derive(Default)]
struct Feed {
    events: Vec<FeedEvent>,
    requests: u64,
    refused: u64,
    next: u64,
}

/// A server that speaks only Pubky's `/events/` page format (and `GET /`).
struct PubkyDouble {
    addr: SocketAddr,
    feed: Arc<Mutex<Feed>>,
    version: Version,
    user: String,
}

impl PubkyDouble {
    async fn start(version: Version) -> PubkyDouble {
        use axum::extract::{Query, State};
        use axum::routing::get;
        let feed = Arc::new(Mutex::new(Feed {
            next: match version {
                Version::V05 => 1_763_000_000_000_000,
                Version::V17 => 0,
            },
            ..Feed::default()
        }));
        let events = move |State(feed): State<Arc<Mutex<Feed>>>,
                           Query(query): Query<BTreeMap<String, String>>| async move {
            let mut feed = feed.lock().expect("feed");
            feed.requests += 1;
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<u16>().ok())
                .map_or(100, |l| usize::from(l.min(1000)));
            let cursor = query.get("cursor").filter(|c| !c.is_empty());
            let after: Box<dyn Fn(&FeedEvent) -> bool> = match (version, cursor) {
                (_, None) => Box::new(|_| true),
                (Version::V05, Some(c)) => {
                    if id::decode(c).is_err() {
                        feed.refused += 1;
                        return (
                            StatusCode::BAD_REQUEST,
                            "Cursor should be valid base32 Crockford encoding of a timestamp"
                                .to_string(),
                        );
                    }
                    let c = c.clone();
                    Box::new(move |e| e.0 > c)
                }
                (Version::V17, Some(c)) => match c.parse::<u64>() {
                    Ok(n) => Box::new(move |e| e.1 > n),
                    Err(_) => {
                        feed.refused += 1;
                        return (StatusCode::BAD_REQUEST, "Invalid cursor".to_string());
                    }
                },
            };
            let page: Vec<&FeedEvent> = feed
                .events
                .iter()
                .filter(|e| e.3 && after(e))
                .take(limit)
                .collect();
            let mut body: Vec<String> = page.iter().map(|e| e.2.clone()).collect();
            if let Some(last) = page.last() {
                body.push(format!("cursor: {}", last.0));
            }
            (StatusCode::OK, body.join("\n"))
        };
        let app = axum::Router::new()
            .route("/", get(|| async { "Pubky Homeserver" }))
            .route("/events/", get(events))
            .with_state(Arc::clone(&feed));
        // Pubky 0.17 routes every other path to a user's files, which need a tenant.
        let app = match version {
            Version::V17 => {
                app.fallback(|| async { (StatusCode::BAD_REQUEST, "Missing request tenant") })
            }
            Version::V05 => app,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        PubkyDouble {
            addr,
            feed,
            version,
            user: pubky_common::crypto::Keypair::random().public_key().z32(),
        }
    }

    /// Append `n` public events, with private events and unused ids between some of them.
    fn write(&self, n: usize, rng: &mut Rng) {
        let mut feed = self.feed.lock().expect("feed");
        let mut public = 0;
        while public < n {
            feed.next += match self.version {
                Version::V05 => 1 + rng.below(5_000),
                Version::V17 if rng.below(150) == 0 => 1 + rng.below(3),
                Version::V17 => 1,
            };
            let numeric = feed.next;
            let text = match self.version {
                Version::V05 => Id(numeric).to_string(),
                Version::V17 => numeric.to_string(),
            };
            let is_public = self.version == Version::V05 || rng.below(100) != 0;
            let kind = if rng.below(4) == 0 { "DEL" } else { "PUT" };
            let root = if is_public { "pub" } else { "priv" };
            let line = format!(
                "{kind} pubky://{}/{root}/app/{}.json",
                self.user,
                numeric % 97
            );
            feed.events.push((text, numeric, line, is_public));
            if is_public {
                public += 1;
            }
        }
    }

    /// The public events as a relay must carry them: (hs_seq, kind, uri).
    fn expected(&self) -> Vec<(String, String, String)> {
        let feed = self.feed.lock().expect("feed");
        feed.events
            .iter()
            .filter(|e| e.3)
            .map(|e| {
                let (kind, uri) = e.2.split_once(' ').expect("a line");
                (e.0.clone(), kind.to_string(), uri.to_string())
            })
            .collect()
    }

    fn spec(&self, key: &str) -> String {
        format!("{key}@pubky+http://{}", self.addr)
    }
}

/// What a relay holds of homeserver `hs`: (hs_seq, kind, uri), in its order.
fn relayed_of(relay: &TestServer, hs: &str) -> Vec<(String, String, String)> {
    relay
        .events()
        .into_iter()
        .filter_map(|e| {
            let origin = e.origin.clone().expect("relayed events have an origin");
            (origin.hs == hs).then(|| (origin.hs_seq, e.kind.as_str().to_string(), e.uri()))
        })
        .collect()
}

/// A Pubky 0.17 feed (decimal ids, gaps where private events are) and a Pubky 0.5 feed
/// (timestamp cursors), read through `/events/` pages: each public event stored once, with
/// its exact id, in order; then the events written later, too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubky_homeservers_are_followed_through_their_events_pages() {
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let v17 = PubkyDouble::start(Version::V17).await;
    let v05 = PubkyDouble::start(Version::V05).await;
    v17.write(2_300, &mut rng);
    v05.write(40, &mut rng);
    let (k17, k05) = (
        pubky_common::crypto::Keypair::random().public_key().z32(),
        pubky_common::crypto::Keypair::random().public_key().z32(),
    );
    let keyless = format!("pubky+http://{}", v05.addr);
    let relay = relay(&[v17.spec(&k17), v05.spec(&k05), keyless.clone()]).await;

    for round in 0..2 {
        let (want17, want05) = (v17.expected(), v05.expected());
        let (last17, last05) = (
            want17.last().map(|e| e.0.clone()),
            want05.last().map(|e| e.0.clone()),
        );
        until("the relay to read both feeds to their ends", || {
            status(&relay, &v17.spec(&k17)).cursor == last17
                && status(&relay, &v05.spec(&k05)).cursor == last05
        })
        .await;
        assert_eq!(relayed_of(&relay, &k17), want17, "0.17 feed, round {round}");
        assert_eq!(relayed_of(&relay, &k05), want05, "0.5 feed, round {round}");
        let s17 = status(&relay, &v17.spec(&k17));
        assert_eq!(
            (s17.state, s17.ingested, s17.skipped),
            (State::Following, want17.len() as u64, 0)
        );
        v17.write(150, &mut rng);
        v05.write(5, &mut rng);
    }
    {
        let feed17 = v17.feed.lock().expect("feed");
        let public17 = feed17.events.iter().filter(|e| e.3).count() as u64;
        assert!(
            feed17.requests < public17 / 4,
            "pages, not one request per event: {} requests for {public17} events",
            feed17.requests
        );
        assert_eq!(feed17.refused, 0);
    }
    assert_eq!(
        v05.feed.lock().expect("feed").refused,
        0,
        "cursor=0 never sent to 0.5"
    );

    // The key of a Pubky homeserver cannot be learnt from its URL.
    let keyless = status(&relay, &keyless);
    assert_eq!(keyless.state, State::Failed);
    assert!(
        keyless
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be learnt")),
        "{keyless:?}"
    );
    // The Pubky-compatible endpoints serve the merged log, and know its users.
    let response = relay
        .http
        .get(relay.url(&format!("/events-stream?user={}", v17.user)))
        .send()
        .await
        .expect("events-stream");
    assert_eq!(response.status(), StatusCode::OK);
    let stranger = pubky_common::crypto::Keypair::random().public_key().z32();
    let response = relay
        .http
        .get(relay.url(&format!("/events-stream?user={stranger}")))
        .send()
        .await
        .expect("events-stream");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Sources named by key

/// A Hearth homeserver publishing its record on the DHT at `bootstrap`: with an ICANN
/// endpoint (`localhost` and its HTTP port) or with its PubkyTLS endpoint only.
async fn findable_homeserver(bootstrap: &str, icann: bool) -> TestServer {
    TestServer::start_with(|config| {
        config.sync = false;
        config.tls_listen = Some("127.0.0.1:0".parse().expect("address"));
        config.pkarr_bootstrap = Some(vec![bootstrap.to_string()]);
        config.user_republish_secs = 0;
        if icann {
            config.icann_domain = Some("localhost".into());
        }
    })
    .await
}

/// Wait for a homeserver's first publish of its record.
async fn published(hs: &TestServer) {
    let mut published = hs.server.record_published().expect("a TLS listener");
    tokio::time::timeout(GUARD, published.wait_for(|count| count.published > 0))
        .await
        .expect("the record was never published")
        .expect("publisher running");
}

/// A homeserver's events as a relay must hold them: (hs_seq, kind, uri), in order.
fn committed_of(hs: &TestServer) -> Vec<(String, String, String)> {
    hs.events()
        .iter()
        .map(|e| (id::encode(e.seq), e.kind.as_str().to_string(), e.uri()))
        .collect()
}

/// Sources named only by their key, on a local DHT: a Hearth homeserver reached through its
/// ICANN endpoint, one reached over PubkyTLS, and a Pubky homeserver (the `/events/` double)
/// whose record names it at `localhost`; each homeserver's events reach the relay once, in
/// order, under its key. A key without a record is in backoff, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_named_by_key_are_found_through_their_pkarr_records() {
    use hearth::pkarr::{record::ServerRecord, testnet::Testnet, Keypair, Network};
    let dht = Testnet::start(0, 3).await.expect("a DHT testnet");
    let bootstrap = dht.bootstrap().to_string();
    let icann = findable_homeserver(&bootstrap, true).await;
    let tls = findable_homeserver(&bootstrap, false).await;
    let pubky = PubkyDouble::start(Version::V17).await;
    pubky.write(30, &mut Rng(seed()));
    let pubky_key = Keypair::random();
    let record = ServerRecord {
        public_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        tls_port: 1,
        http_port: pubky.addr.port(),
        icann_domain: Some("localhost".into()),
    };
    let pkarr = Network::testnet(std::slice::from_ref(&bootstrap))
        .client()
        .expect("pkarr client");
    let packet = record.sign(&pubky_key).expect("signed");
    let (double, (), ()) = tokio::join!(pkarr.publish(&packet), published(&icann), published(&tls));
    double.expect("the double's record published");
    let missing = Keypair::random().public_key().to_z32();

    let (icann_user, tls_user) = (icann.signup().await, tls.signup().await);
    write_n(&icann_user, 3, "before").await;
    write_n(&tls_user, 2, "before").await;
    let keys = [
        icann.server.public_key().to_string(),
        tls.server.public_key().to_string(),
        pubky_key.public_key().to_z32(),
        missing.clone(),
    ];
    let relay = relay_with(&keys, |config| {
        config.pkarr_bootstrap = Some(vec![bootstrap.clone()]);
    })
    .await;
    until("both homeservers followed", || {
        status(&relay, &keys[0]).state == State::Following
            && status(&relay, &keys[1]).state == State::Following
    })
    .await;
    write_n(&icann_user, 2, "live").await;
    write_n(&tls_user, 3, "live").await;

    let want = [committed_of(&icann), committed_of(&tls), pubky.expected()];
    until("every event of the three", || {
        want.iter()
            .zip(&keys)
            .all(|(want, key)| status(&relay, key).cursor == want.last().map(|e| e.0.clone()))
    })
    .await;
    for (want, key) in want.iter().zip(&keys) {
        assert_eq!(&relayed_of(&relay, key), want, "the events of {key}");
        let s = status(&relay, key);
        assert_eq!(s.hs.as_deref(), Some(key.as_str()));
        assert_eq!((s.ingested, s.skipped), (want.len() as u64, 0), "{s:?}");
    }
    let total: usize = want.iter().map(Vec::len).sum();
    assert_eq!(relay.events().len(), total, "each event stored once");

    // A key without a record: retried, with the reason on /relay/sources.
    let why = format!("no pkarr record for {missing}");
    until_async("the missing key in backoff, saying why", || async {
        let Some(listed) = sources_over_http(&relay.http, &relay.server.url()).await else {
            return false;
        };
        listed.iter().any(|s| {
            s["source"] == missing.as_str()
                && s["state"] == "backoff"
                && s["last_error"].as_str().is_some_and(|e| e.contains(&why))
        })
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Garbage, rewinds, sources that are down

/// What a Hearth-like test server sends on `/firehose`.
#[derive(Clone, Copy)]
enum Noise {
    /// A few good events among bad ones, then an open, quiet stream.
    Garbage,
    /// Bytes that never end a message.
    Endless,
}

async fn noise_source(noise: Noise, key: &str) -> SocketAddr {
    use axum::body::Body;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use futures_util::StreamExt;
    let user = key.to_string();
    let frames = move |last: Option<u64>| -> Vec<String> {
        let event = |id: u64, data: String| format!("id: {}\nevent: PUT\ndata: {data}\n\n", Id(id));
        let good = |id: u64| {
            event(
                id,
                format!(r#"{{"user":"{user}","path":"/pub/ok/{id}","size":1,"ts":{id}}}"#),
            )
        };
        let all = vec![
            (0, "retry: 2000\n\n".to_string()),
            (1, good(1)),
            (2, event(2, "{not json".into())),
            (3, event(3, r#"{"user":"nobody","path":"/pub/x"}"#.into())),
            (
                4,
                event(4, format!(r#"{{"user":"{user}","path":"/priv/x"}}"#)),
            ),
            (4, "event: PUT\ndata: {}\n\n".to_string()),
            (5, good(5)),
            (5, good(5)),
        ];
        all.into_iter()
            .filter(|(id, _)| *id == 0 || last.is_none_or(|last| *id > last))
            .map(|(_, frame)| frame)
            .collect()
    };
    let firehose = move |headers: HeaderMap, uri: axum::http::Uri| async move {
        if uri.query().is_some_and(|q| q.contains("live=false")) {
            return (
                StatusCode::BAD_REQUEST,
                "event id FZZZZZZZZZZZZ is ahead of the newest event, 0000000000005".to_string(),
            )
                .into_response();
        }
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| id::decode(v).ok())
            .filter(|&v| v > 0);
        let body = match noise {
            Noise::Garbage => {
                let chunks = frames(last).into_iter().map(Ok::<_, std::io::Error>);
                Body::from_stream(
                    futures_util::stream::iter(chunks).chain(futures_util::stream::pending()),
                )
            }
            Noise::Endless => {
                let chunk = "x".repeat(64 << 10);
                Body::from_stream(futures_util::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                }))
            }
        };
        (StatusCode::OK, body).into_response()
    };
    let key = key.to_string();
    let app = axum::Router::new()
        .route("/", get(move || async move { format!("{key}\n") }))
        .route("/firehose", get(firehose));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

async fn write_n(user: &User, n: u64, tag: &str) {
    for i in 0..n {
        let response = user.put(&format!("/pub/{tag}/{i}"), "x").await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

/// A source that sends garbage has its bad events skipped and counted; one that sends no
/// messages at all, one that is down, and one that rewinds are each in backoff with a reason;
/// and none of them holds up a healthy source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_are_contained_and_say_why() {
    let garbage_key = pubky_common::crypto::Keypair::random().public_key().z32();
    let garbage = format!(
        "http://{}",
        noise_source(Noise::Garbage, &garbage_key).await
    );
    let endless = format!(
        "http://{}",
        noise_source(Noise::Endless, &garbage_key).await
    );
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let mut b = homeserver().await;
    let c = homeserver().await;
    let b_user = b.signup().await;
    let c_user = c.signup().await;
    write_n(&b_user, 4, "b1").await;
    // B's state with 5 events (the signup makes none), kept to restore it later.
    write_n(&b_user, 1, "b2").await;
    b = restart_in_place(b).await;
    let backup = tempfile::tempdir().expect("temp dir");
    copy_dir(b.dir.path(), backup.path());
    write_n(&b_user, 5, "b3").await;
    write_n(&c_user, 3, "c1").await;

    let (b_url, c_url) = (b.server.url(), c.server.url());
    let relay = relay(&[
        garbage.clone(),
        endless.clone(),
        down.clone(),
        b_url.clone(),
        c_url.clone(),
    ])
    .await;
    until("B and C read, the garbage source read to its end", || {
        status(&relay, &b_url).cursor.as_deref() == Some("000000000000A")
            && status(&relay, &c_url).cursor.as_deref() == Some("0000000000003")
            && status(&relay, &garbage).cursor.as_deref() == Some("0000000000005")
    })
    .await;
    let g = status(&relay, &garbage);
    assert_eq!(
        (g.state, g.ingested, g.skipped),
        (State::Following, 2, 5),
        "{g:?}"
    );
    let from_garbage: Vec<String> = relay
        .events()
        .iter()
        .filter(|e| e.origin.as_ref().is_some_and(|o| o.hs == garbage_key))
        .map(|e| e.path().to_string())
        .collect();
    assert_eq!(from_garbage, vec!["/pub/ok/1", "/pub/ok/5"]);
    until(
        "the endless and the down source to back off with a reason",
        || {
            [(&endless, "not an event stream"), (&down, "onnect")]
                .iter()
                .all(|(source, why)| {
                    let s = status(&relay, source);
                    s.state == State::Backoff
                        && s.last_error.as_deref().is_some_and(|e| e.contains(why))
                })
        },
    )
    .await;

    // B rewinds: restored to its older state behind the same address.
    let b_dir = b.dir.path().to_path_buf();
    let TestServer {
        server,
        dir,
        mut config,
        http,
    } = b;
    config.listen = server.addr();
    server.shutdown();
    server.stopped().await.expect("B stops");
    std::fs::remove_dir_all(b_dir.join("lmdb")).expect("remove");
    copy_dir(&backup.path().join("lmdb"), &b_dir.join("lmdb"));
    let server = Server::start(config.clone()).await.expect("B restarts");
    let _b = TestServer {
        server,
        dir,
        config,
        http,
    };
    until("B's rewind to be seen", || {
        let s = status(&relay, &b_url);
        s.state == State::Backoff
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("rewound"))
    })
    .await;
    // C goes on meanwhile, and B's cursor stays where its log ends.
    write_n(&c_user, 3, "c2").await;
    until("C's new events", || {
        status(&relay, &c_url).cursor.as_deref() == Some("0000000000006")
    })
    .await;
    let b_status = status(&relay, &b_url);
    assert_eq!(
        (b_status.cursor.as_deref(), b_status.ingested),
        (Some("000000000000A"), 10)
    );
    assert_eq!(relay.events().len(), 2 + 10 + 6);
}

// ---------------------------------------------------------------------------------------
// Admin API and routes

/// Sources added and removed at run time on the admin listener, remembered across a
/// restart; the relay's public routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_added_and_removed_at_run_time() {
    let a = homeserver().await;
    let user = a.signup().await;
    write_n(&user, 3, "a").await;
    let relay = relay(&[]).await;
    let admin = relay.admin_url();
    let http = &relay.http;
    let source = a.server.url();
    let add = || {
        http.post(format!("{admin}/relay/sources"))
            .header("x-admin-password", ADMIN_PASSWORD)
            .body(source.clone())
            .send()
    };
    let remove = |query: String| {
        http.delete(format!("{admin}/relay/sources?{query}"))
            .header("x-admin-password", ADMIN_PASSWORD)
            .send()
    };
    let refused = http
        .post(format!("{admin}/relay/sources"))
        .body(source.clone())
        .send()
        .await
        .expect("add");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let bad = http
        .post(format!("{admin}/relay/sources"))
        .header("x-admin-password", ADMIN_PASSWORD)
        .body("ftp://nowhere")
        .send()
        .await
        .expect("add");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.expect("body").contains("scheme"));

    assert_eq!(add().await.expect("add").status(), StatusCode::CREATED);
    assert_eq!(add().await.expect("add").status(), StatusCode::OK);
    until("A read", || status(&relay, &source).ingested == 3).await;
    let query = format!("source={}", urlencode(&source));
    assert_eq!(
        remove(query.clone()).await.expect("remove").status(),
        StatusCode::OK
    );
    assert!(statuses(&relay).is_empty());
    assert_eq!(
        remove(query.clone()).await.expect("remove").status(),
        StatusCode::NOT_FOUND
    );

    // Added again, it resumes where it stopped; and it is followed again after a restart.
    write_n(&user, 2, "b").await;
    assert_eq!(add().await.expect("add").status(), StatusCode::CREATED);
    until("A read again", || status(&relay, &source).ingested == 5).await;
    let relay = restart_in_place(relay).await;
    until("A followed after a restart", || {
        statuses(&relay)
            .iter()
            .any(|s| s.source == source && s.state == State::Following)
    })
    .await;
    assert_eq!(relay.events().len(), 5, "no event stored twice");
    let listed = sources_over_http(&relay.http, &relay.server.url())
        .await
        .expect("GET /relay/sources");
    assert_eq!(listed.len(), 1);
    for field in [
        "source",
        "hs",
        "state",
        "cursor",
        "ingested",
        "skipped",
        "lag",
        "last_error",
    ] {
        assert!(listed[0].get(field).is_some(), "{field} in {listed:?}");
    }
    assert_eq!(listed[0]["hs"], a.server.public_key());
    assert_eq!(listed[0]["cursor"], "0000000000005");

    // Forgotten, it starts over from A's first event: each one a duplicate now.
    let admin = relay.admin_url();
    let forget = relay
        .http
        .delete(format!("{admin}/relay/sources?{query}&forget=true"))
        .header("x-admin-password", ADMIN_PASSWORD)
        .send()
        .await
        .expect("remove");
    assert_eq!(forget.status(), StatusCode::OK);
    let added = relay
        .http
        .post(format!("{admin}/relay/sources"))
        .header("x-admin-password", ADMIN_PASSWORD)
        .body(source.clone())
        .send()
        .await
        .expect("add");
    assert_eq!(added.status(), StatusCode::CREATED);
    until("A read from its start", || {
        status(&relay, &source).duplicates == 5
    })
    .await;
    assert_eq!(relay.events().len(), 5);

    // A relay has no files and no accounts; its root answers its key.
    for (method, path) in [
        (Method::PUT, "/pub/x"),
        (Method::GET, "/pub/x"),
        (Method::POST, "/signup"),
        (Method::GET, "/session"),
    ] {
        let response = relay
            .http
            .request(method.clone(), relay.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert!(response.text().await.expect("body").contains("relay"));
    }
    let root = relay.http.get(relay.url("/")).send().await.expect("root");
    assert_eq!(
        root.text().await.expect("body").trim(),
        relay.server.public_key()
    );
}

/// A relay's listeners are built as a homeserver's: its admin listener has the status page,
/// login, `/info` (with its sources) and the password guard on every admin call; both answer
/// a refused method with a body and `Allow`; the public one has the configured rate limits;
/// and its metrics listener reports each source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_listeners_are_built_like_a_homeservers() {
    use hearth::http::rate_limit::{LimitKey, RateLimitRule};
    let a = homeserver().await;
    let user = a.signup().await;
    write_n(&user, 4, "a").await;
    let source = a.server.url();
    let relay = relay_with(std::slice::from_ref(&source), |config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        config.rate_limits = vec![RateLimitRule {
            path: "/events/".into(),
            method: "GET".into(),
            quota: "1r/m".into(),
            key: LimitKey::Ip,
            burst: None,
            whitelist: Vec::new(),
        }];
    })
    .await;
    until("A read", || status(&relay, &source).ingested == 4).await;
    let (admin, http) = (relay.admin_url(), &relay.http);

    // Every admin call needs the password; the page and the login form do not.
    for (method, path) in [
        (Method::GET, "/info"),
        (Method::GET, "/relay/sources"),
        (Method::POST, "/relay/sources"),
        (Method::DELETE, "/relay/sources"),
    ] {
        let refused = http
            .request(method.clone(), format!("{admin}{path}"))
            .body(source.clone())
            .send()
            .await
            .expect("admin call");
        assert_eq!(
            refused.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert!(!refused.text().await.expect("body").is_empty());
    }
    // User routes are a homeserver's only.
    let users = http
        .get(format!("{admin}/users"))
        .header("x-admin-password", ADMIN_PASSWORD)
        .send()
        .await
        .expect("users");
    assert_eq!(users.status(), StatusCode::NOT_FOUND);
    let page = http.get(format!("{admin}/")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.expect("page body");
    assert!(
        page.contains("\"relay\":true"),
        "the page knows it is a relay"
    );
    let info: serde_json::Value = http
        .get(format!("{admin}/info"))
        .header("x-admin-password", ADMIN_PASSWORD)
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("info JSON");
    assert_eq!(info["public_key"], relay.server.public_key());
    let listed = info["relay_sources"].as_array().expect("relay_sources");
    assert_eq!(listed.len(), 1, "{info}");
    assert_eq!(listed[0]["source"], source.as_str());
    assert_eq!(listed[0]["hs"], a.server.public_key());
    assert_eq!(listed[0]["ingested"], 4);
    assert!(
        info.get("num_users").is_none(),
        "a relay has no users: {info}"
    );

    // The page's login: its cookie opens the admin calls, as the page makes them.
    let cookie = common::admin_login(&admin).await;
    let sources = http
        .get(format!("{admin}/relay/sources"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("sources");
    assert_eq!(sources.status(), StatusCode::OK);

    // A refused method is explained, on both listeners.
    for (method, url) in [
        (Method::POST, relay.url("/firehose")),
        (Method::PUT, format!("{admin}/relay/sources")),
    ] {
        let response = http
            .request(method.clone(), &url)
            .header("x-admin-password", ADMIN_PASSWORD)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url}"
        );
        let allow = response.headers().get("allow").cloned().expect("Allow");
        assert!(allow.to_str().expect("Allow").contains("GET"), "{allow:?}");
        let body = response.text().await.expect("body");
        assert!(body.contains("not allowed"), "{method} {url}: {body:?}");
    }

    // The configured rate limits hold on a relay's public listener.
    let events = || http.get(relay.url("/events/")).send();
    assert_eq!(events().await.expect("events").status(), StatusCode::OK);
    let limited = events().await.expect("events");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));

    // Metrics: each source's state, lag and counts, and the relay's requests by route.
    let scrape = metrics::scrape(http, relay.server.metrics_addr().expect("metrics")).await;
    let of_source = [("source", source.as_str())];
    assert_eq!(
        scrape.value(
            "hearth_relay_source_state",
            &[("source", source.as_str()), ("state", "following")]
        ),
        Some(1.0),
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value(
            "hearth_relay_source_state",
            &[("source", source.as_str()), ("state", "backoff")]
        ),
        Some(0.0)
    );
    assert_eq!(
        scrape.value("hearth_relay_source_ingested_total", &of_source),
        Some(4.0)
    );
    assert_eq!(
        scrape.value("hearth_relay_source_skipped_total", &of_source),
        Some(0.0)
    );
    assert_eq!(
        scrape.value("hearth_relay_source_lag_events", &of_source),
        Some(0.0)
    );
    assert!(
        scrape
            .value(
                "hearth_http_requests_total",
                &[
                    ("listener", "http"),
                    ("route", "/events/"),
                    ("status", "429")
                ]
            )
            .is_some_and(|n| n >= 1.0),
        "the relay's requests are counted"
    );
    assert!(
        scrape
            .value(
                "hearth_http_requests_total",
                &[("listener", "admin"), ("route", "/info")]
            )
            .is_some_and(|n| n >= 1.0),
        "and its admin requests"
    );
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
