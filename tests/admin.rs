//! The admin API on a real server: Pubky's paths and answers, the password, and what each
//! call changes (checked in what the server then does, and in its store).

mod common;

use common::{sign_token, TestServer, User, ADMIN_PASSWORD};
use pubky_common::crypto::Keypair;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn admin(server: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
    server
        .http
        .request(method, format!("{}{path}", server.admin_url()))
        .header("x-admin-password", ADMIN_PASSWORD)
}

/// An admin call with the password, sent.
async fn call(server: &TestServer, method: Method, path: &str) -> reqwest::Response {
    admin(server, method, path)
        .send()
        .await
        .expect("admin request")
}

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("admin request");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

/// Sign up through a fresh signup token (the server runs in token mode).
async fn signup(server: &TestServer) -> User {
    let token = server.mint_signup_token().await;
    signup_with(server, &token).await
}

async fn signup_with(server: &TestServer, token: &str) -> User {
    server.signup_with_token(token).await
}

#[tokio::test]
async fn every_admin_call_needs_the_password() {
    let server = TestServer::start_token_mode().await;
    let user = signup(&server).await;
    let calls = [
        (Method::GET, "/info".to_string()),
        (Method::GET, "/generate_signup_token".into()),
        (Method::POST, "/generate_signup_token".into()),
        (Method::GET, "/signup_tokens".into()),
        (Method::GET, "/users".into()),
        (Method::GET, format!("/users/{}", user.z32)),
        (Method::POST, format!("/users/{}/disable", user.z32)),
        (Method::POST, format!("/users/{}/enable", user.z32)),
        (Method::GET, format!("/users/{}/quota", user.z32)),
        (Method::PATCH, format!("/users/{}/quota", user.z32)),
        (Method::DELETE, format!("/webdav/{}/pub/a", user.z32)),
    ];
    for (method, path) in &calls {
        let url = format!("{}{path}", server.admin_url());
        let none = server
            .http
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            !none.text().await.unwrap().trim().is_empty(),
            "a body says why"
        );
        let wrong = server
            .http
            .request(method.clone(), &url)
            .header("x-admin-password", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // Basic auth with the password works too (any user name).
    let basic = server
        .http
        .get(format!("{}/info", server.admin_url()))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    // The status page itself is open; it holds nothing secret.
    let page = server.http.get(server.admin_url()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains(server.server.public_key()));
    // An unknown path is a 404 with a body, password or not (as Pubky: no auth check).
    let unknown = server
        .http
        .get(format!("{}/nothing-here", server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().await.unwrap().contains("/nothing-here"));
    // Nothing was disabled by the refused calls.
    assert_eq!(user.put("/pub/a", "x").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn users_are_listed_a_page_at_a_time_and_read_one_by_one() {
    let server = TestServer::start_token_mode().await;
    let mut users = Vec::new();
    for i in 0..5 {
        let user = signup(&server).await;
        assert_eq!(
            user.put("/pub/f", vec![0u8; i * 10]).await.status(),
            StatusCode::CREATED
        );
        users.push(user);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/users?limit=2".to_string(),
            Some(c) => format!("/users?limit=2&cursor={c}"),
        };
        let page = json_of(admin(&server, Method::GET, &path)).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["pubky"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let signed_up: Vec<String> = users.iter().map(|u| u.z32.clone()).collect();
    assert_eq!(seen, signed_up, "oldest first, each once");

    let by_size = json_of(admin(
        &server,
        Method::GET,
        "/users?sort_by=used_bytes&reverse=true",
    ))
    .await;
    assert_eq!(by_size["items"][0]["pubky"], json!(users[4].z32));
    assert_eq!(by_size["items"][0]["used_bytes"], json!(40));

    let one = json_of(admin(
        &server,
        Method::GET,
        &format!("/users/{}", users[2].z32),
    ))
    .await;
    assert_eq!(one["used_bytes"], json!(20));
    assert_eq!(one["disabled"], json!(false));
    assert!(one["created_at"].as_str().unwrap().contains('T'));
    assert_eq!(one["quota"]["overrides"], json!({}));

    for (path, status) in [
        (
            format!("/users/{}", Keypair::random().public_key().z32()),
            404,
        ),
        ("/users/not-a-key".to_string(), 400),
        ("/users?limit=0".into(), 400),
        ("/users?state=maybe".into(), 400),
        ("/users?reverse=yes".into(), 400),
        (
            format!("/users?cursor={}", Keypair::random().public_key().z32()),
            400,
        ),
    ] {
        let response = call(&server, Method::GET, &path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert!(!response.text().await.unwrap().is_empty(), "{path}: a body");
    }
}

#[tokio::test]
async fn a_disabled_user_can_read_but_not_write_or_sign_in() {
    let server = TestServer::start_token_mode().await;
    let user = signup(&server).await;
    assert_eq!(
        user.put("/pub/keep", "kept").await.status(),
        StatusCode::CREATED
    );
    let path = format!("/users/{}/disable", user.z32);
    let response = call(&server, Method::POST, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "Ok");
    let before = server.events().len();

    let put = user.put("/pub/new", "x").await;
    assert_eq!(put.status(), StatusCode::FORBIDDEN);
    assert_eq!(put.text().await.unwrap().trim(), "User is disabled");
    assert_eq!(
        user.delete("/pub/keep").await.status(),
        StatusCode::FORBIDDEN
    );
    let session = user.request(Method::GET, "/session").send().await.unwrap();
    assert_eq!(session.status(), StatusCode::FORBIDDEN);
    let signin = server
        .http
        .post(server.url("/session"))
        .body(sign_token(&user.keypair, "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), StatusCode::FORBIDDEN);
    // Reads stay public.
    let read = user.get("/pub/keep").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.text().await.unwrap(), "kept");
    assert_eq!(
        server.events().len(),
        before,
        "nothing refused left an event"
    );
    let listed = json_of(admin(&server, Method::GET, "/users?state=disabled")).await;
    assert_eq!(listed["items"][0]["pubky"], json!(user.z32));

    let path = format!("/users/{}/enable", user.z32);
    let response = call(&server, Method::POST, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        user.put("/pub/new", "x").await.status(),
        StatusCode::CREATED
    );

    let nobody = format!("/users/{}/disable", Keypair::random().public_key().z32());
    let response = call(&server, Method::POST, &nobody).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_users_quota_is_read_and_changed_at_run_time_and_kept() {
    let server = TestServer::start_with(|c| {
        c.signup_mode = hearth::config::SignupMode::Token;
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.admin_password = Some(ADMIN_PASSWORD.into());
        c.quota_bytes = Some(3 << 20);
    })
    .await;
    let user = signup(&server).await;
    let path = format!("/users/{}/quota", user.z32);
    let quota = json_of(admin(&server, Method::GET, &path)).await;
    assert_eq!(quota["overrides"], json!({}));
    assert_eq!(quota["effective"]["storage_quota_mb"], json!(3));

    let patch = admin(&server, Method::PATCH, &path)
        .json(&json!({ "storage_quota_mb": 1, "allowed_write_paths": ["/pub/app/"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    let big = vec![7u8; 700 << 10];
    assert_eq!(
        user.put("/pub/app/a", big.clone()).await.status(),
        StatusCode::CREATED
    );
    let over = user.put("/pub/app/b", big.clone()).await;
    assert_eq!(
        over.status(),
        StatusCode::INSUFFICIENT_STORAGE,
        "1 MiB is the user's own quota"
    );
    let elsewhere = user.put("/pub/other", "x").await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);

    // Pubky's 422s: a burst without a rate; a value of the wrong kind.
    for body in [
        json!({ "rate_read_burst": 5 }),
        json!({ "storage_quota_mb": "lots" }),
    ] {
        let refused = admin(&server, Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(!refused.text().await.unwrap().is_empty());
    }

    // Kept across a restart, then lifted.
    let server = server.restart().await;
    let quota = json_of(admin(&server, Method::GET, &path)).await;
    assert_eq!(
        quota["overrides"],
        json!({ "storage_quota_mb": 1, "allowed_write_paths": ["/pub/app/"] })
    );
    let patch = admin(&server, Method::PATCH, &path)
        .json(&json!({ "storage_quota_mb": "unlimited", "allowed_write_paths": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    let user = User {
        base: server.server.url(),
        ..user
    };
    assert_eq!(
        user.put("/pub/app/b", big.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        user.put("/pub/other", "x").await.status(),
        StatusCode::CREATED
    );
    let quota = json_of(admin(&server, Method::GET, &path)).await;
    assert_eq!(quota["effective"]["storage_quota_mb"], json!("unlimited"));
}

/// A user's own `rate_write` and `rate_read` pace their file bodies (Pubky's speed limits):
/// slow, complete, never refused; another user is not slowed. The limiter keeps real time, so
/// this waits for real: a few seconds in all.
#[tokio::test]
async fn a_users_own_bandwidth_paces_their_uploads_and_downloads() {
    let server = TestServer::start_token_mode().await;
    let slow = signup(&server).await;
    let other = signup(&server).await;
    let path = format!("/users/{}/quota", slow.z32);
    let patch = admin(&server, Method::PATCH, &path)
        .json(&json!({ "rate_write": "64kb/s", "rate_read": "64kb/s" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);

    // 64 KiB pass at once (the burst), the next 96 KiB take a second and a half.
    let body: Vec<u8> = (0..160 << 10).map(|i| (i % 251) as u8).collect();
    let start = std::time::Instant::now();
    let put = slow.put("/pub/big", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let put_took = start.elapsed();
    assert!(
        put_took >= std::time::Duration::from_millis(1400),
        "a 160 KiB upload at 64 KiB/s took {put_took:?}"
    );

    let start = std::time::Instant::now();
    let read = slow.get("/pub/big").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap().as_ref(), body.as_slice());
    let get_took = start.elapsed();
    assert!(
        get_took >= std::time::Duration::from_millis(1400),
        "a 160 KiB download at 64 KiB/s took {get_took:?}"
    );

    // Not another user's bodies, nor the paced user's once the limits are lifted: 2 MiB each
    // way would take over a minute at 64 KiB/s.
    let large = vec![5u8; 2 << 20];
    let unpaced = |user: User| {
        let large = large.clone();
        async move {
            let start = std::time::Instant::now();
            assert_eq!(
                user.put("/pub/large", large.clone()).await.status(),
                StatusCode::CREATED
            );
            let read = user.get("/pub/large").await;
            assert_eq!(read.bytes().await.unwrap().len(), large.len());
            let took = start.elapsed();
            assert!(
                took < std::time::Duration::from_secs(20),
                "{} was paced: 2 MiB each way took {took:?}",
                user.z32
            );
        }
    };
    unpaced(other).await;
    let patch = admin(&server, Method::PATCH, &path)
        .json(&json!({ "rate_write": "unlimited", "rate_read": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    unpaced(slow).await;
}

/// The server's `rate_write` paces every user whose own rate is the default, each on their
/// own; a user set to `"unlimited"` is not paced, and `effective` shows what applies.
#[tokio::test]
async fn the_servers_rate_paces_users_left_at_the_default() {
    let server = TestServer::start_with(|c| {
        c.signup_mode = hearth::config::SignupMode::Token;
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.admin_password = Some(ADMIN_PASSWORD.into());
        c.rate_write = Some("64kb/s".parse().unwrap());
    })
    .await;
    let paced = signup(&server).await;
    let free = signup(&server).await;
    let free_quota = format!("/users/{}/quota", free.z32);
    let patch = admin(&server, Method::PATCH, &free_quota)
        .json(&json!({ "rate_write": "unlimited" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    let quota = |user: &User| {
        json_of(admin(
            &server,
            Method::GET,
            &format!("/users/{}/quota", user.z32),
        ))
    };
    assert_eq!(
        quota(&paced).await["effective"]["rate_write"],
        json!("64kb/s")
    );
    assert_eq!(
        quota(&free).await["effective"]["rate_write"],
        json!("unlimited")
    );

    // 160 KiB at 64 KiB/s with a 64 KiB burst: a second and a half.
    let body = vec![1u8; 160 << 10];
    let start = std::time::Instant::now();
    assert_eq!(
        paced.put("/pub/a", body.clone()).await.status(),
        StatusCode::CREATED
    );
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(1400), "{took:?}");
    // 2 MiB would take half a minute at that pace.
    let start = std::time::Instant::now();
    assert_eq!(
        free.put("/pub/a", vec![2u8; 2 << 20]).await.status(),
        StatusCode::CREATED
    );
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
}

#[tokio::test]
async fn signup_tokens_are_listed_and_carry_their_limits() {
    let server = TestServer::start_token_mode().await;
    let plain = server.mint_signup_token().await;
    let limited = admin(&server, Method::POST, "/generate_signup_token")
        .json(&json!({ "storage_quota_mb": 2, "rate_write": "1mb/s" }))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::OK);
    let limited = limited.text().await.unwrap();
    let bad = admin(&server, Method::POST, "/generate_signup_token")
        .json(&json!({ "rate_write_burst": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let user = signup_with(&server, &limited).await;
    let listed = json_of(admin(&server, Method::GET, "/signup_tokens")).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    let mut tokens: Vec<&str> = items.iter().map(|i| i["token"].as_str().unwrap()).collect();
    let sorted = {
        let mut t = tokens.clone();
        t.sort();
        t
    };
    assert_eq!(tokens, sorted, "in token order");
    tokens.sort();
    let used = json_of(admin(&server, Method::GET, "/signup_tokens?state=used")).await;
    assert_eq!(used["items"][0]["token"], json!(limited));
    assert_eq!(used["items"][0]["used_by"], json!(user.z32));
    assert!(used["items"][0]["used_at"].is_string());
    assert_eq!(
        used["items"][0]["quota"],
        json!({ "storage_quota_mb": 2, "rate_write": "1mb/s" })
    );
    let unused = json_of(admin(
        &server,
        Method::GET,
        "/signup_tokens?state=unused&limit=1",
    ))
    .await;
    assert_eq!(unused["items"][0]["token"], json!(plain));
    assert_eq!(unused["items"][0]["quota"], json!({}));

    let quota = json_of(admin(
        &server,
        Method::GET,
        &format!("/users/{}/quota", user.z32),
    ))
    .await;
    assert_eq!(
        quota["overrides"]["storage_quota_mb"],
        json!(2),
        "the token's limits"
    );

    let info = json_of(admin(&server, Method::GET, "/info")).await;
    assert_eq!(info["num_users"], json!(1));
    assert_eq!(info["num_signup_codes"], json!(2));
    assert_eq!(info["num_unused_signup_codes"], json!(1));
    assert_eq!(info["public_key"], json!(server.server.public_key()));
}

#[tokio::test]
async fn the_admin_deletes_one_entry_and_it_is_a_del_event() {
    let server = TestServer::start_token_mode().await;
    let user = signup(&server).await;
    assert_eq!(
        user.put("/pub/doomed/x.json", "x").await.status(),
        StatusCode::CREATED
    );
    let path = format!("/webdav/{}/pub/doomed/x.json", user.z32);
    let response = call(&server, Method::DELETE, &path).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        user.get("/pub/doomed/x.json").await.status(),
        StatusCode::NOT_FOUND
    );
    let last = server.events().pop().expect("an event");
    assert_eq!(last.kind, hearth::log::EventKind::Del);
    assert_eq!(last.path(), "/pub/doomed/x.json");
    let again = call(&server, Method::DELETE, &path).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let outside = format!("/webdav/{}/priv/x", user.z32);
    let response = call(&server, Method::DELETE, &outside).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let used = json_of(admin(&server, Method::GET, &format!("/users/{}", user.z32))).await;
    assert_eq!(used["used_bytes"], json!(0));
}

/// The status page's login cookie opens the admin calls, stays good across a restart (its key
/// comes from the server's key), and is refused by another server with the same password and
/// once the password changes.
#[tokio::test]
async fn the_status_page_login_survives_a_restart() {
    let server = TestServer::start_token_mode().await;
    let cookie = common::admin_login(&server.admin_url()).await;
    let info = |server: &TestServer| {
        server
            .http
            .get(format!("{}/info", server.admin_url()))
            .header("cookie", cookie.clone())
            .send()
    };
    assert_eq!(info(&server).await.unwrap().status(), StatusCode::OK);

    let server = server.restart().await;
    assert_eq!(info(&server).await.unwrap().status(), StatusCode::OK);

    // Another server with the same password did not make it: refused.
    let stranger = TestServer::start_token_mode().await;
    assert_eq!(
        info(&stranger).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let TestServer {
        server: running,
        dir,
        mut config,
        http,
    } = server;
    running.shutdown();
    running.stopped().await.expect("server stops cleanly");
    config.admin_password = Some("a new password".into());
    let server = TestServer {
        server: hearth::server::Server::start(config.clone())
            .await
            .expect("server restarts"),
        dir,
        config,
        http,
    };
    let refused = info(&server).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.text().await.unwrap().contains("log in again"));
}
