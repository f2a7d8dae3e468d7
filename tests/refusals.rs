//! Requests the server must refuse cleanly, each a defect found once: a 4xx with a plain-text
//! body that says what was wrong, the right headers, and nothing changed.

mod common;

use common::TestServer;
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
