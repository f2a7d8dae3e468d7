//! Requests the server must refuse cleanly, each a defect found once: a 4xx with a plain-text
//! body that says what was wrong, the right headers, and nothing changed.

mod common;

use common::TestServer;
use pubky_common::crypto::Keypair;
use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};

/// A cookie of the session's name with an empty or malformed value is no session (401), never
/// a storage failure; beside a valid cookie of the same name, the valid one still works.
#[tokio::test]
async fn malformed_session_cookies_are_no_session() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    let good = alice.cookie.clone().unwrap();
    let z = &alice.z32;
    let events_before = hs.events().len();
    let long = "A".repeat(600);
    for bad in [
        format!("{z}="),
        format!("{z}= "),
        format!("{z}=x"),
        format!("{z}={long}"),
        format!("{z}=%00"),
        format!("{z}=0000000000000000000000000I"),
    ] {
        let mut anonymous = alice.clone();
        anonymous.cookie = None;
        for (method, path) in [(Method::PUT, "/pub/a/x"), (Method::GET, "/session")] {
            let response = anonymous
                .request(method.clone(), path)
                .header(COOKIE, bad.clone())
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {bad:?}"
            );
            assert!(!response.text().await.unwrap().is_empty());
        }
        // The bad cookie first, the good one after it: the session is found.
        let both = format!("{bad}; {good}");
        let response = anonymous
            .request(Method::PUT, "/pub/a/x")
            .header(COOKIE, both.clone())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{both:?}");
        let session = anonymous
            .request(Method::GET, "/session")
            .header(COOKIE, both.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(session.status(), StatusCode::OK, "{both:?}");
        // Two Cookie headers do as well.
        let response = anonymous
            .request(Method::PUT, "/pub/a/x")
            .header(COOKIE, bad.clone())
            .header(COOKIE, good.clone())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "two headers");
    }
    // Only the good requests wrote: two PUTs per bad cookie.
    assert_eq!(hs.events().len(), events_before + 2 * 6);
}

/// Every 405 says which methods the path answers, in `Allow` and in words; the admin
/// listener's 404s and 405s have bodies too.
#[tokio::test]
async fn wrong_methods_and_unknown_paths_have_bodies() {
    let hs = TestServer::start_token_mode().await;
    let alice = Keypair::random().public_key().z32();
    let public = hs.server.url();
    let admin = hs.admin_url();
    for (base, method, path, status, allow) in [
        (&public, Method::GET, "/signup", 405, "POST"),
        (&public, Method::PUT, "/info", 405, "GET"),
        (&public, Method::PUT, "/pub/", 405, "GET"),
        (&public, Method::POST, "/firehose", 405, "GET"),
        (&public, Method::DELETE, "/events-stream", 405, "GET"),
        (&public, Method::PATCH, "/pub/a/x", 405, "PUT"),
        (&public, Method::GET, "/nothing/here", 404, ""),
        (&admin, Method::GET, "/nothing/here", 404, ""),
        (&admin, Method::PUT, "/", 405, "GET"),
        (
            &admin,
            Method::DELETE,
            "/generate_signup_token",
            405,
            "POST",
        ),
    ] {
        // With the password: the admin listener asks for it before it looks at the method.
        let response = hs
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("pubky-host", &alice)
            .header("x-admin-password", common::ADMIN_PASSWORD)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path} on {base}");
        assert_eq!(response.status().as_u16(), status, "{what}");
        if status == 405 {
            let header = response.headers()["allow"].to_str().unwrap().to_string();
            assert!(header.contains(allow), "{what}: Allow {header}");
        }
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{what}"
        );
        let body = response.text().await.unwrap();
        assert!(body.contains(path), "{what}: {body:?}");
        if status == 405 {
            assert!(body.contains(allow), "{what}: {body:?}");
        }
    }
}

/// `/events-stream` follows users x paths patterns: past `max_patterns` it is a 400, decided
/// from the query alone, before any user is looked up or anything registered.
#[tokio::test]
async fn events_stream_patterns_are_capped() {
    let hs = TestServer::start_with(|c| c.max_patterns = 10).await;
    let alice = hs.signup().await;
    let stream = |query: String| {
        let url = hs.url(&format!("/events-stream?{query}"));
        let http = hs.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    let strangers: Vec<String> = (0..5)
        .map(|_| format!("user={}", Keypair::random().public_key().z32()))
        .collect();
    let paths: Vec<String> = (0..3).map(|n| format!("path=/pub/{n}/")).collect();
    let over = stream(format!("{}&{}", strangers.join("&"), paths.join("&"))).await;
    assert_eq!(over.status(), StatusCode::BAD_REQUEST);
    let text = over.text().await.unwrap();
    assert!(
        text.contains("5 users x 3 paths is 15, at most 10"),
        "{text}"
    );
    // Within the cap, it streams.
    let within: Vec<String> = (0..10).map(|n| format!("path=/pub/{n}/")).collect();
    let ok = stream(format!("user={}&{}", alice.z32, within.join("&"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let eleven = format!("user={}&{}&path=/pub/x", alice.z32, within.join("&"));
    assert_eq!(stream(eleven).await.status(), StatusCode::BAD_REQUEST);
}

/// One boolean rule everywhere (true/yes/1/bare key, false/no/0, any case; else 400), except
/// `/events-stream`'s `live` and `reverse`, which keep Pubky's rule (only `true` and `1`).
#[tokio::test]
async fn booleans_follow_one_rule() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    assert_eq!(alice.put("/pub/d/sub/x", "x").await.status(), 201);
    assert_eq!(alice.put("/pub/d/y", "y").await.status(), 201);
    let get = |path: String| {
        let http = hs.http.clone();
        let url = hs.url(&path);
        let z32 = alice.z32.clone();
        async move {
            let response = http
                .get(url)
                .header("pubky-host", z32)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let shallow = format!("pubky://{0}/pub/d/sub/\npubky://{0}/pub/d/y", alice.z32);
    for value in ["", "=true", "=YES", "=1"] {
        assert_eq!(
            get(format!("/pub/d/?shallow{value}")).await,
            (200, shallow.clone())
        );
    }
    let deep = format!("pubky://{0}/pub/d/sub/x\npubky://{0}/pub/d/y", alice.z32);
    for value in ["=false", "=No", "=0"] {
        assert_eq!(
            get(format!("/pub/d/?shallow{value}")).await,
            (200, deep.clone())
        );
    }
    for path in [
        "/pub/d/?shallow=maybe",
        "/pub/d/?reverse=2",
        "/events/?reverse=on",
        "/firehose?live=maybe",
    ] {
        let (status, body) = get(path.to_string()).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body.starts_with("Invalid boolean parameter"),
            "{path}: {body}"
        );
    }
    // The firehose reads `live=no` and `live=yes` by the same rule: not live ends the stream.
    let (status, body) = get("/firehose?lastSeq=0000000000000&live=no".into()).await;
    assert_eq!(status, 200);
    assert_eq!(body.matches("event: PUT").count(), 2);
    // /events-stream: `live=yes` is not live (Pubky's rule), so the stream ends too, and
    // a value Pubky ignores is not a 400.
    let user = format!("/events-stream?user={}", alice.z32);
    for flag in ["live=yes", "live=maybe", "reverse=yes"] {
        let (status, body) = get(format!("{user}&{flag}")).await;
        assert_eq!(status, 200, "{flag}");
        assert_eq!(body.matches("event: PUT").count(), 2, "{flag}");
        assert!(
            body.find("/pub/d/sub/x") < body.find("/pub/d/y"),
            "{flag}: oldest first"
        );
    }
}

/// The tenant is named by the `pubky-host` header, else `?pubky-host=`, else a label of
/// `Host` (with or without a port); a session cookie works whichever named it.
#[tokio::test]
async fn the_tenant_by_header_query_or_host() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    let bob = hs.signup().await;
    let cookie = alice.cookie.clone().unwrap();
    let port = hs.server.addr().port();
    // Writes named by Host alone.
    for (host, path) in [
        (format!("_pubky.{}", alice.z32), "/pub/host/1"),
        (format!("{}:{port}", alice.z32), "/pub/host/2"),
        (format!("app.{}.example:{port}", alice.z32), "/pub/host/3"),
    ] {
        let response = hs
            .http
            .put(hs.url(path))
            .header("host", &host)
            .header(COOKIE, &cookie)
            .body(host.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "Host: {host}");
    }
    // A write named by the query.
    let by_query = hs
        .http
        .put(hs.url(&format!("/pub/query?pubky-host={}", alice.z32)))
        .header(COOKIE, &cookie)
        .body("q")
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::CREATED);
    assert_eq!(
        alice.list("/pub/").await.len(),
        4,
        "all four landed in alice's tree"
    );
    let read = |url: String, host: Option<String>, header: Option<String>| {
        let mut request = hs.http.get(url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(header) = header {
            request = request.header("pubky-host", header);
        }
        async move { request.send().await.unwrap() }
    };
    let host_only = read(
        hs.url("/pub/host/1"),
        Some(format!("_pubky.{}", alice.z32)),
        None,
    );
    assert_eq!(
        host_only.await.text().await.unwrap(),
        format!("_pubky.{}", alice.z32)
    );
    let query = read(
        hs.url(&format!("/pub/query?pubky-host={}", alice.z32)),
        None,
        None,
    );
    assert_eq!(query.await.text().await.unwrap(), "q");
    // The header wins over the query, and the query over Host.
    let header_wins = read(
        hs.url(&format!("/pub/query?pubky-host={}", alice.z32)),
        None,
        Some(bob.z32.clone()),
    );
    assert_eq!(
        header_wins.await.status(),
        StatusCode::NOT_FOUND,
        "bob has none"
    );
    let query_wins = read(
        hs.url(&format!("/pub/query?pubky-host={}", alice.z32)),
        Some(format!("_pubky.{}", bob.z32)),
        None,
    );
    assert_eq!(query_wins.await.text().await.unwrap(), "q");
    // No tenant at all is a 400 that says how to name one.
    let none = read(hs.url("/pub/query"), None, None).await;
    assert_eq!(none.status(), StatusCode::BAD_REQUEST);
    assert!(none.text().await.unwrap().contains("pubky-host"));
}

/// A head that is not HTTP, or one that frames its body two ways (Content-Length and
/// Transfer-Encoding: request smuggling behind a proxy), is refused by the connection layer
/// with a 400 and a body saying why, and changes nothing: on the main listener and on the
/// admin listener alike.
#[tokio::test]
async fn malformed_heads_are_refused_with_a_reason() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hs = TestServer::start_with(|c| {
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.admin_password = Some("secret".into());
    })
    .await;
    let admin = hs.server.admin_addr().expect("an admin listener");
    let alice = hs.signup().await;
    let events_before = hs.events().len();
    let z = &alice.z32;
    let cookie = alice.cookie.clone().unwrap();
    for (head, reason) in [
        (
            format!("PUT /pub/a HTTP/1.1\r\nHost: x\r\npubky-host: {z}\r\nX-Junk: a\0b\r\n\r\n"),
            "not HTTP",
        ),
        (
            format!(
                "PUT /pub/a HTTP/1.1\r\nHost: x\r\npubky-host: {z}\r\nCookie: {cookie}\r\n\
                 Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "both Content-Length and Transfer-Encoding",
        ),
    ] {
        for listener in [hs.server.addr(), admin] {
            let mut socket = tokio::net::TcpStream::connect(listener).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 400 "), "{listener}: {answer}");
            assert!(answer.contains("text/plain"), "{listener}: {answer}");
            assert!(answer.contains(reason), "{listener}: {answer}");
        }
    }
    assert_eq!(hs.events().len(), events_before, "nothing was written");
}
