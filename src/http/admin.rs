//! The admin listener: a separate address, off unless configured. Its paths and answers are
//! the Pubky homeserver's (0.17) where Pubky has them:
//!
//! - `GET /generate_signup_token`, `POST /generate_signup_token` (a JSON body: the limits the
//!   user who redeems it gets), `GET /signup_tokens`;
//! - `GET /info`: counts, the server's key, the version (and Hearth's log head and map use);
//! - users (`admin_users`): `GET /users`, `GET /users/{z32}`, `POST /users/{z32}/disable|enable`,
//!   `GET|PATCH /users/{z32}/quota`, `DELETE /webdav/{z32}/pub/{path}`;
//! - `GET /` the status page and `POST /login` (`status`), open without the password (the page
//!   holds nothing secret; what it shows of the admin's comes from the guarded `/info`).
//!
//! A relay's admin listener is the same listener (`listener`: status page, login, `/info`,
//! the password guard) with the relay's source routes in place of the user routes.
//!
//! Every other path needs the password: the `X-Admin-Password` header (as Pubky), HTTP Basic
//! with the password (any user name), or the cookie `POST /login` sets. Without it: 401.

use std::num::NonZeroUsize;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use pubky_common::crypto::random_bytes;
use serde_json::{json, Value};

use super::admin_users::{self, quota_from_json, quota_json};
use super::error::{Error, Result};
use super::status;
use super::tenant::query_pairs;
use super::AppState;
use crate::files::quota::UserQuota;
use crate::files::FileOp;
use crate::ids;

pub const PASSWORD_HEADER: &str = "x-admin-password";

/// The most items one admin listing returns, and how many when not asked (Pubky's numbers).
const MAX_LIST_LIMIT: usize = 1000;
pub(super) const DEFAULT_LIST_LIMIT: usize = 100;

/// The homeserver's admin listener.
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route(
            "/generate_signup_token",
            get(generate_signup_token).post(generate_signup_token_with_limits),
        )
        .route("/signup_tokens", get(list_signup_tokens))
        .route("/users", get(admin_users::list))
        .route("/users/{pubkey}", get(admin_users::get_one))
        .route("/users/{pubkey}/disable", post(admin_users::disable))
        .route("/users/{pubkey}/enable", post(admin_users::enable))
        .route(
            "/users/{pubkey}/quota",
            get(admin_users::get_quota).patch(admin_users::patch_quota),
        )
        .route("/webdav/{*entry}", delete(admin_users::delete_entry));
    listener(guarded, state)
}

/// An admin listener of either role: `guarded` (the role's own routes) and `GET /info`
/// behind the password; the status page, login and logout open; every request counted by
/// route in the metrics, and a body for every refusal the router makes by itself.
pub(super) fn listener(guarded: Router<AppState>, state: AppState) -> Router {
    let guarded = guarded.route("/info", get(status::info)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), require_password),
    );
    let routes = Router::new()
        .merge(guarded)
        .route("/", get(status::page))
        .route("/login", post(status::login))
        .route("/logout", post(status::logout))
        .fallback(
            |uri: Uri| async move { Error::NotFound(format!("no admin route at {}", uri.path())) },
        )
        .layer(axum::middleware::from_fn(super::metrics::track_admin))
        .with_state(state);
    super::error::with_bodies(routes)
}

/// Refuse a request that does not prove the admin password.
async fn require_password(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check_password(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Whether the request proves the admin password, by header, Basic auth or login cookie.
pub(super) fn check_password(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let expected = state.config.admin_password.as_deref().unwrap_or_default();
    if expected.is_empty() {
        return Err(Error::Unauthorized(
            "the admin listener has no password".into(),
        ));
    }
    if let Some(given) = headers.get(PASSWORD_HEADER) {
        return if same(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthorized("invalid admin password".into()))
        };
    }
    if let Some(given) = basic_password(headers) {
        return if same(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthorized("invalid admin password".into()))
        };
    }
    let mut logins = super::session::cookies(headers, status::LOGIN_COOKIE).peekable();
    if logins.peek().is_some() {
        let secret = status::login_secret(state, expected);
        return if logins.any(|given| same(given.as_bytes(), secret.as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthorized(
                "the admin login is no longer valid (the password or the server key changed): log in again".into(),
            ))
        };
    }
    Err(Error::Unauthorized(
        "missing admin password: send X-Admin-Password, or HTTP Basic auth with it".into(),
    ))
}

/// The password of an `Authorization: Basic` header (the user name is not checked).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// Compare in constant time: the password guards the whole admin API.
pub(super) fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /generate_signup_token`: a new single-use token, `XXXX-XXXX-XXXX`, default limits.
async fn generate_signup_token(State(state): State<AppState>) -> Result<Response> {
    mint(&state, UserQuota::default()).await
}

/// `POST /generate_signup_token`: a token whose user gets the limits of the JSON body
/// (Pubky's `UserQuota`: absent or null = the server's default, `"unlimited"`, or a value).
/// An empty body is the defaults.
async fn generate_signup_token_with_limits(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response> {
    let quota = if body.iter().all(u8::is_ascii_whitespace) {
        UserQuota::default()
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|err| Error::bad_request(format!("the body is not JSON: {err}")))?;
        let patch = quota_from_json(&value).map_err(Error::Unprocessable)?;
        let quota = UserQuota::default().patched(&patch);
        quota.validate().map_err(Error::Unprocessable)?;
        quota
    };
    mint(&state, quota).await
}

async fn mint(state: &AppState, quota: UserQuota) -> Result<Response> {
    let token = new_signup_token();
    state
        .write(FileOp::MintSignupToken {
            token: token.clone(),
            quota,
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        token,
    )
        .into_response())
}

/// `GET /signup_tokens?limit=&cursor=&state=all|used|unused`: tokens in token order,
/// `{"items":[...],"next_cursor":...}` as Pubky answers.
async fn list_signup_tokens(State(state): State<AppState>, uri: Uri) -> Result<Json<Value>> {
    let mut used = None;
    let mut cursor = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in query_pairs(&uri) {
        match key.as_str() {
            "limit" => limit = parse_limit(&value)?,
            "cursor" => {
                if !is_signup_token(&value) {
                    return Err(Error::bad_request(format!(
                        "invalid cursor {value:?}: a signup token, XXXX-XXXX-XXXX"
                    )));
                }
                cursor = Some(value);
            }
            "state" => {
                used = match value.as_str() {
                    "all" => None,
                    "used" => Some(true),
                    "unused" => Some(false),
                    _ => {
                        return Err(Error::bad_request(format!(
                            "state must be all, used or unused, not {value:?}"
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    let page = state
        .files
        .signup_tokens_page(used, cursor.as_deref(), limit)?;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|(token, record)| {
            json!({
                "token": token,
                "created_at": naive_datetime(record.created_ms),
                "used_at": record.used_ms.map(naive_datetime),
                "used_by": record.used_by,
                "quota": quota_json(&record.quota),
            })
        })
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// A listing's `limit`: 1 or more (400 otherwise), at most 1000 (larger is cut), as Pubky.
pub(super) fn parse_limit(value: &str) -> Result<usize> {
    let limit: NonZeroUsize = value.parse().map_err(|_| {
        Error::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {value:?}"
        ))
    })?;
    Ok(limit.get().min(MAX_LIST_LIMIT))
}

/// Unix milliseconds as Pubky's timestamps print (chrono's `NaiveDateTime`, UTC, no zone):
/// `2025-08-12T10:11:12.123`, the fraction only when there is one.
pub(super) fn naive_datetime(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if !ms.is_multiple_of(1000) {
        text.push_str(&format!(".{:03}", ms % 1000));
    }
    text
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// 60 random bits as 12 Crockford characters in groups of four, as Pubky formats them.
fn new_signup_token() -> String {
    let bits = u64::from_be_bytes(random_bytes::<8>()) >> 4;
    let chars = ids::encode(bits);
    let body = &chars[1..];
    format!("{}-{}-{}", &body[..4], &body[4..8], &body[8..])
}

/// Whether `token` has the shape of a signup token (checked before anything else is done).
pub fn is_signup_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() == 14
        && bytes[4] == b'-'
        && bytes[9] == b'-'
        && token
            .split('-')
            .all(|group| group.len() == 4 && group.bytes().all(ids::is_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_have_the_pubky_shape() {
        for _ in 0..100 {
            let token = new_signup_token();
            assert!(is_signup_token(&token), "{token}");
        }
        assert!(!is_signup_token("JZY0-D6MY-ZFN"));
        assert!(!is_signup_token("JZY0-D6MY-ZFNI"));
        assert!(!is_signup_token("JZY0D6MYZFNG00"));
    }

    #[test]
    fn timestamps_print_as_chrono_prints_naive_datetimes() {
        assert_eq!(naive_datetime(0), "1970-01-01T00:00:00");
        assert_eq!(naive_datetime(1_755_000_000_123), "2025-08-12T12:00:00.123");
        assert_eq!(naive_datetime(951_782_400_000), "2000-02-29T00:00:00");
    }

    #[test]
    fn basic_auth_carries_the_password() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46aHVudGVyMg=="),
        );
        assert_eq!(basic_password(&headers).as_deref(), Some("hunter2"));
        assert!(same(b"hunter2", b"hunter2"));
        assert!(!same(b"hunter3", b"hunter2"));
        assert!(!same(b"hunter", b"hunter2"));
    }
}
