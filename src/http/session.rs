//! Whether a request proves a session, and whether that session may write where it asks.
//!
//! A session is proved by either credential: a grant-flow bearer (`Authorization: Bearer`,
//! minted by `grant`), which wins, or a cookie named by the user's z32 key whose value is the
//! session secret (the cookie flow of `auth`). Both come out as the same `Session`: a user and
//! capabilities, so a write is checked one way whichever proved it.

use axum::http::{header, HeaderMap};
use pubky_common::capabilities::{Action, Capability};
use pubky_common::session::CookieSessionRecord;

use super::error::{Error, Result};
use super::AppState;
use crate::clock::now_secs;
use crate::files::GrantRecord;
use crate::store::StoreError;

/// A bearer is 32 random bytes, base64url without padding: always 43 characters.
const BEARER_LEN: usize = 43;

/// The values of every cookie named `name`, in the order the request sent them.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// A session secret is 26 Crockford base32 characters (128 random bits, as `auth` mints them);
/// a cookie of another shape names no session and is never looked up.
pub const SESSION_SECRET_LEN: usize = 26;

pub fn is_session_secret(value: &str) -> bool {
    value.len() == SESSION_SECRET_LEN && value.bytes().all(crate::ids::is_digit)
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
    if let Some(session) = bearer_session(state, headers)? {
        return Ok(session);
    }
    let (secret, record) =
        cookie_session(headers, user, |secret| Ok(state.files.session(secret)?))?;
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

/// The first cookie named `user` whose secret `find` knows. A browser may hold several cookies
/// of one name (another path, a stale one): a malformed or unknown one is skipped, not an
/// error, and never looked up when it cannot be a secret.
fn cookie_session<'h, T>(
    headers: &'h HeaderMap,
    user: &'h str,
    mut find: impl FnMut(&str) -> Result<Option<T>>,
) -> Result<(&'h str, T)> {
    let mut sent = false;
    for secret in cookies(headers, user) {
        sent = true;
        if !is_session_secret(secret) {
            continue;
        }
        if let Some(found) = find(secret)? {
            return Ok((secret, found));
        }
    }
    Err(Error::Unauthorized(if sent {
        "the session has expired or was signed out".into()
    } else {
        format!("no session for {user}: sign in first")
    }))
}

/// Allow a write to `path` of `user` only with a session of `user` whose capabilities include
/// `w` on a scope covering the path (a scope ending in `/` covers everything below it).
pub fn authorize_write(
    state: &AppState,
    headers: &HeaderMap,
    user: &str,
    path: &str,
) -> Result<()> {
    let (owner, capabilities) = write_session(state, headers, user)?;
    if owner != user {
        return Err(Error::Forbidden(format!(
            "this session belongs to {owner}, not to {user}: it cannot write there"
        )));
    }
    let allowed = capabilities.iter().any(|cap| {
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

/// What a write needs of the request's session: its user and capabilities (`session_for`,
/// without the cookie record's public key decompressed).
fn write_session(
    state: &AppState,
    headers: &HeaderMap,
    user: &str,
) -> Result<(String, Vec<Capability>)> {
    if let Some(session) = bearer_session(state, headers)? {
        return Ok((session.user, session.capabilities));
    }
    let (_, (owner, capabilities)) = cookie_session(headers, user, |secret| {
        Ok(state.files.cookie_session(secret)?)
    })?;
    if owner != user {
        return Err(Error::Forbidden(format!(
            "this session belongs to {owner}, not to {user}"
        )));
    }
    Ok((owner, capabilities))
}

/// The session a request's `Authorization: Bearer` proves, if it proves one. A header that is
/// not a bearer of ours, an unknown or expired bearer, or one whose grant was revoked or has
/// expired is no session (the caller then tries cookies); only storage failures are errors.
pub fn bearer_session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>> {
    let Some(token) = bearer_token(headers) else {
        return Ok(None);
    };
    let Some((bearer, grant)) = state.files.bearer_session(&bearer_hash(token))? else {
        return Ok(None);
    };
    let now = now_secs();
    if bearer.expires_s <= now || grant.exp <= now || grant.revoked_s.is_some() {
        return Ok(None);
    }
    let capabilities = grant
        .caps
        .iter()
        .map(|cap| {
            cap.parse::<Capability>().map_err(|err| {
                StoreError::Corrupt(format!("stored capability {cap:?}: {err}")).into()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Session {
        user: grant.user.clone(),
        capabilities,
        credential: Credential::Bearer {
            grant_id: bearer.grant_id,
            grant,
            token_expires_s: bearer.expires_s,
        },
    }))
}

/// The token of an `Authorization: Bearer <token>` header, when it has a bearer's shape.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && token.len() == BEARER_LEN).then_some(token)
}

/// Bearers are stored by hash: a copy of the store holds no usable token.
pub(super) fn bearer_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A disabled user's sessions are refused (403 `User is disabled`), as are their writes.
pub fn refuse_disabled(state: &AppState, user: &str) -> Result<()> {
    match state.files.user(user)? {
        Some(record) if record.disabled => {
            Err(Error::Forbidden(crate::files::USER_DISABLED.into()))
        }
        _ => Ok(()),
    }
}
