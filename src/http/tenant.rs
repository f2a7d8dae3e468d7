//! Who a request is about (its tenant), and whether its session may write there.
//!
//! The tenant is named like a Pubky homeserver names it: the `pubky-host` header, else the
//! `?pubky-host=` query parameter, else a label of the `Host` header that parses as a public
//! key. A session is proved by either credential: a grant-flow bearer (`Authorization:
//! Bearer`, see `grant`), which wins, or a cookie named by the user's z32 key whose value is
//! the session secret. Both come out as the same `Session`: a user and capabilities, so a
//! write is checked one way whichever proved it.

use axum::http::{header, HeaderMap, Uri};
use pubky_common::capabilities::{Action, Capability};
use pubky_common::session::CookieSessionRecord;

use super::{grant, AppState};
use crate::error::{Error, Result};
use crate::storage::schema::GrantRecord;

pub const PUBKY_HOST: &str = "pubky-host";

/// Parse a z-base32 public key; the canonical z32 string on success.
pub fn parse_user(value: &str) -> Result<String> {
    let trimmed = value
        .strip_prefix("pubky")
        .filter(|v| v.len() == 52)
        .unwrap_or(value);
    pkarr::PublicKey::try_from(trimmed)
        .map(|key| key.to_string())
        .map_err(|err| Error::bad_request(format!("{value:?} is not a public key: {err}")))
}

/// The tenant the request names, if it names one.
pub fn tenant(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>> {
    if let Some(value) = headers.get(PUBKY_HOST) {
        let value = value
            .to_str()
            .map_err(|_| Error::bad_request("the pubky-host header is not text"))?;
        return parse_user(value).map(Some);
    }
    if let Some(value) = query_param(uri, PUBKY_HOST) {
        return parse_user(&value).map(Some);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    Ok(host
        .rsplit('.')
        .find_map(|label| pkarr::PublicKey::try_from(label).ok())
        .map(|key| key.to_string()))
}

/// The tenant, required: reads of `/pub/` and every write need one.
pub fn require_tenant(headers: &HeaderMap, uri: &Uri) -> Result<String> {
    tenant(headers, uri)?.ok_or_else(|| {
        Error::bad_request(
            "no tenant: name the user with the pubky-host header or ?pubky-host=<z32>",
        )
    })
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    query_pairs(uri)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Every `key=value` of the query, percent-decoded (`+` is a space, as in forms).
pub fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key), decode_component(value))
        })
}

fn decode_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The value of the cookie named `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A proved session: who it acts for and what it may do.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user, z32.
    pub user: String,
    pub capabilities: Vec<Capability>,
    pub credential: Credential,
}

/// What proved the session.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The cookie flow: the cookie's secret and the record stored for it.
    Cookie {
        secret: String,
        record: CookieSessionRecord,
    },
    /// The grant flow: the grant the bearer was minted from, and the bearer's expiry.
    Bearer {
        grant_id: String,
        grant: GrantRecord,
        token_expires_s: u64,
    },
}

/// The session the request holds for `user`. A valid bearer wins (it may belong to another
/// user: `authorize_write` tells them apart); an unknown or expired bearer is no session and
/// the tenant's cookie is tried, as Pubky does.
pub fn session_for(state: &AppState, headers: &HeaderMap, user: &str) -> Result<Session> {
    if let Some(session) = grant::bearer_session(state, headers)? {
        return Ok(session);
    }
    let secret = cookie(headers, user)
        .ok_or_else(|| Error::Unauthorized(format!("no session for {user}: sign in first")))?;
    let record = state
        .store
        .session(secret)?
        .ok_or_else(|| Error::Unauthorized("the session has expired or was signed out".into()))?;
    if record.public_key().z32() != user {
        return Err(Error::Forbidden(format!(
            "this session belongs to {}, not to {user}",
            record.public_key().z32()
        )));
    }
    Ok(Session {
        user: user.to_string(),
        capabilities: record.capabilities().to_vec(),
        credential: Credential::Cookie {
            secret: secret.to_string(),
            record,
        },
    })
}

/// Allow a write to `path` of `user` only with a session of `user` whose capabilities include
/// `w` on a scope covering the path (a scope ending in `/` covers everything below it).
pub fn authorize_write(
    state: &AppState,
    headers: &HeaderMap,
    user: &str,
    path: &str,
) -> Result<()> {
    let session = session_for(state, headers, user)?;
    if session.user != user {
        return Err(Error::Forbidden(format!(
            "this session belongs to {}, not to {user}: it cannot write there",
            session.user
        )));
    }
    let allowed = session.capabilities.iter().any(|cap| {
        let scope = cap.scope().as_str();
        let covers = if scope.ends_with('/') {
            path.starts_with(scope)
        } else {
            path == scope
        };
        covers && cap.actions().contains(&Action::Write)
    });
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "the session has no write capability covering {path}"
        )))
    }
}
