//! Property tests over every parser that request input reaches: paths, event ids, `sub`
//! patterns, query strings (`/firehose`, `/events/`, `/events-stream`, listings), AuthTokens,
//! grants and proofs (JWS), cookies, and `pubky-host`/`Host`. Each property is "never panics,
//! and what is accepted is well-formed"; the inputs are built from the pieces that matter to
//! each parser (separators, escapes, control and multi-byte characters, valid keys, lengths at
//! the limits), not only random bytes.
//!
//! Bounded for CI: 256 cases per property (a few seconds in all). `HEARTH_FUZZ_CASES=100000
//! cargo test --lib fuzz` runs longer. A failure is saved under `proptest-regressions/` and
//! replayed first from then on: commit it with the fix.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Uri};
use proptest::prelude::*;
use proptest::test_runner::Config;
use pubky_common::auth::jws::{sign_jws, ClientId, GrantId, PopNonce, GRANT_JWS_TYP, POP_JWS_TYP};
use pubky_common::auth::{grant::GrantClaims, pop::PopProofClaims, AuthToken};
use pubky_common::capabilities::{Capabilities, Capability};
use pubky_common::crypto::Keypair;

use super::{auth, files, firehose, jws, pubky_events, session, sse, tenant};
use crate::log::subscriptions::Pattern;
use crate::path::{FilePath, MAX_PATH_BYTES, MAX_SEGMENT_BYTES};

fn config() -> Config {
    let cases = std::env::var("HEARTH_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        ..Config::default()
    }
}

const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

/// Text made of the pieces that matter to paths and queries.
fn pieces() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("pub".to_string()),
        Just("priv".to_string()),
        Just("%2e".to_string()),
        Just("%2F".to_string()),
        Just("%00".to_string()),
        Just("%ff".to_string()),
        Just("%".to_string()),
        Just("*".to_string()),
        Just(":".to_string()),
        Just("=".to_string()),
        Just("&".to_string()),
        Just("+".to_string()),
        Just("?".to_string()),
        Just(ALICE.to_string()),
        Just("é".to_string()),
        Just("\u{0}".to_string()),
        Just("\u{7f}".to_string()),
        "[a-z0-9]{1,8}",
        (1usize..300).prop_map(|n| "x".repeat(n)),
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// A query string of known and unknown keys with values built from `pieces`.
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("sub"),
        Just("lastSeq"),
        Just("live"),
        Just("limit"),
        Just("cursor"),
        Just("reverse"),
        Just("shallow"),
        Just("user"),
        Just("path"),
        Just("pubky-host"),
        Just("other"),
        Just(""),
    ];
    let value = prop_oneof![
        pieces(),
        Just(String::new()),
        Just("true".to_string()),
        Just("0000000000000".to_string()),
        Just(format!("{ALICE}:5")),
        Just(format!("{ALICE}/pub/*")),
        Just("*/pub/*".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
    ];
    let pair = (key, value, any::<bool>()).prop_map(|(k, v, bare)| {
        let v: String =
            percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        if bare {
            k.to_string()
        } else {
            format!("{k}={v}")
        }
    });
    proptest::collection::vec(pair, 0..12).prop_map(|pairs| pairs.join("&"))
}

fn uri(path: &str, query: &str) -> Option<Uri> {
    format!("{path}?{query}").parse().ok()
}

/// The text a header value may carry (visible ASCII, spaces, tabs, and obs-text bytes).
fn header_text() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        pieces(),
        "[ -~\t]{0,80}",
        Just(format!("_pubky.{ALICE}")),
        Just(format!("{ALICE}:6287")),
        Just("[::1]:6287".to_string()),
        Just(format!("pubky{ALICE}")),
    ]
    .prop_filter_map("not a header value", |text| {
        HeaderValue::from_str(&text).ok()
    })
}

fn grant_claims(user: &Keypair, client: &Keypair, now: u64) -> GrantClaims {
    GrantClaims {
        iss: user.public_key(),
        client_id: ClientId::new("fuzz.app").expect("client id"),
        caps: vec![Capability::root()],
        cnf: client.public_key(),
        jti: GrantId::generate(),
        iat: now,
        exp: now + 3600,
    }
}

/// A grant and a proof for it, signed once for every case (signing is the slow part).
struct Signed {
    claims: GrantClaims,
    aud: String,
    grant: String,
    pop: String,
}

fn signed(now: u64) -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let (user, client, server) = (
            Keypair::from_secret(&[1; 32]),
            Keypair::from_secret(&[2; 32]),
            Keypair::from_secret(&[3; 32]),
        );
        let claims = grant_claims(&user, &client, now);
        let pop = PopProofClaims {
            aud: server.public_key(),
            gid: claims.jti.clone(),
            nonce: PopNonce::generate(),
            iat: now,
        };
        Signed {
            aud: server.public_key().z32(),
            grant: sign_jws(&user, GRANT_JWS_TYP, &claims),
            pop: sign_jws(&client, POP_JWS_TYP, &pop),
            claims,
        }
    })
}

/// Replace the character at `at` (modulo the length) with `with`.
fn mutate(text: &str, at: usize, with: char) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return with.to_string();
    }
    let at = at % chars.len();
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i == at { with } else { *c })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Paths: an accepted path is normalized, under /pub/, within the limits, and stable.
    #[test]
    fn paths(raw in pieces()) {
        let raw = format!("/pub/{raw}");
        if let Ok(path) = FilePath::from_uri_path(&raw) {
            let text = path.as_str();
            prop_assert!(text.starts_with("/pub/"), "{text:?}");
            prop_assert!(!text.contains("//") && !text.contains("/./") && !text.contains("/../"));
            prop_assert!(text.len() <= MAX_PATH_BYTES + 1, "{}", text.len());
            prop_assert!(text.split('/').all(|s| s.len() <= MAX_SEGMENT_BYTES));
            prop_assert!(!text.chars().any(char::is_control));
            prop_assert_eq!(FilePath::parse(text).map(|p| p.as_str().to_string()), Ok(text.to_string()));
        }
    }

    /// Event ids, in `lastSeq` and in `Last-Event-ID`: accepted only as 13 characters that
    /// encode back to themselves.
    #[test]
    fn event_ids(text in prop_oneof![pieces(), "[0-9A-Z]{12,14}"]) {
        if let Ok(seq) = crate::ids::decode(&text) {
            prop_assert_eq!(crate::ids::encode(seq), text.clone());
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", value);
            if let Ok(Some(seq)) = sse::last_event_id(&headers) {
                prop_assert_eq!(crate::ids::encode(seq), text.trim());
            }
        }
    }

    /// `sub` patterns: an accepted one prints back as itself (after the canonical key).
    #[test]
    fn sub_patterns(text in pieces()) {
        if let Ok(pattern) = Pattern::parse(&text) {
            let printed = pattern.to_string();
            prop_assert_eq!(Pattern::parse(&printed).ok(), Some(pattern));
        }
    }

    /// `/firehose` queries: within the pattern cap, a limit of at least 1.
    #[test]
    fn firehose_queries(query in query()) {
        if let Some(uri) = uri("/firehose", &query) {
            if let Ok(request) = firehose::parse_request(&uri, &HeaderMap::new(), 5) {
                prop_assert!(!request.patterns.is_empty() && request.patterns.len() <= 5);
                prop_assert!(request.limit.is_none_or(|n| n >= 1));
            }
        }
    }

    /// `/events/` and `/events-stream` queries: Pubky's limits, users x paths within the cap,
    /// canonical users, normalized public paths, never live and reverse together.
    #[test]
    fn pubky_event_queries(query in query()) {
        if let Some(uri) = uri("/events/", &query) {
            if let Ok((_, limit)) = pubky_events::parse_feed_query(&uri) {
                prop_assert!(limit <= 1000);
            }
        }
        if let Some(uri) = uri("/events-stream", &query) {
            if let Ok(request) = pubky_events::parse_stream_request(&uri, 10) {
                prop_assert!(!request.users.is_empty() && request.users.len() <= 50);
                prop_assert!(request.users.len() * request.paths.len() <= 10);
                prop_assert!(!(request.live && request.reverse));
                prop_assert!(request.limit.is_none_or(|n| n >= 1));
                for (user, _) in &request.users {
                    let canonical = crate::keys::canonical(user).ok();
                    prop_assert_eq!(canonical.as_ref(), Some(user));
                }
                for path in &request.paths {
                    prop_assert!(path.starts_with("/pub/"), "{path}");
                }
            }
        }
    }

    /// Listing queries: a limit of at most 1000, a cursor under the directory listed.
    #[test]
    fn listing_queries(query in query(), dir in pieces()) {
        let Ok(dir) = FilePath::from_uri_path(&format!("/pub/{dir}/")) else {
            return Ok(());
        };
        if let Some(uri) = uri(dir.as_str(), &query) {
            if let Ok(options) = files::list_options(ALICE, &dir, &uri) {
                prop_assert!(options.limit <= 1000);
                if let Some(cursor) = &options.cursor {
                    prop_assert!(cursor.starts_with(dir.as_str()), "{cursor} not under {dir}");
                }
            }
        }
    }

    /// AuthTokens: random bytes, and a valid token with one byte changed, never verify (the
    /// signature covers every byte).
    #[test]
    fn auth_tokens(bytes in proptest::collection::vec(any::<u8>(), 0..300), at: usize, byte: u8) {
        prop_assert!(auth::verify_token(&bytes).is_err());
        static TOKEN: OnceLock<Vec<u8>> = OnceLock::new();
        let mut token = TOKEN
            .get_or_init(|| {
                let caps: Capabilities = "/pub/:rw".parse().expect("caps");
                AuthToken::sign(&Keypair::from_secret(&[7; 32]), caps).serialize()
            })
            .clone();
        let at = at % token.len();
        if token[at] != byte {
            token[at] = byte;
            prop_assert!(auth::verify_token(&token).is_err());
        }
    }

    /// Grants and proofs (compact JWS): garbage never verifies; a signed grant or proof with a
    /// character changed in its header or claims never verifies; one changed in its signature
    /// verifies only if it decodes to the same signature (base64's spare bits), with the same
    /// claims.
    #[test]
    fn grants_and_proofs(garbage in pieces(), at: usize, with in prop_oneof![Just('A'), Just('.'), Just('_'), any::<char>()]) {
        let now = 1_800_000_000;
        let Signed { claims, aud, grant, pop } = signed(now);
        prop_assert!(jws::verify_grant(&garbage, now).is_err());
        prop_assert!(jws::verify_pop(&garbage, claims, aud, now).is_err());

        let changed = mutate(grant, at, with);
        if &changed != grant {
            let signature_from = grant.rfind('.').expect("three parts") + 1;
            if let Ok(verified) = jws::verify_grant(&changed, now) {
                prop_assert!(at % grant.chars().count() >= signature_from, "{changed}");
                prop_assert_eq!(&verified, claims);
            }
        }
        let changed = mutate(pop, at, with);
        if &changed != pop {
            let signature_from = pop.rfind('.').expect("three parts") + 1;
            if jws::verify_pop(&changed, claims, aud, now).is_ok() {
                prop_assert!(at % pop.chars().count() >= signature_from, "{changed}");
            }
        }
    }

    /// Cookies: whatever a Cookie header holds, only values of a session secret's shape are
    /// ever looked up, so nothing malformed reaches the store.
    #[test]
    fn cookies(values in proptest::collection::vec(header_text(), 0..4)) {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(axum::http::header::COOKIE, value);
        }
        for value in session::cookies(&headers, ALICE) {
            if session::is_session_secret(value) {
                prop_assert_eq!(value.len(), session::SESSION_SECRET_LEN);
                prop_assert!(value.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }
    }

    /// The tenant, from `pubky-host`, `?pubky-host=` and `Host`: a tenant named is a
    /// canonical key, and a `pubky-host` that is not a key is a 400, never a guess.
    #[test]
    fn tenants(host in header_text(), pubky_host in proptest::option::of(header_text()), query in query()) {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::HOST, host);
        if let Some(value) = pubky_host {
            headers.insert(tenant::PUBKY_HOST, value);
        }
        let Some(uri) = uri("/pub/x", &query) else {
            return Ok(());
        };
        if let Ok(Some(user)) = tenant::tenant(&headers, &uri) {
            prop_assert_eq!(crate::keys::canonical(&user).ok(), Some(user));
        }
    }
}
