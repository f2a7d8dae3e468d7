//! The real `pubky` SDK (0.17.1, unmodified) against Hearth, found the way the SDK finds any
//! homeserver: through pkarr records on a Mainline DHT, then PubkyTLS.
//!
//! Everything is in this process and on 127.0.0.1: a DHT testnet (`mainline::Testnet`), a pkarr
//! relay on it (`pkarr-relay`), Hearth with `tls_listen`, `pkarr_bootstrap` and `pkarr_relay`,
//! and an SDK client whose pkarr client knows that DHT and that relay only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hearth::config::Config;
use hearth::pkarr::record::dig;
use hearth::server::Server;
use pubky::pkarr::{self, ResolvePolicy};
use pubky::{ClientId, EventType, Keypair, Pubky, PubkyHttpClient, PublicKey};
use reqwest::StatusCode;

/// Only there so that a broken server fails a test instead of hanging it; no speed is asserted.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// TCP port 1 (tcpmux): nothing listens there on a test machine.
const CLOSED_PORT: u16 = 1;

/// A private Mainline DHT and a pkarr relay on it.
struct Network {
    dht: mainline::Testnet,
    relay: pkarr_relay::Relay,
    _relay_dir: tempfile::TempDir,
}

impl Network {
    async fn start() -> Network {
        let dht = mainline::Testnet::builder(3).build().expect("DHT testnet");
        let relay_dir = tempfile::tempdir().expect("relay dir");
        let mut relay = pkarr_relay::Relay::builder();
        let bootstrap = dht.bootstrap.clone();
        relay
            .http_port(0)
            .storage(relay_dir.path().to_path_buf())
            .disable_rate_limiter()
            .report_policy(pkarr::dht::ReportPolicy::testnet())
            .dht(|dht| {
                dht.bootstrap = Some(
                    bootstrap
                        .iter()
                        .map(|node| node.parse().expect("bootstrap address"))
                        .collect(),
                );
                dht.bind_address = Some(Ipv4Addr::LOCALHOST);
                dht.server_mode = true;
                dht
            });
        // SAFETY: the relay's LMDB cache is opened once, in a fresh directory of its own.
        let relay = unsafe { relay.run() }.await.expect("pkarr relay");
        Network {
            dht,
            relay,
            _relay_dir: relay_dir,
        }
    }

    fn relay_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay.relay_address().port())
    }

    /// A pkarr client of this DHT only, or of this relay only.
    fn client(&self, through: Through) -> pkarr::Client {
        let mut builder = pkarr::Client::builder();
        builder.no_default_network();
        match through {
            Through::Dht => builder
                .bootstrap(&self.dht.bootstrap)
                .dht_report_policy(pkarr::dht::ReportPolicy::testnet()),
            Through::Relay => builder.relays(&[self.relay_url()]).expect("relay URL"),
        };
        builder.build().expect("pkarr client")
    }

    /// The SDK, configured for this DHT and this relay, nothing else.
    fn sdk(&self) -> Pubky {
        let bootstrap = self.dht.bootstrap.clone();
        let relay = self.relay_url();
        let client = PubkyHttpClient::builder()
            .pkarr(move |pkarr| {
                pkarr
                    .no_default_network()
                    .bootstrap(&bootstrap)
                    .dht_report_policy(pkarr::dht::ReportPolicy::testnet())
                    .relays(&[relay])
                    .expect("relay URL")
            })
            .build()
            .expect("SDK client");
        Pubky::with_client(client)
    }

    /// Hearth with a TLS listener, publishing to this DHT and relay.
    async fn hearth(&self, tweak: impl FnOnce(&mut Config)) -> Hearth {
        let dir = tempfile::tempdir().expect("data dir");
        let mut config = Config::ephemeral(dir.path());
        config.tls_listen = Some("127.0.0.1:0".parse().expect("address"));
        config.pkarr_bootstrap = Some(self.dht.bootstrap.clone());
        config.pkarr_relay = Some(vec![self.relay_url()]);
        tweak(&mut config);
        let server = Server::start(config).await.expect("hearth starts");
        let key = PublicKey::try_from_z32(server.public_key()).expect("server key");
        Hearth {
            server,
            key,
            _dir: dir,
        }
    }
}

#[derive(Clone, Copy)]
enum Through {
    Dht,
    Relay,
}

struct Hearth {
    server: Server,
    key: PublicKey,
    _dir: tempfile::TempDir,
}

impl Hearth {
    /// Wait until the background publisher reports its first successful publish.
    async fn published(&self) {
        let mut published = self.server.record_published().expect("a TLS listener");
        let first = published.wait_for(|count| count.published > 0);
        tokio::time::timeout(HANG_GUARD, first)
            .await
            .expect("the record was never published")
            .expect("publisher running");
    }

    async fn stop(self) {
        self.server.shutdown();
        self.server.stopped().await.expect("hearth stops cleanly");
    }
}

async fn text(response: reqwest::Response) -> String {
    response.text().await.expect("body")
}

fn plain_http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `GET /auth/grant/session` with a bearer, over plain HTTP: the status.
async fn grant_session(http: SocketAddr, user: &PublicKey, bearer: &str) -> StatusCode {
    plain_http()
        .get(format!("http://{http}/auth/grant/session"))
        .header("pubky-host", user.z32())
        .bearer_auth(bearer)
        .send()
        .await
        .expect("GET session")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_finds_hearth_and_every_flow_works() {
    let net = Network::start().await;
    // The ICANN record for `localhost` advertises a port where nothing listens: every flow
    // below can only pass over PubkyTLS, not through the browsers' plain-HTTP fallback.
    let hearth = net
        .hearth(|config| {
            config.icann_domain = Some("localhost".into());
            config.public_http_port = Some(CLOSED_PORT);
        })
        .await;
    let tls = hearth.server.tls_addr().expect("TLS listener");
    let http = hearth.server.addr();
    hearth.published().await;

    // The record, on the DHT and on the relay: section 8's shape, the bound ports.
    let expected = vec![
        format!("@ 3600 IN HTTPS 1 . port={} ipv4hint=127.0.0.1", tls.port()),
        format!("@ 3600 IN HTTPS 10 localhost key65280={:04x}", CLOSED_PORT),
        "@ 3600 IN A 127.0.0.1".to_owned(),
    ];
    for through in [Through::Dht, Through::Relay] {
        let packet = net
            .client(through)
            .resolve(&hearth.key, ResolvePolicy::NetworkOnly)
            .await
            .expect("the server's record resolves");
        assert_eq!(dig(&packet), expected);
    }
    let address =
        hearth::pkarr::resolve::resolve_homeserver(&net.client(Through::Dht), &hearth.key)
            .await
            .expect("resolver");
    assert_eq!(address.tls_addrs(), vec![tls]);
    assert_eq!(address.icann_http_port, Some(CLOSED_PORT));

    let pubky = net.sdk();
    let app = ClientId::new("hearth.test").expect("client id");

    // Sign up (grant flow): the SDK publishes the user's `_pubky` record naming Hearth.
    let signer = pubky.signer(Keypair::random());
    let user = signer.public_key();
    signer.signup(&hearth.key, None).await.expect("signup");
    assert_eq!(
        pubky.get_homeserver_of(&user).await.expect("resolve user"),
        Some(hearth.key.clone())
    );
    let session = signer.signin(app.clone()).await.expect("signin");
    assert_eq!(session.public_key(), user);

    // Follow the user's events over PubkyTLS, from the start.
    let mut events = pubky
        .event_stream_for_user(&user, None)
        .live()
        .subscribe()
        .await
        .expect("events-stream");

    let storage = session.storage();
    for (path, body) in [
        ("/pub/hearth.test/a.txt", "alpha"),
        ("/pub/hearth.test/b.txt", "beta"),
        ("/pub/hearth.test/dir/c.txt", "gamma"),
    ] {
        storage.put(path, body).await.expect("PUT");
    }
    let body = storage
        .get("/pub/hearth.test/a.txt")
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "alpha");
    let public = pubky
        .public_storage()
        .get(format!("pubky{}/pub/hearth.test/b.txt", user.z32()))
        .await
        .expect("public GET")
        .text()
        .await
        .expect("body");
    assert_eq!(public, "beta");

    let listed = storage
        .list("/pub/hearth.test/")
        .expect("list builder")
        .reverse(true)
        .shallow(true)
        .limit(2)
        .send()
        .await
        .expect("list");
    let listed: Vec<String> = listed.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(listed, ["/pub/hearth.test/dir/", "/pub/hearth.test/b.txt"]);

    storage
        .delete("/pub/hearth.test/b.txt")
        .await
        .expect("DELETE");
    assert!(!storage
        .exists("/pub/hearth.test/b.txt")
        .await
        .expect("exists"));

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = events
            .next()
            .await
            .expect("the stream stays open")
            .expect("an event");
        let kind = match event.event_type {
            EventType::Put { .. } => "PUT",
            EventType::Delete => "DEL",
        };
        seen.push(format!("{kind} {}", event.resource.path));
    }
    assert_eq!(
        seen,
        [
            "PUT /pub/hearth.test/a.txt",
            "PUT /pub/hearth.test/b.txt",
            "PUT /pub/hearth.test/dir/c.txt",
            "DEL /pub/hearth.test/b.txt",
        ]
    );
    drop(events);

    // Sign out: the old bearer is refused afterwards (asked over plain HTTP, same router).
    let bearer = session
        .as_grant()
        .expect("a grant session")
        .current_bearer()
        .await;
    assert_eq!(grant_session(http, &user, &bearer).await, StatusCode::OK);
    session
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("signout");
    assert_eq!(
        grant_session(http, &user, &bearer).await,
        StatusCode::UNAUTHORIZED
    );

    // Sign in again: a new session writes.
    let again = signer.signin(app).await.expect("signin again");
    again
        .storage()
        .put("/pub/hearth.test/again.txt", "back")
        .await
        .expect("PUT after signing in again");

    // The deprecated cookie flow: sign in with the same user, then sign up a new one.
    #[allow(deprecated)]
    let cookie = signer.signin_cookie().await.expect("cookie signin");
    cookie
        .storage()
        .put("/pub/hearth.test/cookie.txt", "cookie")
        .await
        .expect("PUT with a cookie session");
    cookie
        .signout()
        .await
        .map_err(|(err, _)| err)
        .expect("cookie signout");

    let newcomer = pubky.signer(Keypair::random());
    #[allow(deprecated)]
    let cookie = newcomer
        .signup_cookie(&hearth.key, None)
        .await
        .expect("cookie signup");
    cookie
        .storage()
        .put("/pub/hearth.test/hello.txt", "hi")
        .await
        .expect("PUT by the newcomer");

    // What landed, read back over plain HTTP.
    let get = |owner: String, path: &'static str| async move {
        let response = plain_http()
            .get(format!("http://{http}{path}"))
            .header("pubky-host", owner)
            .send()
            .await
            .expect("GET");
        (response.status(), text(response).await)
    };
    assert_eq!(
        get(user.z32(), "/pub/hearth.test/again.txt").await,
        (StatusCode::OK, "back".to_owned())
    );
    assert_eq!(
        get(user.z32(), "/pub/hearth.test/cookie.txt").await,
        (StatusCode::OK, "cookie".to_owned())
    );
    assert_eq!(
        get(newcomer.public_key().z32(), "/pub/hearth.test/hello.txt")
            .await
            .1,
        "hi"
    );
    assert_eq!(
        get(user.z32(), "/pub/hearth.test/b.txt").await.0,
        StatusCode::NOT_FOUND
    );

    hearth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_ports_and_address_are_what_is_configured() {
    let net = Network::start().await;
    let hearth = net
        .hearth(|config| {
            config.public_ip = IpAddr::from([203, 0, 113, 7]);
            config.public_tls_port = Some(443);
            config.public_http_port = Some(80);
            config.icann_domain = Some("homeserver.example.org".into());
        })
        .await;
    hearth.published().await;
    let packet = net
        .client(Through::Dht)
        .resolve(&hearth.key, ResolvePolicy::NetworkOnly)
        .await
        .expect("the server's record resolves");
    assert_eq!(
        dig(&packet),
        [
            "@ 3600 IN HTTPS 1 . port=443 ipv4hint=203.0.113.7",
            "@ 3600 IN HTTPS 10 homeserver.example.org",
            "@ 3600 IN A 203.0.113.7",
        ]
    );
    hearth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_records_are_republished_unchanged() {
    let net = Network::start().await;
    // Users republished every second: the first pass comes a second after start.
    let hearth = net.hearth(|config| config.user_republish_secs = 1).await;
    hearth.published().await;

    // A user signs up with the SDK, which publishes the user's `_pubky` record.
    let pubky = net.sdk();
    let signer = pubky.signer(Keypair::random());
    let user = signer.public_key();
    signer.signup(&hearth.key, None).await.expect("signup");
    let reader = net.client(Through::Dht);
    let original = reader
        .resolve(&user, ResolvePolicy::NetworkOnly)
        .await
        .expect("the user's record");

    // Wait for a pass that found the user's record (one may have run between the account's
    // creation and the SDK publishing the record), and check what it did.
    let mut passes = hearth.server.user_passes().expect("republisher on");
    let found = passes.wait_for(|pass| pass.is_some_and(|summary| summary.found == 1));
    let summary = *tokio::time::timeout(HANG_GUARD, found)
        .await
        .expect("no pass found the user's record")
        .expect("republisher running");
    let summary = summary.expect("a pass");
    assert_eq!(
        (
            summary.users,
            summary.found,
            summary.republished,
            summary.missing,
            summary.failed
        ),
        (1, 1, 1, 0, 0)
    );

    // Still resolvable, and the very record the user signed: Pubky republishes unchanged.
    let after = net
        .client(Through::Dht)
        .resolve(&user, ResolvePolicy::NetworkOnly)
        .await
        .expect("the user's record after republishing");
    assert_eq!(after.timestamp(), original.timestamp());
    assert_eq!(after.as_bytes(), original.as_bytes());
    hearth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tls_listener_nothing_is_published() {
    let net = Network::start().await;
    let hearth = net.hearth(|config| config.tls_listen = None).await;
    assert!(hearth.server.record_published().is_none());
    assert!(hearth.server.user_passes().is_none());
    let mut client = pkarr::Client::builder();
    client
        .no_default_network()
        .bootstrap(&net.dht.bootstrap)
        .dht_request_timeout(Duration::from_millis(500));
    let resolved = client
        .build()
        .expect("client")
        .resolve(&hearth.key, ResolvePolicy::NetworkOnly)
        .await;
    assert!(resolved.is_err(), "nothing was published: {resolved:?}");
    hearth.stop().await;
}

#[tokio::test]
async fn bad_pkarr_settings_stop_the_start() {
    let dir = tempfile::tempdir().expect("data dir");
    let mut config = Config::ephemeral(dir.path());
    config.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.pkarr_bootstrap = Some(vec!["not-a-host-port".into()]);
    let err = Server::start(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("not-a-host-port"), "{err}");
    config.pkarr_bootstrap = Some(vec!["127.0.0.1:1".into()]);
    config.pkarr_relay = Some(vec!["ftp://relay".into()]);
    let err = Server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("ftp://relay"), "{err}");
}
