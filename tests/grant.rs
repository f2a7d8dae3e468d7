//! The grant flow against a real server, driven the way the `pubky` 0.17 SDK drives it: a
//! grant signed by the user key, a PoP signed by a fresh client key and addressed to the
//! server key read from `GET /`, then `Authorization: Bearer` on every request.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestServer, User};
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::grant_session_responses::{GrantSessionInfo, GrantSessionResponse};
use pubky_common::auth::jws::{sign_jws, ClientId, GrantId, PopNonce, GRANT_JWS_TYP, POP_JWS_TYP};
use pubky_common::auth::pop::PopProofClaims;
use pubky_common::capabilities::Capability;
use pubky_common::crypto::{Keypair, PublicKey};
use reqwest::{Method, Response, StatusCode};

/// The JSON body of grant requests, as the SDK sends it.
fn grant_body(grant: &str, pop: &str) -> String {
    serde_json::json!({ "grant": grant, "pop": pop }).to_string()
}

async fn read_json<T: serde::de::DeserializeOwned>(response: Response) -> T {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An app acting for one user: the user's key signs grants, the app's own key signs PoPs.
struct App {
    user: Keypair,
    client: Keypair,
    /// The server's key: the PoP audience.
    server: PublicKey,
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn new(hs: &TestServer) -> App {
        let root = hs.http.get(hs.url("/")).send().await.unwrap();
        let server = PublicKey::try_from_z32(root.text().await.unwrap().trim()).unwrap();
        App {
            user: Keypair::random(),
            client: Keypair::random(),
            server,
            base: hs.server.url(),
            http: hs.http.clone(),
        }
    }

    fn z32(&self) -> String {
        self.user.public_key().z32()
    }

    fn claims(&self, client_id: &str, caps: &str, iat: u64, exp: u64) -> GrantClaims {
        GrantClaims {
            iss: self.user.public_key(),
            client_id: ClientId::new(client_id).unwrap(),
            caps: caps.split(',').map(|c| c.parse().unwrap()).collect(),
            cnf: self.client.public_key(),
            jti: GrantId::generate(),
            iat,
            exp,
        }
    }

    /// What the SDK signs for `signup()`: `pubky.signup`, root, five minutes.
    fn signup_grant(&self) -> (GrantClaims, String) {
        let claims = self.claims("pubky.signup", "/:rw", now(), now() + 300);
        let jws = claims.sign(&self.user, GRANT_JWS_TYP);
        (claims, jws)
    }

    /// What the SDK signs for `signin()`, with the given capabilities.
    fn session_grant(&self, caps: &str) -> (GrantClaims, String) {
        let claims = self.claims("test.app", caps, now(), now() + 2 * 365 * 24 * 3600);
        let jws = claims.sign(&self.user, GRANT_JWS_TYP);
        (claims, jws)
    }

    fn pop_with(&self, aud: &PublicKey, gid: &GrantId, nonce: PopNonce, iat: u64) -> String {
        let claims = PopProofClaims {
            aud: aud.clone(),
            gid: gid.clone(),
            nonce,
            iat,
        };
        sign_jws(&self.client, POP_JWS_TYP, &claims)
    }

    /// A fresh PoP for `grant`, as the SDK makes one per exchange.
    fn pop(&self, grant: &GrantClaims) -> String {
        self.pop_with(&self.server, &grant.jti, PopNonce::generate(), now())
    }

    async fn post(&self, path: &str, grant: &str, pop: &str) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("pubky-host", self.z32())
            .header("content-type", "application/json")
            .body(grant_body(grant, pop))
            .send()
            .await
            .unwrap()
    }

    async fn signup(&self) {
        let (claims, grant) = self.signup_grant();
        let response = self
            .post("/auth/grant/signup", &grant, &self.pop(&claims))
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "grant signup");
    }

    /// Exchange a session grant for a bearer.
    async fn signin(&self, caps: &str) -> (GrantClaims, String, GrantSessionResponse) {
        let (claims, grant) = self.session_grant(caps);
        let response = self
            .post("/auth/grant/session", &grant, &self.pop(&claims))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "grant session");
        let session: GrantSessionResponse = read_json(response).await;
        (claims, grant, session)
    }

    /// A storage request about `tenant`'s files, with a bearer.
    fn request(
        &self,
        method: Method,
        tenant: &str,
        path: &str,
        bearer: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("pubky-host", tenant)
            .bearer_auth(bearer)
    }

    async fn put(&self, path: &str, bearer: &str, body: &'static str) -> Response {
        self.request(Method::PUT, &self.z32(), path, bearer)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn sdk_flow_signup_session_put_get_delete_refresh_signout() {
    let hs = TestServer::start().await;

    let info = hs.http.get(hs.url("/info")).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(info.headers()["content-type"], "application/json");
    assert_eq!(info.headers()["cache-control"], "no-store");
    let features: serde_json::Value = read_json(info).await;
    assert_eq!(
        features,
        serde_json::json!({ "features": ["grant-proof-logout"] })
    );

    let app = App::new(&hs).await;
    assert_eq!(app.server.z32(), hs.server.public_key());
    app.signup().await;
    assert!(hs.server.files().user(&app.z32()).unwrap().is_some());

    let before = now();
    let (claims, grant, session) = app.signin("/:rw").await;
    assert_eq!(session.token.len(), 43);
    let info = &session.session;
    assert_eq!(info.homeserver, app.server);
    assert_eq!(info.pubky, app.user.public_key());
    assert_eq!(info.client_id.as_str(), "test.app");
    assert_eq!(info.capabilities, vec![Capability::root()]);
    assert_eq!(info.grant_id, claims.jti);
    assert_eq!(info.grant_expires_at, claims.exp);
    assert!(info.token_expires_at >= before + 3600 && info.token_expires_at <= now() + 3600);
    let bearer = session.token.clone();

    let put = app.put("/pub/app/hello.txt", &bearer, "hello").await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = app
        .request(Method::GET, &app.z32(), "/pub/app/hello.txt", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "hello");
    let listed = app
        .request(Method::GET, &app.z32(), "/pub/app/", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.text().await.unwrap(),
        format!("pubky://{}/pub/app/hello.txt", app.z32())
    );

    // The session as the SDK revalidates it.
    let current = app
        .http
        .get(format!("{}/auth/grant/session", app.base))
        .header("pubky-host", app.z32())
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()["content-type"], "application/json");
    let current: GrantSessionInfo = read_json(current).await;
    assert_eq!(current.grant_id, claims.jti);
    assert_eq!(current.token_expires_at, info.token_expires_at);
    assert_eq!(current.pubky, app.user.public_key());
    // The cookie flow's GET /session is not for bearers.
    let cookie_view = app
        .request(Method::GET, &app.z32(), "/session", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_view.status(), StatusCode::UNAUTHORIZED);

    let deleted = app
        .request(Method::DELETE, &app.z32(), "/pub/app/hello.txt", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // Refresh: the same grant, a fresh PoP, a new bearer; the previous bearer stops working.
    let refreshed = app
        .post("/auth/grant/session", &grant, &app.pop(&claims))
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: GrantSessionResponse = read_json(refreshed).await;
    assert_ne!(refreshed.token, bearer);
    assert_eq!(
        app.put("/pub/app/a.txt", &bearer, "old").await.status(),
        StatusCode::UNAUTHORIZED,
        "the replaced bearer is no session"
    );
    assert_eq!(
        app.put("/pub/app/a.txt", &refreshed.token, "new")
            .await
            .status(),
        StatusCode::CREATED
    );

    // Sign out with the bearer (what the SDK does without grant-proof-logout): the grant is
    // revoked, its bearer dead, and it cannot be exchanged again.
    let signout = app
        .http
        .delete(format!("{}/auth/grant/session", app.base))
        .bearer_auth(&refreshed.token)
        .send()
        .await
        .unwrap();
    assert_eq!(signout.status(), StatusCode::OK);
    assert_eq!(
        app.put("/pub/app/b.txt", &refreshed.token, "x")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .post("/auth/grant/session", &grant, &app.pop(&claims))
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(again.text().await.unwrap().trim(), "Grant has been revoked");
    let twice = app
        .http
        .delete(format!("{}/auth/grant/session", app.base))
        .bearer_auth(&refreshed.token)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::OK, "signing out twice is fine");

    // A new grant signs in again.
    let (_, _, session) = app.signin("/pub/:rw").await;
    assert_eq!(
        app.put("/pub/app/c.txt", &session.token, "c")
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn proof_logout_revokes_a_grant_without_its_bearer() {
    let hs = TestServer::start().await;
    let app = App::new(&hs).await;
    app.signup().await;
    let (claims, grant, session) = app.signin("/:rw").await;

    // Another user's client cannot revoke it: the grant is not theirs.
    let mallory = App::new(&hs).await;
    mallory.signup().await;
    let (mut stolen, _) = mallory.session_grant("/:rw");
    stolen.jti = claims.jti.clone();
    let stolen_jws = stolen.sign(&mallory.user, GRANT_JWS_TYP);
    let refused = hs
        .http
        .delete(hs.url("/auth/grant/session"))
        .header("content-type", "application/json")
        .body(grant_body(&stolen_jws, &mallory.pop(&stolen)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.put("/pub/x.txt", &session.token, "x").await.status(),
        StatusCode::CREATED
    );

    let logout = hs
        .http
        .delete(hs.url("/auth/grant/session"))
        .header("content-type", "application/json")
        .body(grant_body(&grant, &app.pop(&claims)))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(
        app.put("/pub/y.txt", &session.token, "y").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bearer_wins_over_cookies_and_a_dead_bearer_falls_through_to_them() {
    let hs = TestServer::start().await;
    // A cookie user, who also gets a narrow grant session.
    let cookie_user = hs.signup_with_caps("/:rw").await;
    let app = App {
        user: cookie_user.keypair.clone(),
        ..App::new(&hs).await
    };
    let (_, _, session) = app.signin("/pub/narrow/:rw").await;
    let cookie = cookie_user.cookie.clone().unwrap();

    let with_both = app
        .request(Method::PUT, &app.z32(), "/pub/wide.txt", &session.token)
        .header("cookie", &cookie)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_both.status(),
        StatusCode::FORBIDDEN,
        "the bearer's narrow capabilities apply, not the cookie's"
    );

    let unknown = "A".repeat(43);
    let fallthrough = app
        .request(Method::PUT, &app.z32(), "/pub/wide.txt", &unknown)
        .header("cookie", &cookie)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(fallthrough.status(), StatusCode::CREATED);
}

/// What a refused request must leave untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    events: Vec<(u64, String)>,
    last_seq: u64,
    users: Vec<bool>,
    grants: Vec<Option<hearth::files::GrantRecord>>,
}

fn snapshot(hs: &TestServer, users: &[String], grants: &[String]) -> Snapshot {
    let store = hs.server.files();
    Snapshot {
        events: hs.events().iter().map(|e| (e.seq, e.key.clone())).collect(),
        last_seq: hs.server.log().last_seq().unwrap(),
        users: users
            .iter()
            .map(|u| store.user(u).unwrap().is_some())
            .collect(),
        grants: grants.iter().map(|g| store.grant(g).unwrap()).collect(),
    }
}

#[tokio::test]
async fn bad_grant_requests_get_a_4xx_with_a_message_and_change_nothing() {
    let hs = TestServer::start().await;
    let alice = App::new(&hs).await;
    alice.signup().await;
    let (alice_claims, alice_grant, alice_session) = alice.signin("/pub/app/:rw").await;
    let bob = App::new(&hs).await;
    bob.signup().await;
    let (_, _, bob_session) = bob.signin("/:rw").await;
    assert_eq!(
        alice
            .put("/pub/app/keep.txt", &alice_session.token, "keep")
            .await
            .status(),
        StatusCode::CREATED
    );

    // A signup that succeeded, replayed as is.
    let carol = App::new(&hs).await;
    let (carol_claims, carol_grant) = carol.signup_grant();
    let carol_pop = carol.pop(&carol_claims);
    let first = carol
        .post("/auth/grant/signup", &carol_grant, &carol_pop)
        .await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    // A session exchange that succeeded, replayed as is.
    let alice_pop = alice.pop(&alice_claims);
    let first = alice
        .post("/auth/grant/session", &alice_grant, &alice_pop)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let alice_bearer = read_json::<GrantSessionResponse>(first).await.token;

    let stranger = App::new(&hs).await;
    let t = now();
    let sign = |app: &App, claims: &GrantClaims| claims.sign(&app.user, GRANT_JWS_TYP);

    let expired = alice.claims("test.app", "/:rw", t - 7200, t - 10);
    let forged = alice.claims("test.app", "/:rw", t, t + 3600);
    let forged_jws = forged.sign(&Keypair::random(), GRANT_JWS_TYP);
    let wrong_typ = alice.claims("test.app", "/:rw", t, t + 3600);
    let wrong_typ_jws = wrong_typ.sign(&alice.user, POP_JWS_TYP);
    let fresh = alice.claims("test.app", "/:rw", t, t + 3600);
    let fresh_jws = sign(&alice, &fresh);
    let wrong_aud = alice.pop_with(
        &Keypair::random().public_key(),
        &fresh.jti,
        PopNonce::generate(),
        t,
    );
    let wrong_gid = alice.pop_with(&alice.server, &GrantId::generate(), PopNonce::generate(), t);
    let stale_pop = alice.pop_with(&alice.server, &fresh.jti, PopNonce::generate(), t - 600);
    let not_cnf = sign_jws(
        &alice.user,
        POP_JWS_TYP,
        &PopProofClaims {
            aud: alice.server.clone(),
            gid: fresh.jti.clone(),
            nonce: PopNonce::generate(),
            iat: t,
        },
    );
    let unknown_user = stranger.claims("test.app", "/:rw", t, t + 3600);
    let not_signup = stranger.claims("test.app", "/:rw", t, t + 300);
    let not_root = stranger.claims("pubky.signup", "/pub/:rw", t, t + 300);
    let too_long = stranger.claims("pubky.signup", "/:rw", t, t + 301);
    let existing = alice.claims("pubky.signup", "/:rw", t, t + 300);
    // Bob signs a grant that reuses the id of Alice's grant, to take over its bearer.
    let mut hijack = bob.claims("test.app", "/:rw", t, t + 3600);
    hijack.jti = alice_claims.jti.clone();

    type Row = (
        &'static str,
        &'static str,
        String,
        String,
        u16,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            "replayed signup PoP",
            "/auth/grant/signup",
            carol_grant.clone(),
            carol_pop.clone(),
            401,
            "PoP nonce already used",
        ),
        (
            "replayed session PoP",
            "/auth/grant/session",
            alice_grant.clone(),
            alice_pop.clone(),
            401,
            "PoP nonce already used",
        ),
        (
            "expired grant",
            "/auth/grant/session",
            sign(&alice, &expired),
            alice.pop(&expired),
            401,
            "Invalid grant: grant has expired",
        ),
        (
            "forged grant",
            "/auth/grant/session",
            forged_jws,
            alice.pop(&forged),
            401,
            "Invalid grant: invalid grant signature",
        ),
        (
            "malformed grant",
            "/auth/grant/session",
            "not.a-jws".into(),
            alice.pop(&fresh),
            400,
            "Invalid grant: invalid grant format",
        ),
        (
            "grant with a PoP header",
            "/auth/grant/session",
            wrong_typ_jws,
            alice.pop(&wrong_typ),
            400,
            "Invalid grant: invalid grant header type",
        ),
        (
            "PoP for another server",
            "/auth/grant/session",
            fresh_jws.clone(),
            wrong_aud,
            401,
            "Invalid PoP proof: PoP audience mismatch",
        ),
        (
            "PoP for another grant",
            "/auth/grant/session",
            fresh_jws.clone(),
            wrong_gid,
            401,
            "Invalid PoP proof: PoP grant ID mismatch",
        ),
        (
            "stale PoP",
            "/auth/grant/session",
            fresh_jws.clone(),
            stale_pop,
            401,
            "Invalid PoP proof: PoP timestamp out of range",
        ),
        (
            "PoP not signed by the cnf key",
            "/auth/grant/session",
            fresh_jws.clone(),
            not_cnf,
            401,
            "Invalid PoP proof: invalid PoP signature",
        ),
        (
            "session for an unknown user",
            "/auth/grant/session",
            sign(&stranger, &unknown_user),
            stranger.pop(&unknown_user),
            404,
            "no user",
        ),
        (
            "signup grant with another client_id",
            "/auth/grant/signup",
            sign(&stranger, &not_signup),
            stranger.pop(&not_signup),
            400,
            "signup grants must use client_id pubky.signup",
        ),
        (
            "signup grant without /:rw",
            "/auth/grant/signup",
            sign(&stranger, &not_root),
            stranger.pop(&not_root),
            403,
            "Root capability required",
        ),
        (
            "signup grant living over 5 minutes",
            "/auth/grant/signup",
            sign(&stranger, &too_long),
            stranger.pop(&too_long),
            400,
            "signup grant lifetime exceeds 5 minutes",
        ),
        (
            "signup of an existing user",
            "/auth/grant/signup",
            sign(&alice, &existing),
            alice.pop(&existing),
            409,
            "already exists",
        ),
        (
            "a grant reusing another grant's id",
            "/auth/grant/session",
            sign(&bob, &hijack),
            bob.pop(&hijack),
            401,
            "already names another grant",
        ),
    ];

    let users = [alice.z32(), bob.z32(), carol.z32(), stranger.z32()];
    let grants = [alice_claims.jti.to_string(), fresh.jti.to_string()];
    let before = snapshot(&hs, &users, &grants);
    for (name, path, grant, pop, status, message) in &rows {
        let response = alice.post(path, grant, pop).await;
        assert_eq!(response.status().as_u16(), *status, "{name}");
        let body = response.text().await.unwrap();
        assert!(body.contains(message), "{name}: {body:?}");
    }

    let bad_body = hs
        .http
        .post(hs.url("/auth/grant/session"))
        .body("{\"grant\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_body.status(), StatusCode::BAD_REQUEST);
    assert!(!bad_body.text().await.unwrap().trim().is_empty());

    // Storage with bearers that do not allow the write.
    let bob_writes_alice = alice
        .request(
            Method::PUT,
            &alice.z32(),
            "/pub/app/keep.txt",
            &bob_session.token,
        )
        .body("bob was here")
        .send()
        .await
        .unwrap();
    assert_eq!(bob_writes_alice.status(), StatusCode::FORBIDDEN);
    assert!(bob_writes_alice
        .text()
        .await
        .unwrap()
        .contains("belongs to"));
    let bob_deletes_alice = alice
        .request(
            Method::DELETE,
            &alice.z32(),
            "/pub/app/keep.txt",
            &bob_session.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bob_deletes_alice.status(), StatusCode::FORBIDDEN);
    let outside_caps = alice.put("/pub/other/x.txt", &alice_bearer, "x").await;
    assert_eq!(outside_caps.status(), StatusCode::FORBIDDEN);
    assert!(outside_caps
        .text()
        .await
        .unwrap()
        .contains("no write capability"));
    let no_session = alice.put("/pub/app/x.txt", "garbage", "x").await;
    assert_eq!(no_session.status(), StatusCode::UNAUTHORIZED);
    let no_grant_session = hs
        .http
        .get(hs.url("/auth/grant/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_grant_session.status(), StatusCode::UNAUTHORIZED);

    let after = snapshot(&hs, &users, &grants);
    assert_eq!(before, after, "refused requests must change nothing");
    // Not even the proofs of refused requests were spent: once the stranger has an account,
    // the very same grant and PoP that got a 404 are accepted.
    stranger.signup().await;
    let (name, _, unknown_grant, unknown_pop, _, _) = &rows[10];
    assert_eq!(*name, "session for an unknown user");
    let accepted = stranger
        .post("/auth/grant/session", unknown_grant, unknown_pop)
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(
        alice
            .request(Method::GET, &alice.z32(), "/pub/app/keep.txt", "")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "keep"
    );
    // The hijack attempt did not take Alice's grant's bearer away.
    assert_eq!(
        alice
            .put("/pub/app/still.txt", &alice_bearer, "ok")
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn grant_signup_honours_token_mode() {
    let hs = TestServer::start_token_mode().await;
    let token = hs.mint_signup_token().await;

    let app = App::new(&hs).await;
    let attempt = |path: String| {
        let (claims, grant) = app.signup_grant();
        let pop = app.pop(&claims);
        let app = &app;
        async move { app.post(&path, &grant, &pop).await.status() }
    };
    assert_eq!(
        attempt("/auth/grant/signup".into()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        attempt("/auth/grant/signup?signup_token=nope".into()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        attempt("/auth/grant/signup?signup_token=AAAA-BBBB-CCCC".into()).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(hs.server.files().user(&app.z32()).unwrap().is_none());
    assert_eq!(
        attempt(format!("/auth/grant/signup?signup_token={token}")).await,
        StatusCode::NO_CONTENT
    );
    // The same token serves one signup, whichever flow uses it.
    let other = App::new(&hs).await;
    let (claims, grant) = other.signup_grant();
    let again = other
        .post(
            &format!("/auth/grant/signup?signup_token={token}"),
            &grant,
            &other.pop(&claims),
        )
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let cookie_again = hs
        .http
        .post(hs.url(&format!("/signup?signup_token={token}")))
        .body(common::sign_token(&Keypair::random(), "/pub/:rw"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn grants_bearers_and_spent_proofs_survive_a_restart() {
    let hs = TestServer::start().await;
    let app = App::new(&hs).await;
    app.signup().await;
    let (claims, grant, session) = app.signin("/pub/:rw").await;
    let pop = app.pop(&claims);
    let refreshed = app.post("/auth/grant/session", &grant, &pop).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let bearer = read_json::<GrantSessionResponse>(refreshed).await.token;
    assert_eq!(
        app.put("/pub/before.txt", &bearer, "1").await.status(),
        StatusCode::CREATED
    );

    let hs = hs.restart().await;
    let app = App {
        base: hs.server.url(),
        ..app
    };
    assert_eq!(
        app.put("/pub/after.txt", &bearer, "2").await.status(),
        StatusCode::CREATED,
        "the bearer is still good"
    );
    assert_eq!(
        app.put("/pub/after.txt", &session.token, "3")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the replaced bearer is still dead"
    );
    let replay = app.post("/auth/grant/session", &grant, &pop).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        replay.text().await.unwrap().trim(),
        "PoP nonce already used"
    );
    let fresh = app
        .post("/auth/grant/session", &grant, &app.pop(&claims))
        .await;
    assert_eq!(fresh.status(), StatusCode::OK);

    // The cookie view of the same user is untouched by all this.
    let reader = User {
        keypair: app.user.clone(),
        z32: app.z32(),
        cookie: None,
        base: app.base.clone(),
        http: app.http.clone(),
    };
    assert_eq!(
        reader.get("/pub/after.txt").await.text().await.unwrap(),
        "2"
    );
}
