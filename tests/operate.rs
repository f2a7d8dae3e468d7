//! Running a server: rate limits answered with 429, the metrics listener read by a Prometheus
//! text parser, and retention trimming the log (by count and by age) with 410 for trimmed ids.

mod common;
#[path = "common/metrics.rs"]
mod metrics;

use std::time::{Duration, Instant};

use common::TestServer;
use hearth::http::rate_limit::{LimitKey, RateLimitRule};
use hearth::ids;
use hearth::log::{Event, EventKind, EventLog, Op, WriteTxn, Writer};
use hearth::store::{Store, StoreError, StoreOptions};
use reqwest::{Method, StatusCode};

/// Wait (with a deadline, so a broken server fails instead of hanging) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rule(path: &str, method: &str, quota: &str, key: LimitKey) -> RateLimitRule {
    RateLimitRule {
        path: path.into(),
        method: method.into(),
        quota: quota.into(),
        key,
        burst: None,
        whitelist: Vec::new(),
    }
}

#[tokio::test]
async fn a_rate_limited_path_answers_429_past_its_quota() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = vec![
            rule("/pub/**", "PUT", "2r/m", LimitKey::User),
            rule("/pub/limited/*", "GET", "1r/h", LimitKey::Ip),
        ];
    })
    .await;
    let alice = server.signup().await;
    let bob = server.signup().await;
    assert_eq!(alice.put("/pub/a", "1").await.status(), StatusCode::CREATED);
    assert_eq!(alice.put("/pub/b", "2").await.status(), StatusCode::CREATED);
    let before = server.events().len();
    let refused = alice.put("/pub/c", "3").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.text().await.unwrap().trim(), "Rate limit exceeded");
    assert_eq!(
        server.events().len(),
        before,
        "a refused write changes nothing"
    );
    // The quota is the user's (the tenant's), not the connection's.
    assert_eq!(bob.put("/pub/a", "1").await.status(), StatusCode::CREATED);
    // GETs are another rule: one an hour per client address, only under /pub/limited/.
    assert_eq!(alice.get("/pub/a").await.status(), StatusCode::OK);
    assert_eq!(alice.get("/pub/a").await.status(), StatusCode::OK);
    assert_eq!(
        alice.put("/pub/limited/x", "x").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        bob.put("/pub/limited/x", "x").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        alice.get("/pub/limited/x").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.get("/pub/limited/x").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same client address, whichever tenant"
    );
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let limited = vec![rule("/pub/**", "GET", "1r/h", LimitKey::Ip)];
    let direct = TestServer::start_with(|c| c.rate_limits = limited.clone()).await;
    let user = direct.signup().await;
    let get = |server: &TestServer, client: &str| {
        server
            .http
            .get(server.url("/pub/x"))
            .header("pubky-host", &user.z32)
            .header("x-forwarded-for", client)
            .send()
    };
    assert_eq!(
        get(&direct, "203.0.113.1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&direct, "203.0.113.2").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "without a trusted proxy the header is ignored: one client"
    );

    let proxied = TestServer::start_with(|c| {
        c.rate_limits = limited;
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let user = proxied.signup().await;
    let get = |client: &str| {
        proxied
            .http
            .get(proxied.url("/pub/x"))
            .header("pubky-host", &user.z32)
            .header("x-forwarded-for", client)
            .send()
    };
    assert_eq!(
        get("203.0.113.1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("203.0.113.2").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("203.0.113.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = TestServer::start_with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let user = server.signup().await;
    for i in 0..5 {
        assert_eq!(
            user.put(&format!("/pub/m/{i}"), vec![1u8; 100])
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    // An open stream and a delivered event.
    let mut stream = server
        .http
        .get(server.url("/firehose?lastSeq=0000000000000"))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap();
    assert!(first.is_some());
    let metrics = server.server.metrics_addr().expect("a metrics listener");
    let scrape = metrics::scrape(&server.http, metrics).await;
    let value = |name: &str, label: Option<(&str, &str)>| scrape.value(name, label.as_slice());
    // The recorder is shared by every server of this process: at least ours.
    let puts = value("hearth_http_requests_total", Some(("route", "/pub/*path")))
        .expect("requests by route");
    assert!(puts >= 5.0, "{puts}");
    assert!(value("hearth_put_bytes_total", None).unwrap_or(0.0) >= 500.0);
    assert!(value("hearth_commits_total", None).unwrap_or(0.0) >= 5.0);
    assert_eq!(
        value("hearth_log_head_seq", None),
        Some(server.server.log().last_seq().unwrap() as f64)
    );
    assert!(value("hearth_lmdb_map_size_bytes", None).unwrap() > 0.0);
    assert!(value("hearth_lmdb_map_used_bytes", None).unwrap() > 0.0);
    assert!(value("hearth_event_streams", None).unwrap() >= 1.0);
    let histogram = scrape
        .parsed
        .samples
        .iter()
        .find(|s| s.metric == "hearth_http_request_duration_seconds")
        .expect("a latency histogram");
    assert!(
        matches!(histogram.value, prometheus_parse::Value::Histogram(_)),
        "{:?}",
        histogram.value
    );
    assert!(scrape
        .text
        .contains("hearth_commit_duration_seconds_bucket"));
    drop(stream);
}

#[tokio::test]
async fn retention_by_count_trims_the_oldest_and_answers_410_for_them() {
    let server = TestServer::start_with(|c| c.retain_events = Some(3)).await;
    let user = server.signup().await;
    for i in 0..10 {
        assert_eq!(
            user.put(&format!("/pub/r/{i}"), "x").await.status(),
            StatusCode::CREATED
        );
    }
    let log = server.server.log().clone();
    eventually("the log keeps the newest 3", || {
        log.first_seq().unwrap() == Some(8)
    })
    .await;
    assert_eq!(log.last_seq().unwrap(), 10);
    assert_eq!(log.count().unwrap(), 3);
    let gone = server
        .http
        .get(server.url(&format!("/firehose?lastSeq={}", ids::encode(5))))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    let body = gone.text().await.unwrap();
    assert!(
        body.contains(&ids::encode(8)),
        "names the oldest retained: {body}"
    );
    let kept = server
        .http
        .get(server.url(&format!("/firehose?lastSeq={}&live=false", ids::encode(7))))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    let text = kept.text().await.unwrap();
    let replayed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(
        replayed,
        vec![ids::encode(8), ids::encode(9), ids::encode(10)]
    );
    // The files themselves stay: retention bounds the log, not the data.
    assert_eq!(user.get("/pub/r/0").await.status(), StatusCode::OK);
    let mine = user
        .request(
            Method::GET,
            &format!("/events-stream?user={}&live=false", user.z32),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    let text = mine.text().await.unwrap();
    assert_eq!(
        text.matches("event: PUT").count(),
        3,
        "the index was trimmed too"
    );
}

/// Appends events committed `age_ms` ago: the log as an older server left it.
struct OldEvents {
    user: String,
    count: usize,
    age_ms: u64,
}

impl Op for OldEvents {
    type Output = ();
    type Error = StoreError;

    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<(), StoreError> {
        let ts_ms = txn.ts_ms() - self.age_ms;
        for i in 0..self.count {
            txn.append(Event {
                seq: 0,
                kind: EventKind::Del,
                key: format!("{}/pub/old/{i}", self.user),
                ts_ms,
                hash: None,
                size: None,
                origin: None,
            })?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn retention_by_age_trims_events_older_than_the_days_kept() {
    let dir = tempfile::tempdir().unwrap();
    let user = pubky_common::crypto::Keypair::random().public_key().z32();
    {
        let options = StoreOptions {
            map_size: 64 << 20,
            sync: false,
        };
        let store = Store::open(dir.path(), &options, hearth::migrations::ALL).unwrap();
        let log = EventLog::open(&store).unwrap();
        let (writer, thread) = Writer::start(&store, log, std::sync::Arc::new(|_| {})).unwrap();
        let three_days = 3 * 86_400_000;
        writer
            .submit(OldEvents {
                user: user.clone(),
                count: 1500,
                age_ms: three_days,
            })
            .await
            .unwrap();
        writer
            .submit(OldEvents {
                user: user.clone(),
                count: 4,
                age_ms: 0,
            })
            .await
            .unwrap();
        drop(writer);
        thread.join();
        store.close();
    }
    let mut config = hearth::config::Config::ephemeral(dir.path());
    config.retain_days = Some(1.0);
    let server = hearth::server::Server::start(config).await.unwrap();
    let log = server.log().clone();
    eventually("events older than a day are gone", || {
        log.first_seq().unwrap() == Some(1501)
    })
    .await;
    assert_eq!(
        log.count().unwrap(),
        4,
        "the recent ones stay (trimmed in batches of 1000)"
    );
    let http = reqwest::Client::new();
    let gone = http
        .get(format!(
            "{}/firehose?lastSeq={}",
            server.url(),
            ids::encode(10)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    // The store closes once every handle is gone, this one included.
    drop(log);
    server.shutdown();
    server.stopped().await.unwrap();
}
