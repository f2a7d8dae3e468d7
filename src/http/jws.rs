//! Checking the grant flow's two signed tokens: compact JWS (RFC 7515) signed with Ed25519.
//!
//! A grant is signed by the user (its `iss`); a proof of possession (PoP) is signed by the
//! client key the grant names (its `cnf`). The claim types and the encoding are
//! `pubky-common`'s; only verification lives here, in the order Pubky's homeserver checks,
//! so a client sees the same error for the same fault.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pubky_common::auth::grant::GrantClaims;
use pubky_common::auth::jws::{GRANT_JWS_TYP, POP_JWS_TYP};
use pubky_common::auth::pop::PopProofClaims;
use pubky_common::crypto::{PublicKey, Signature};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::Error;

/// How far a PoP's `iat` may be from the server's clock, either way (as AuthTokens).
pub const MAX_CLOCK_SKEW_SECS: u64 = 180;

/// Why a grant was refused. Malformed grants are the client's bug (400); a bad signature or
/// an expired grant is a refusal to authenticate (401).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("invalid grant format: {0}")]
    Format(&'static str),
    #[error("invalid grant header type, expected {GRANT_JWS_TYP}")]
    HeaderType,
    #[error("invalid grant signature")]
    Signature,
    #[error("grant has expired")]
    Expired,
}

impl From<GrantError> for Error {
    fn from(err: GrantError) -> Self {
        let message = format!("Invalid grant: {err}");
        match err {
            GrantError::Format(_) | GrantError::HeaderType => Error::BadRequest(message),
            GrantError::Signature | GrantError::Expired => Error::Unauthorized(message),
        }
    }
}

/// Why a proof of possession was refused: always 401, the client failed to prove its key.
#[derive(Debug, thiserror::Error)]
pub enum PopError {
    #[error("invalid PoP format: {0}")]
    Format(&'static str),
    #[error("invalid PoP header type, expected {POP_JWS_TYP}")]
    HeaderType,
    #[error("invalid PoP signature (it must be signed by the grant's cnf key)")]
    Signature,
    #[error("PoP audience mismatch: this server is {expected}")]
    AudienceMismatch { expected: String },
    #[error("PoP grant ID mismatch: the proof's gid must be the grant's jti")]
    GrantIdMismatch,
    #[error("PoP timestamp out of range: iat must be within 3 minutes of the server's clock")]
    TimestampOutOfRange,
}

impl From<PopError> for Error {
    fn from(err: PopError) -> Self {
        Error::Unauthorized(format!("Invalid PoP proof: {err}"))
    }
}

/// A compact JWS cut in its three parts, nothing decoded yet.
struct Parts<'a> {
    /// `<header>.<payload>`: what the signature covers.
    signing_input: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(compact: &str) -> Option<Parts<'_>> {
    let (signing_input, signature) = compact.rsplit_once('.')?;
    let (header, payload) = signing_input.split_once('.')?;
    if payload.contains('.') {
        return None;
    }
    Some(Parts {
        signing_input,
        header,
        payload,
        signature,
    })
}

fn decode_json<T: DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
}

/// Whether the header names EdDSA and the signature verifies under `key`. A header that does
/// not parse counts as a bad signature, as the reference's JWT library reports it.
fn signed_by(parts: &Parts<'_>, key: &PublicKey) -> bool {
    let Some(header) = decode_json::<Header>(parts.header) else {
        return false;
    };
    if header.alg != "EdDSA" {
        return false;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(parts.signature) else {
        return false;
    };
    let Ok(raw) = <[u8; 64]>::try_from(raw.as_slice()) else {
        return false;
    };
    key.verify(parts.signing_input.as_bytes(), &Signature::from_bytes(&raw))
        .is_ok()
}

fn has_type(parts: &Parts<'_>, typ: &str) -> bool {
    decode_json::<Header>(parts.header).is_some_and(|h| h.typ.as_deref() == Some(typ))
}

/// A grant's claims once its signature by its own `iss` and its header type are checked.
/// Expiry is not checked here: signing out by proof accepts an expired grant.
pub fn verify_grant_signature(compact: &str) -> Result<GrantClaims, GrantError> {
    let parts = split(compact).ok_or(GrantError::Format(
        "a compact JWS has three dot-separated parts",
    ))?;
    let claims: GrantClaims = decode_json(parts.payload).ok_or(GrantError::Format(
        "the payload is not base64url JSON of grant claims",
    ))?;
    if !signed_by(&parts, &claims.iss) {
        return Err(GrantError::Signature);
    }
    if !has_type(&parts, GRANT_JWS_TYP) {
        return Err(GrantError::HeaderType);
    }
    Ok(claims)
}

/// A grant's claims, checked as above and unexpired at `now` (unix seconds).
pub fn verify_grant(compact: &str, now: u64) -> Result<GrantClaims, GrantError> {
    let claims = verify_grant_signature(compact)?;
    if claims.exp <= now {
        return Err(GrantError::Expired);
    }
    Ok(claims)
}

/// A proof of possession for `grant`, addressed to this server (`audience`, z32), issued
/// within the clock window around `now`. Whether its nonce was spent is the writer's check.
pub fn verify_pop(
    compact: &str,
    grant: &GrantClaims,
    audience: &str,
    now: u64,
) -> Result<PopProofClaims, PopError> {
    let parts = split(compact).ok_or(PopError::Format(
        "a compact JWS has three dot-separated parts",
    ))?;
    if !signed_by(&parts, &grant.cnf) {
        return Err(PopError::Signature);
    }
    let claims: PopProofClaims = decode_json(parts.payload).ok_or(PopError::Format(
        "the payload is not base64url JSON of PoP claims",
    ))?;
    if !has_type(&parts, POP_JWS_TYP) {
        return Err(PopError::HeaderType);
    }
    if claims.aud.z32() != audience {
        return Err(PopError::AudienceMismatch {
            expected: audience.to_string(),
        });
    }
    if claims.gid != grant.jti {
        return Err(PopError::GrantIdMismatch);
    }
    if now.abs_diff(claims.iat) > MAX_CLOCK_SKEW_SECS {
        return Err(PopError::TimestampOutOfRange);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use pubky_common::auth::jws::{sign_jws, ClientId, GrantId, PopNonce};
    use pubky_common::capabilities::Capability;
    use pubky_common::crypto::Keypair;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn grant(user: &Keypair, client: &Keypair) -> GrantClaims {
        GrantClaims {
            iss: user.public_key(),
            client_id: ClientId::new("test.app").expect("client id"),
            caps: vec![Capability::root()],
            cnf: client.public_key(),
            jti: GrantId::generate(),
            iat: NOW,
            exp: NOW + 3600,
        }
    }

    #[test]
    fn a_signed_grant_verifies_and_a_tampered_one_does_not() {
        let (user, client) = (Keypair::random(), Keypair::random());
        let claims = grant(&user, &client);
        let jws = sign_jws(&user, GRANT_JWS_TYP, &claims);
        assert_eq!(verify_grant(&jws, NOW).expect("verifies"), claims);
        assert!(matches!(
            verify_grant(&jws, NOW + 3600),
            Err(GrantError::Expired)
        ));
        let forged = sign_jws(&Keypair::random(), GRANT_JWS_TYP, &claims);
        assert!(matches!(
            verify_grant(&forged, NOW),
            Err(GrantError::Signature)
        ));
        let wrong_type = sign_jws(&user, POP_JWS_TYP, &claims);
        assert!(matches!(
            verify_grant(&wrong_type, NOW),
            Err(GrantError::HeaderType)
        ));
        for bad in ["", "a.b", "a.b.c.d", "..", "x.!!.y"] {
            assert!(
                matches!(verify_grant(bad, NOW), Err(GrantError::Format(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_pop_must_be_for_this_server_this_grant_and_now() {
        let (user, client, server) = (Keypair::random(), Keypair::random(), Keypair::random());
        let claims = grant(&user, &client);
        let aud = server.public_key().z32();
        let pop = |aud: &Keypair, gid: &GrantId, iat: u64, signer: &Keypair| {
            let claims = PopProofClaims {
                aud: aud.public_key(),
                gid: gid.clone(),
                nonce: PopNonce::generate(),
                iat,
            };
            sign_jws(signer, POP_JWS_TYP, &claims)
        };
        let good = pop(&server, &claims.jti, NOW, &client);
        assert!(verify_pop(&good, &claims, &aud, NOW + 180).is_ok());
        assert!(matches!(
            verify_pop(&good, &claims, &aud, NOW + 181),
            Err(PopError::TimestampOutOfRange)
        ));
        let other_server = pop(&Keypair::random(), &claims.jti, NOW, &client);
        assert!(matches!(
            verify_pop(&other_server, &claims, &aud, NOW),
            Err(PopError::AudienceMismatch { .. })
        ));
        let other_grant = pop(&server, &GrantId::generate(), NOW, &client);
        assert!(matches!(
            verify_pop(&other_grant, &claims, &aud, NOW),
            Err(PopError::GrantIdMismatch)
        ));
        let not_cnf = pop(&server, &claims.jti, NOW, &user);
        assert!(matches!(
            verify_pop(&not_cnf, &claims, &aud, NOW),
            Err(PopError::Signature)
        ));
    }
}
