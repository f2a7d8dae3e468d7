//! The homeserver core against a real server: the README walk-through, the bad-input table,
//! concurrent writers and restarts.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{raw_request, sign_token, TestServer, User};
use hearth::log::{hash_base64, EventKind};
use pubky_common::crypto::Keypair;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn walkthrough_signup_put_get_list_delete() {
    let hs = TestServer::start().await;
    let root = hs.http.get(hs.url("/")).send().await.unwrap();
    assert_eq!(root.text().await.unwrap().trim(), hs.server.public_key());

    let alice = hs.signup().await;
    let body = br#"{"name":"alice"}"#.to_vec();
    let put = alice.put("/pub/app/profile.json", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);

    let got = alice.get("/pub/app/profile.json").await;
    assert_eq!(got.status(), StatusCode::OK);
    let headers = got.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", hash_base64(blake3::hash(&body).as_bytes()))
    );
    assert!(headers.contains_key("last-modified"));
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    // Conditional GETs.
    let cached = alice
        .request(Method::GET, "/pub/app/profile.json")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let since = headers["last-modified"].to_str().unwrap().to_string();
    let cached = alice
        .request(Method::GET, "/pub/app/profile.json")
        .header("if-modified-since", &since)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let stale = alice
        .request(Method::GET, "/pub/app/profile.json")
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    let head = alice
        .request(Method::HEAD, "/pub/app/profile.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);

    // Reads are public: no session needed.
    let anonymous = User {
        cookie: None,
        ..alice.clone()
    };
    assert_eq!(
        anonymous.get("/pub/app/profile.json").await.status(),
        StatusCode::OK
    );

    for name in ["a.txt", "b.txt", "c/d.txt", "c/e.txt"] {
        let path = format!("/pub/app/{name}");
        assert_eq!(alice.put(&path, "x").await.status(), StatusCode::CREATED);
    }
    let uri = |p: &str| format!("pubky://{}/pub/app/{p}", alice.z32);
    assert_eq!(
        alice.list("/pub/app/").await,
        vec![
            uri("a.txt"),
            uri("b.txt"),
            uri("c/d.txt"),
            uri("c/e.txt"),
            uri("profile.json")
        ]
    );
    assert_eq!(
        alice.list("/pub/app/?shallow").await,
        vec![uri("a.txt"), uri("b.txt"), uri("c/"), uri("profile.json")]
    );
    assert_eq!(
        alice.list("/pub/app/?reverse=true&limit=2").await,
        vec![uri("profile.json"), uri("c/e.txt")]
    );
    let after = uri("b.txt");
    assert_eq!(
        alice
            .list(&format!("/pub/app/?limit=2&cursor={after}"))
            .await,
        vec![uri("c/d.txt"), uri("c/e.txt")]
    );
    assert_eq!(
        alice
            .list(&format!("/pub/app/?shallow&cursor={}", uri("c/")))
            .await,
        vec![uri("profile.json")]
    );

    assert_eq!(
        alice.delete("/pub/app/profile.json").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        alice.get("/pub/app/profile.json").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice.delete("/pub/app/profile.json").await.status(),
        StatusCode::NOT_FOUND
    );

    // The event log holds exactly the committed changes, in order.
    let events = hs.events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.seq, e.kind, e.path().to_string()))
        .collect();
    assert_eq!(kinds.len(), 6);
    assert_eq!(
        kinds[0],
        (1, EventKind::Put, "/pub/app/profile.json".into())
    );
    assert_eq!(
        kinds[5],
        (6, EventKind::Del, "/pub/app/profile.json".into())
    );
    let first = &events[0];
    assert_eq!(first.size, Some(body.len() as u64));
    assert_eq!(first.hash, Some(*blake3::hash(&body).as_bytes()));

    // Sessions: read, sign out, sign in again.
    let session = alice.request(Method::GET, "/session").send().await.unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    let record =
        pubky_common::session::CookieSessionRecord::deserialize(&session.bytes().await.unwrap())
            .unwrap();
    assert_eq!(record.public_key().z32(), alice.z32);
    let out = alice
        .request(Method::DELETE, "/session")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(
        alice.put("/pub/app/after-signout", "x").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let signin = hs
        .http
        .post(hs.url("/session"))
        .body(sign_token(&alice.keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), StatusCode::OK);
    let alice = User {
        cookie: common::session_cookie(signin.headers()),
        ..alice
    };
    assert_eq!(
        alice.put("/pub/app/after-signin", "x").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn large_files_stream_in_and_out_intact() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    // Several chunks, and past the in-memory spool limit.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        alice.put("/pub/big.bin", body.clone()).await.status(),
        StatusCode::CREATED
    );
    let got = alice.get("/pub/big.bin").await;
    assert_eq!(got.headers()["content-length"], "3000000");
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());
    // Overwritten by a small file: the old chunks are gone, the new content is served.
    assert_eq!(
        alice.put("/pub/big.bin", "small").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        alice.get("/pub/big.bin").await.text().await.unwrap(),
        "small"
    );
}

/// What a bad request must leave untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: Vec<String>,
    events: Vec<(u64, String)>,
    last_seq: u64,
}

async fn snapshot(hs: &TestServer, users: &[&User]) -> Snapshot {
    let mut files = Vec::new();
    for user in users {
        files.extend(user.list("/pub/?limit=1000").await);
        for line in user.list("/pub/?limit=1000").await {
            let path = line
                .split_once("/pub/")
                .map(|(_, p)| format!("/pub/{p}"))
                .unwrap();
            let body = user.get(&path).await.bytes().await.unwrap();
            files.push(format!("{path}:{}", blake3::hash(&body)));
        }
    }
    Snapshot {
        files,
        events: hs.events().iter().map(|e| (e.seq, e.key.clone())).collect(),
        last_seq: hs.server.log().last_seq().unwrap(),
    }
}

/// A token signed now with a timestamp moved by `shift_secs`.
fn token_at(keypair: &Keypair, shift_secs: i64) -> Vec<u8> {
    let mut bytes = sign_token(keypair, "/pub/:rw");
    let ts = u64::from_be_bytes(bytes[75..83].try_into().unwrap());
    let moved = (ts as i64 + shift_secs * 1_000_000) as u64;
    bytes[75..83].copy_from_slice(&moved.to_be_bytes());
    let signature = keypair.sign(&bytes[65..]);
    bytes[..64].copy_from_slice(&signature.to_bytes());
    bytes
}

#[tokio::test]
async fn bad_inputs_get_a_4xx_with_a_message_and_change_nothing() {
    let hs = TestServer::start_with(|c| {
        c.quota_bytes = Some(6000);
        c.max_body_bytes = 4096;
    })
    .await;
    let alice = hs.signup().await;
    let bob = hs.signup().await;
    let narrow = hs.signup_with_caps("/pub/only/:rw").await;
    let reader = hs.signup_with_caps("/pub/:r").await;
    assert_eq!(
        alice.put("/pub/app/a.txt", vec![1u8; 4000]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        bob.put("/pub/app/b.txt", "bob").await.status(),
        StatusCode::CREATED
    );
    let addr = hs.server.addr();
    let alice_cookie = alice.cookie.clone().unwrap();
    let bob_cookie = bob.cookie.clone().unwrap();
    let as_alice = [
        ("pubky-host", alice.z32.as_str()),
        ("cookie", alice_cookie.as_str()),
    ];
    let before = snapshot(&hs, &[&alice, &bob]).await;

    let long_segment = format!("/pub/{}", "s".repeat(256));
    let long_path = format!("/pub/{}", "abcdefgh/".repeat(460));
    let used_token = sign_token(&alice.keypair, "/pub/:rw");
    // Spend it once (a sign-in), so that the rows below replay it.
    let spent = hs
        .http
        .post(hs.url("/session"))
        .body(used_token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), StatusCode::OK);
    let mut forged = sign_token(&Keypair::random(), "/pub/:rw");
    forged[10] ^= 0xFF;
    let expired = token_at(&Keypair::random(), -600);
    let future = token_at(&Keypair::random(), 600);

    type Row<'a> = (
        &'a str,
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
    );
    let rows: Vec<Row> = vec![
        (
            "path traversal",
            "PUT",
            "/pub/../../etc/passwd".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "encoded traversal",
            "PUT",
            "/pub/%2e%2e/%2e%2e/x".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "empty last segment",
            "PUT",
            "/pub/app/".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "over-long segment",
            "PUT",
            long_segment.clone(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "over-long path",
            "PUT",
            long_path.clone(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "control character",
            "PUT",
            "/pub/a%01b".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "newline",
            "PUT",
            "/pub/a%0Ab".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "outside /pub/",
            "PUT",
            "/priv/secret".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "root",
            "PUT",
            "/x".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            400,
        ),
        (
            "delete outside /pub/",
            "DELETE",
            "/etc/passwd".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "no session",
            "PUT",
            "/pub/app/x".into(),
            vec![("pubky-host", alice.z32.as_str())],
            b"x".to_vec(),
            401,
        ),
        (
            "another user's session",
            "PUT",
            "/pub/app/x".into(),
            vec![
                ("pubky-host", alice.z32.as_str()),
                ("cookie", bob_cookie.as_str()),
            ],
            b"x".to_vec(),
            401,
        ),
        (
            "another user's secret under this name",
            "PUT",
            "/pub/app/x".into(),
            vec![
                ("pubky-host", alice.z32.as_str()),
                (
                    "cookie",
                    &*Box::leak(
                        format!("{}={}", alice.z32, bob_cookie.split_once('=').unwrap().1)
                            .into_boxed_str(),
                    ),
                ),
            ],
            b"x".to_vec(),
            403,
        ),
        (
            "unknown session secret",
            "PUT",
            "/pub/app/x".into(),
            vec![
                ("pubky-host", alice.z32.as_str()),
                (
                    "cookie",
                    &*Box::leak(format!("{}=NOPE", alice.z32).into_boxed_str()),
                ),
            ],
            b"x".to_vec(),
            401,
        ),
        (
            "capability does not cover the path",
            "PUT",
            "/pub/other/x".into(),
            vec![
                ("pubky-host", narrow.z32.as_str()),
                ("cookie", narrow.cookie.as_deref().unwrap()),
            ],
            b"x".to_vec(),
            403,
        ),
        (
            "read-only capability",
            "DELETE",
            "/pub/app/x".into(),
            vec![
                ("pubky-host", reader.z32.as_str()),
                ("cookie", reader.cookie.as_deref().unwrap()),
            ],
            vec![],
            403,
        ),
        (
            "delete another user's file",
            "DELETE",
            "/pub/app/b.txt".into(),
            vec![
                ("pubky-host", bob.z32.as_str()),
                ("cookie", alice_cookie.as_str()),
            ],
            vec![],
            401,
        ),
        (
            "over quota",
            "PUT",
            "/pub/app/more.bin".into(),
            as_alice.to_vec(),
            vec![2u8; 3000],
            507,
        ),
        (
            "over the body limit",
            "PUT",
            "/pub/app/huge.bin".into(),
            as_alice.to_vec(),
            vec![3u8; 5000],
            413,
        ),
        (
            "file where a directory is",
            "PUT",
            "/pub/app".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            409,
        ),
        (
            "directory where a file is",
            "PUT",
            "/pub/app/a.txt/x".into(),
            as_alice.to_vec(),
            b"x".to_vec(),
            409,
        ),
        (
            "delete a missing file",
            "DELETE",
            "/pub/app/missing".into(),
            as_alice.to_vec(),
            vec![],
            404,
        ),
        (
            "bad pubky-host",
            "PUT",
            "/pub/app/x".into(),
            vec![("pubky-host", "not-a-key")],
            b"x".to_vec(),
            400,
        ),
        (
            "no tenant",
            "GET",
            "/pub/app/a.txt".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "limit not a number",
            "GET",
            "/pub/?limit=abc".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "negative limit",
            "GET",
            "/pub/?limit=-1".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "cursor of another user",
            "GET",
            format!("/pub/?cursor=pubky://{}/pub/app/b.txt", bob.z32),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "cursor not a path",
            "GET",
            "/pub/?cursor=nonsense".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "cursor outside the directory",
            "GET",
            "/pub/app/?cursor=/pub/zzz".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "bad reverse flag",
            "GET",
            "/pub/?reverse=maybe".into(),
            as_alice.to_vec(),
            vec![],
            400,
        ),
        (
            "forged token",
            "POST",
            "/signup".into(),
            vec![],
            forged,
            401,
        ),
        (
            "replayed token",
            "POST",
            "/session".into(),
            vec![],
            used_token.clone(),
            401,
        ),
        (
            "replayed token at signup",
            "POST",
            "/signup".into(),
            vec![],
            used_token,
            401,
        ),
        (
            "expired token",
            "POST",
            "/signup".into(),
            vec![],
            expired,
            401,
        ),
        (
            "token from the future",
            "POST",
            "/signup".into(),
            vec![],
            future,
            401,
        ),
        (
            "truncated token",
            "POST",
            "/signup".into(),
            vec![],
            vec![0u8; 40],
            400,
        ),
        (
            "garbage token",
            "POST",
            "/signup".into(),
            vec![],
            vec![0xAB; 200],
            400,
        ),
        (
            "empty token",
            "POST",
            "/session".into(),
            vec![],
            vec![],
            400,
        ),
        (
            "malformed signup token",
            "POST",
            "/signup?signup_token=nope".into(),
            vec![],
            sign_token(&Keypair::random(), "/pub/:rw"),
            400,
        ),
        (
            "sign in an unknown user",
            "POST",
            "/session".into(),
            vec![],
            sign_token(&Keypair::random(), "/pub/:rw"),
            404,
        ),
    ];

    for (name, method, target, headers, body, expected) in rows {
        let (status, message) = raw_request(addr, method, &target, &headers, &body).await;
        assert_eq!(
            status, expected,
            "{name}: {method} {target} answered {status}: {message}"
        );
        assert!(
            !message.trim().is_empty(),
            "{name}: the answer must say what is wrong"
        );
    }

    let after = snapshot(&hs, &[&alice, &bob]).await;
    assert_eq!(before, after, "bad requests must change nothing");
}

#[tokio::test]
async fn signup_tokens_from_the_admin_listener() {
    let hs = TestServer::start_token_mode().await;
    let admin = hs.admin_url();
    let refused = hs
        .http
        .get(format!("{admin}/generate_signup_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong = hs
        .http
        .get(format!("{admin}/generate_signup_token"))
        .header("x-admin-password", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let token = hs.mint_signup_token().await;

    let keypair = Keypair::random();
    let without = hs
        .http
        .post(hs.url("/signup"))
        .body(sign_token(&keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::BAD_REQUEST);
    let unknown = hs
        .http
        .post(hs.url("/signup?signup_token=AAAA-BBBB-CCCC"))
        .body(sign_token(&keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let with = hs
        .http
        .post(hs.url(&format!("/signup?signup_token={token}")))
        .body(sign_token(&keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), StatusCode::OK);
    let again = hs
        .http
        .post(hs.url(&format!("/signup?signup_token={token}")))
        .body(sign_token(&Keypair::random(), "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a signup token is single-use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_gapless_sequences_in_commit_order() {
    const WRITERS: usize = 32;
    const WRITES_EACH: usize = 25;
    let hs = TestServer::start().await;
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(hs.signup().await);
    }
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let user = users[writer % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..WRITES_EACH {
                // Writers share a few paths so that overwrites race too.
                let path = format!("/pub/w/{}", (writer * 7 + i) % 40);
                let body = format!("writer {writer} write {i}");
                let response = user.put(&path, body.clone()).await;
                if response.status() == StatusCode::CREATED {
                    acked.push((user.z32.clone(), path, body));
                }
            }
            acked
        }));
    }
    let mut acked_per_writer = Vec::new();
    for task in tasks {
        acked_per_writer.push(task.await.unwrap());
    }
    let acked: usize = acked_per_writer.iter().map(Vec::len).sum();
    assert_eq!(acked, WRITERS * WRITES_EACH, "every write is acknowledged");

    let events = hs.events();
    assert_eq!(events.len(), acked, "one event per acknowledged write");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq,
            index as u64 + 1,
            "sequences are 1..N without a gap"
        );
    }
    // Each writer's writes (sequential on its side) committed in its order.
    let by_hash: HashMap<[u8; 32], u64> = events.iter().map(|e| (e.hash.unwrap(), e.seq)).collect();
    for acked in &acked_per_writer {
        let seqs: Vec<u64> = acked
            .iter()
            .map(|(_, _, body)| by_hash[blake3::hash(body.as_bytes()).as_bytes()])
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "commit order: {seqs:?}"
        );
    }
    // What is stored is what the last event of each file says.
    let mut last: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    for event in &events {
        last.insert(event.key.clone(), event.hash.unwrap());
    }
    for user in &users {
        for (key, hash) in last
            .range(user.z32.clone()..)
            .take_while(|(k, _)| k.starts_with(&user.z32))
        {
            let body = user.get(&key[52..]).await.bytes().await.unwrap();
            assert_eq!(blake3::hash(&body).as_bytes(), hash, "{key}");
        }
    }
}

#[tokio::test]
async fn everything_survives_a_restart_and_sequences_continue() {
    let hs = TestServer::start().await;
    let key = hs.server.public_key().to_string();
    let alice = hs.signup().await;
    for i in 0..10 {
        assert_eq!(
            alice
                .put(&format!("/pub/r/{i}"), format!("v{i}"))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        alice.delete("/pub/r/3").await.status(),
        StatusCode::NO_CONTENT
    );
    let hs = hs.restart().await;
    assert_eq!(hs.server.public_key(), key, "the server keeps its key");
    let alice = User {
        base: hs.server.url(),
        ..alice
    };
    assert_eq!(alice.get("/pub/r/7").await.text().await.unwrap(), "v7");
    assert_eq!(alice.list("/pub/r/").await.len(), 9);
    // The session survived too, and the next write gets the next sequence.
    assert_eq!(
        alice.put("/pub/r/new", "n").await.status(),
        StatusCode::CREATED
    );
    let events = hs.events();
    assert_eq!(events.last().unwrap().seq, 12);
    assert_eq!(events.len(), 12);
}
