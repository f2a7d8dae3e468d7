//! User keys: the z-base32 form of an Ed25519 public key, as every event key, file key and
//! tenant names a user.
//!
//! One place decides what counts as a key. Three readings exist because the contract has
//! three: a tenant may be named loosely (`pubky<z32>`, or anything pkarr reads), a `Host`
//! label is read as pkarr reads it, and subscription patterns and Pubky's `user=` take only
//! the canonical 52-character form that events carry.

/// Length of a user's z-base32 public key, the first part of every event key.
pub const USER_KEY_LEN: usize = 52;

/// Why a string is not a user key. The messages are what clients see inside their 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a public key at all (pkarr's reason).
    #[error("{0}")]
    Invalid(String),
    #[error("a public key is {USER_KEY_LEN} characters of z-base32, this is {0} bytes")]
    Length(usize),
    /// A key, but not written the way events write it.
    #[error("not in canonical z-base32 form, which is {canonical}")]
    NotCanonical { canonical: String },
}

/// Whatever pkarr reads as a public key, in canonical z-base32.
pub fn parse(text: &str) -> Result<String, KeyError> {
    pkarr::PublicKey::try_from(text)
        .map(|key| key.to_string())
        .map_err(|err| KeyError::Invalid(err.to_string()))
}

/// A tenant's key as Pubky clients send it: also `pubky<z32>`. Canonical z-base32.
pub fn parse_user(value: &str) -> Result<String, KeyError> {
    let trimmed = value
        .strip_prefix("pubky")
        .filter(|v| v.len() == USER_KEY_LEN)
        .unwrap_or(value);
    parse(trimmed)
}

/// Exactly a canonical key: 52 characters that are the key's own z-base32 form.
pub fn canonical(text: &str) -> Result<String, KeyError> {
    if text.len() != USER_KEY_LEN {
        return Err(KeyError::Length(text.len()));
    }
    let canonical = parse(text)?;
    if canonical != text {
        return Err(KeyError::NotCanonical { canonical });
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    #[test]
    fn the_three_readings() {
        assert_eq!(parse_user(ALICE).as_deref(), Ok(ALICE));
        assert_eq!(parse_user(&format!("pubky{ALICE}")).as_deref(), Ok(ALICE));
        assert_eq!(canonical(ALICE).as_deref(), Ok(ALICE));
        assert_eq!(
            canonical(&format!("pubky{ALICE}")),
            Err(KeyError::Length(57))
        );
        assert!(matches!(parse("alice"), Err(KeyError::Invalid(_))));
        assert!(matches!(
            canonical(&"!".repeat(52)),
            Err(KeyError::Invalid(_))
        ));
    }
}
