//! The admin listener: a separate address, off unless configured, every request guarded by
//! the `X-Admin-Password` header. It mints signup tokens for `token` signup mode.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use pubky_common::crypto::random_bytes;

use super::error::{Error, Result};
use super::AppState;
use crate::files::FileOp;
use crate::ids;

pub const PASSWORD_HEADER: &str = "x-admin-password";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "Hearth admin endpoint\n" }))
        .route(
            "/generate_signup_token",
            get(generate_signup_token).post(generate_signup_token),
        )
        .with_state(state)
}

pub(super) fn check_password(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let Some(given) = headers.get(PASSWORD_HEADER) else {
        return Err(Error::Unauthorized(
            "missing admin password (X-Admin-Password)".into(),
        ));
    };
    let expected = state.config.admin_password.as_deref().unwrap_or_default();
    // Compare in constant time: the password guards token minting.
    let matches = !expected.is_empty()
        && given.len() == expected.len()
        && given
            .as_bytes()
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        Ok(())
    } else {
        Err(Error::Unauthorized("invalid admin password".into()))
    }
}

/// `GET|POST /generate_signup_token`: a new single-use token, `XXXX-XXXX-XXXX`.
async fn generate_signup_token(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    check_password(&state, &headers)?;
    let token = new_signup_token();
    state
        .write(FileOp::MintSignupToken {
            token: token.clone(),
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        token,
    ))
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
}
