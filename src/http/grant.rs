//! Accounts and sessions by Pubky's grant flow, the one the current `pubky` SDK signs in with.
//!
//! The user signs a grant (a JWS: which client key, which capabilities, until when); the
//! client proves it holds that key with a fresh PoP (a JWS addressed to this server). The pair
//! buys an opaque bearer token, good for an hour at most, which requests then present as
//! `Authorization: Bearer <token>`. Grants, bearers (only their hashes) and spent proofs live
//! in LMDB, so sessions survive restarts; every change goes through the writer, and a refused
//! request changes nothing (its proof is not spent either).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::grant_session_responses::{GrantSessionInfo, GrantSessionResponse};
use pubky_common::auth::jws::{ClientId, GrantId};
use pubky_common::capabilities::Capability;
use pubky_common::crypto::{random_bytes, PublicKey};
use serde::{Deserialize, Serialize};

use super::auth::{signup_token_for_mode, signup_token_param};
use super::error::{Error, Result};
use super::jws::{verify_grant, verify_grant_signature, verify_pop};
use super::session::{bearer_hash, bearer_session, refuse_disabled, Credential};
use super::AppState;
use crate::clock::now_secs;
use crate::files::{BearerRecord, FileOp, GrantRecord, RevokeProof, SpentPop};
use crate::store::StoreError;

/// The `client_id` a signup grant must carry: it buys an account, never a session.
const SIGNUP_CLIENT_ID: &str = "pubky.signup";
/// A signup grant is single-purpose, so it must be short-lived.
const MAX_SIGNUP_GRANT_SECS: u64 = 5 * 60;
/// A bearer lives an hour at most (never past its grant); clients refresh with a new PoP.
const BEARER_LIFETIME_SECS: u64 = 3600;

/// The body of every grant request.
#[derive(Deserialize)]
struct GrantRequest {
    grant: String,
    pop: String,
}

fn parse_request(body: &[u8]) -> Result<GrantRequest> {
    serde_json::from_slice(body).map_err(|err| {
        Error::bad_request(format!(
            "the body must be JSON {{\"grant\":\"<jws>\",\"pop\":\"<jws>\"}}: {err}"
        ))
    })
}

/// The server's own key: the audience every PoP must name.
fn server_key(state: &AppState) -> Result<PublicKey> {
    PublicKey::try_from_z32(&state.server_key)
        .map_err(|err| Error::Internal(format!("the server key does not parse: {err}")))
}

/// Check a PoP for `grant`; what the writer needs to spend it.
fn check_pop(state: &AppState, pop: &str, grant: &GrantClaims, now: u64) -> Result<SpentPop> {
    let claims = verify_pop(pop, grant, &state.server_key, now)?;
    Ok(SpentPop {
        iat: claims.iat,
        nonce: claims.nonce.as_str().to_string(),
    })
}

/// A signup grant buys an account only: it must say so, cover everything, and be short-lived.
fn check_signup_grant(grant: &GrantClaims, now: u64) -> Result<()> {
    if grant.client_id.as_str() != SIGNUP_CLIENT_ID {
        return Err(Error::bad_request(format!(
            "signup grants must use client_id {SIGNUP_CLIENT_ID}"
        )));
    }
    if !grant.caps.iter().any(Capability::is_root) {
        return Err(Error::Forbidden(
            "Root capability required: a signup grant must include /:rw".into(),
        ));
    }
    if grant.iat > now + super::jws::MAX_CLOCK_SKEW_SECS {
        return Err(Error::bad_request(
            "signup grant iat is too far in the future",
        ));
    }
    if grant.exp.saturating_sub(grant.iat) > MAX_SIGNUP_GRANT_SECS {
        return Err(Error::bad_request(
            "signup grant lifetime exceeds 5 minutes",
        ));
    }
    Ok(())
}

/// `POST /auth/grant/signup[?signup_token=T]`: create the grant's user. 204, no session: the
/// client signs in next with a grant of its own.
pub async fn signup(State(state): State<AppState>, uri: Uri, body: Bytes) -> Result<Response> {
    let signup_token = signup_token_param(&uri)?;
    let request = parse_request(&body)?;
    let now = now_secs();
    let grant = verify_grant(&request.grant, now)?;
    check_signup_grant(&grant, now)?;
    let pop = check_pop(&state, &request.pop, &grant, now)?;
    let signup_token = signup_token_for_mode(&state, signup_token, "/auth/grant/signup")?;
    state
        .write(FileOp::GrantSignup {
            user: grant.iss.z32(),
            pop,
            signup_token,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/grant/session`: exchange a grant and a fresh PoP for a bearer. Repeating it
/// refreshes: the grant's previous bearer stops working.
pub async fn create_session(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let request = parse_request(&body)?;
    let now = now_secs();
    let grant = verify_grant(&request.grant, now)?;
    let grant_id = grant.jti.as_str().to_string();
    // Refused before the proof is looked at, as Pubky does; the writer checks again.
    if state
        .files
        .grant(&grant_id)?
        .is_some_and(|g| g.revoked_s.is_some())
    {
        return Err(Error::Unauthorized("Grant has been revoked".into()));
    }
    let pop = check_pop(&state, &request.pop, &grant, now)?;
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let expires_s = (now + BEARER_LIFETIME_SECS).min(grant.exp);
    let record = GrantRecord {
        user: grant.iss.z32(),
        client_id: grant.client_id.as_str().to_string(),
        caps: grant.caps.iter().map(ToString::to_string).collect(),
        cnf: grant.cnf.z32(),
        iat: grant.iat,
        exp: grant.exp,
        created_s: now,
        revoked_s: None,
        bearer: None,
    };
    state
        .write(FileOp::GrantSession {
            grant_id,
            grant: record,
            pop,
            bearer: bearer_hash(&token),
            session: BearerRecord {
                grant_id: grant.jti.as_str().to_string(),
                expires_s,
                created_s: now,
            },
        })
        .await?;
    let response = GrantSessionResponse {
        token,
        session: GrantSessionInfo {
            homeserver: server_key(&state)?,
            pubky: grant.iss,
            client_id: grant.client_id,
            capabilities: grant.caps,
            grant_id: grant.jti,
            token_expires_at: expires_s,
            grant_expires_at: grant.exp,
            created_at: now,
        },
    };
    json(&response)
}

/// `GET /auth/grant/session`: what the request's bearer stands for.
pub async fn get_session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let session = bearer_session(&state, &headers)?.ok_or_else(|| {
        Error::Unauthorized(
            "No authenticated session found: send Authorization: Bearer <token> \
             from POST /auth/grant/session"
                .into(),
        )
    })?;
    refuse_disabled(&state, &session.user)?;
    let Credential::Bearer {
        grant_id,
        grant,
        token_expires_s,
    } = session.credential
    else {
        return Err(Error::Internal("a bearer session without its grant".into()));
    };
    let info = GrantSessionInfo {
        homeserver: server_key(&state)?,
        pubky: stored_key(&grant.user)?,
        client_id: ClientId::new(&grant.client_id)
            .map_err(|err| StoreError::Corrupt(format!("stored client id: {err}")))?,
        capabilities: session.capabilities,
        grant_id: GrantId::parse(&grant_id)
            .map_err(|err| StoreError::Corrupt(format!("stored grant id: {err}")))?,
        token_expires_at: token_expires_s,
        grant_expires_at: grant.exp,
        created_at: grant.created_s,
    };
    json(&info)
}

/// `DELETE /auth/grant/session`: sign out by revoking the grant, so neither its bearer nor a
/// new exchange of it works again. With a JSON grant + PoP body the grant is revoked by proof
/// (even once its bearer has expired); otherwise the bearer's grant is. Always 200 without a
/// proof, as Pubky's: signing out twice is not an error.
pub async fn delete_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let op = if !body.iter().all(u8::is_ascii_whitespace) {
        let request = parse_request(&body)?;
        let grant = verify_grant_signature(&request.grant)?;
        let pop = check_pop(&state, &request.pop, &grant, now_secs())?;
        Some(FileOp::RevokeGrant {
            grant_id: grant.jti.as_str().to_string(),
            proof: Some(RevokeProof {
                pop,
                user: grant.iss.z32(),
                cnf: grant.cnf.z32(),
            }),
        })
    } else {
        bearer_session(&state, &headers)?.and_then(|session| match session.credential {
            Credential::Bearer { grant_id, .. } => Some(FileOp::RevokeGrant {
                grant_id,
                proof: None,
            }),
            Credential::Cookie { .. } => None,
        })
    };
    if let Some(op) = op {
        state.write(op).await?;
    }
    Ok(StatusCode::OK.into_response())
}

fn stored_key(z32: &str) -> Result<PublicKey> {
    PublicKey::try_from_z32(z32)
        .map_err(|err| StoreError::Corrupt(format!("stored key {z32:?}: {err}")).into())
}

/// 200 with a JSON body. Never cached: it may carry a bearer.
fn json<T: Serialize>(value: &T) -> Result<Response> {
    let body = serde_json::to_vec(value)
        .map_err(|err| Error::Internal(format!("a response did not serialize: {err}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}
