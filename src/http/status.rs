//! The admin listener's status page (`GET /`), its login (`POST /login`, `POST /logout`), and
//! `GET /info`, the numbers it shows.
//!
//! The page is one self-contained HTML file (inline CSS and JS, no build step, nothing from
//! elsewhere). It is served without the password because it holds nothing secret: the
//! server's key and public URL, the log's head, and a live view of the firehose, which is
//! public on the main listener (CORS is open there), read with `EventSource`. What only the
//! admin may see (counts of users and tokens, the map) comes from `GET /info`, and on a relay
//! its sources from `GET /relay/sources`; both need the password like every admin call.
//!
//! A browser cannot add the `X-Admin-Password` header to its requests, so the page offers a
//! login form: `POST /login` checks the password and sets an `HttpOnly; SameSite=Strict` cookie
//! holding a keyed hash of the password under a key derived from the server's secret key (it
//! survives restarts; a new password or a new server key logs everyone out). HTTP Basic auth
//! with the password works too (any user name), e.g. `http://admin:PASSWORD@host:port/`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::admin::check_password;
use super::error::{Error, Result};
use super::tenant::decode_form;
use super::AppState;
use crate::files::quota::MIB;
use crate::ids::Id;

/// The login cookie's name.
pub const LOGIN_COOKIE: &str = "hearth_admin";

/// How far back the page's live view starts: the last this many events.
const REPLAY: u64 = 50;

const PAGE: &str = include_str!("status.html");

/// The key of the login cookies, derived from the server's secret key: only this server can
/// make a cookie, and one it made stays good across restarts.
pub fn admin_login_key(server_secret: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("hearth 2026 admin status page login cookie", server_secret)
}

/// The login cookie's value for `password`: a keyed BLAKE3 under the server's login key.
pub fn login_secret(state: &AppState, password: &str) -> String {
    blake3::keyed_hash(&state.login_key, password.as_bytes())
        .to_hex()
        .to_string()
}

/// `GET /`: the status page.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let authed = check_password(&state, &headers).is_ok();
    let log = state.log.clone();
    let (head, first) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((log.last_seq()?, log.first_seq()?))
    })
    .await
    .map_err(|err| Error::Internal(err.to_string()))??;
    // Replay the last few events, but never ask for a trimmed one (that is a 410).
    let start = head
        .saturating_sub(REPLAY)
        .max(first.map_or(head, |first| first.saturating_sub(1)));
    let config = json!({
        "key": state.server_key.as_ref(),
        "url": format!("http://{}", state.config.listen),
        "version": env!("CARGO_PKG_VERSION"),
        "head": Id(head).to_string(),
        "start": Id(start).to_string(),
        "authed": authed,
        "relay": state.relay.is_some(),
    });
    // `<` escaped so that no value can close the script element it sits in.
    let config = config.to_string().replace('<', "\\u003c");
    let html = PAGE.replace("{{CONFIG}}", &config);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self' http: https:; img-src data:; form-action 'self'; \
                     frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
        ],
        html,
    )
        .into_response())
}

/// `POST /login` (a form with `password`): on the right password, the login cookie; back to
/// the page either way (`/?denied` when wrong).
pub async fn login(State(state): State<AppState>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let password = decode_form(&text)
        .find(|(key, _)| key == "password")
        .map(|(_, value)| value)
        .unwrap_or_default();
    let expected = state.config.admin_password.as_deref().unwrap_or_default();
    if expected.is_empty() || !super::admin::same(password.as_bytes(), expected.as_bytes()) {
        return redirect("/?denied", None);
    }
    let cookie = format!(
        "{LOGIN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        login_secret(&state, expected)
    );
    redirect("/", Some(cookie))
}

/// `POST /logout`: forget the login cookie.
pub async fn logout() -> Response {
    redirect(
        "/",
        Some(format!(
            "{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        )),
    )
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /info`: Pubky's admin info (counts, key, version) and Hearth's own numbers: the
/// log's head and oldest event, events retained, the LMDB map, open streams. A relay has no
/// users, tokens or files: its `/info` has its sources (as `/relay/sources`) instead.
pub async fn info(State(state): State<AppState>) -> Result<Json<Value>> {
    let files = state.files.clone();
    let log = state.log.clone();
    let relay = state.relay.is_some();
    let (counts, head, first, events, (map_used, map_size)) =
        tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((
                (!relay).then(|| files.counts()).transpose()?,
                log.last_seq()?,
                log.first_seq()?,
                log.count()?,
                log.map_usage()?,
            ))
        })
        .await
        .map_err(|err| Error::Internal(err.to_string()))??;
    let mut info = json!({
        "public_key": state.server_key.as_ref(),
        "pkarr_pubky_address": pubky_address(&state),
        "pkarr_icann_domain": icann_address(&state),
        "version": env!("CARGO_PKG_VERSION"),
        "url": format!("http://{}", state.config.listen),
        "log": {
            "head": Id(head).to_string(),
            "head_seq": head,
            "first": first.map(|seq| Id(seq).to_string()),
            "events": events,
        },
        "map": { "used_bytes": map_used, "size_bytes": map_size },
        "event_streams": state.hub.subscribers(),
    });
    let role = match (&state.relay, counts) {
        (Some(relay), _) => json!({ "relay_sources": relay.sources() }),
        (None, Some(counts)) => json!({
            "num_users": counts.users,
            "num_disabled_users": counts.disabled_users,
            "total_disk_used_mb": counts.used_bytes / MIB,
            "num_signup_codes": counts.signup_tokens,
            "num_unused_signup_codes": counts.unused_signup_tokens,
            "total_disk_used_bytes": counts.used_bytes,
        }),
        (None, None) => json!({}),
    };
    if let (Some(info), Value::Object(role)) = (info.as_object_mut(), role) {
        info.extend(role);
    }
    Ok(Json(info))
}

/// Where the pkarr record sends PubkyTLS clients, as Pubky's `/info` prints it: the public IP
/// and TLS port; none without a TLS listener (or on port 0).
fn pubky_address(state: &AppState) -> Option<String> {
    let config = &state.config;
    let port = config
        .public_tls_port
        .or(config.tls_listen.map(|tls| tls.port()))?;
    (port != 0).then(|| format!("{}:{port}", config.public_ip))
}

/// The ICANN domain and HTTP port of the record, when a domain is set.
fn icann_address(state: &AppState) -> Option<String> {
    let config = &state.config;
    let domain = config.icann_domain.as_ref()?;
    let port = config.public_http_port.unwrap_or(config.listen.port());
    Some(format!("{domain}:{port}"))
}
