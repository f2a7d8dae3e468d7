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
///
/// Reading a key is an Ed25519 point decompression (~40,000 instructions), and every request
/// names its tenant: so a canonical key already found valid is remembered (`Verified`), and
/// the next request naming it costs a z-base32 decode and a lookup.
pub fn parse(text: &str) -> Result<String, KeyError> {
    if let Some(bytes) = z32_decode(text) {
        if VERIFIED.contains(&bytes) {
            return Ok(text.to_string());
        }
    }
    let canonical = pkarr::PublicKey::try_from(text)
        .map(|key| key.to_string())
        .map_err(|err| KeyError::Invalid(err.to_string()))?;
    if let Some(bytes) = z32_decode(&canonical) {
        VERIFIED.insert(bytes);
    }
    Ok(canonical)
}

/// z-base32's alphabet.
const Z32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Each byte's value in the alphabet, or `NOT_Z32`: a lookup per character, not a search (a
/// key is decoded on every request that names a user).
const Z32_VALUES: [u8; 256] = {
    let mut values = [NOT_Z32; 256];
    let mut index = 0;
    while index < Z32.len() {
        values[Z32[index] as usize] = index as u8;
        index += 1;
    }
    values
};
const NOT_Z32: u8 = 0xff;

/// The 32 bytes that a canonical z-base32 key spells (52 characters of the alphabet, the 4
/// bits of padding zero), without asking whether they are a point on the curve.
pub fn z32_decode(text: &str) -> Option<[u8; 32]> {
    let chars = text.as_bytes();
    if chars.len() != USER_KEY_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut at = 0;
    for &c in chars {
        let value = match Z32_VALUES[usize::from(c)] {
            NOT_Z32 => return None,
            value => u32::from(value),
        };
        acc = (acc << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if at < 32 {
                out[at] = (acc >> bits) as u8;
                at += 1;
            }
            acc &= (1 << bits) - 1;
        }
    }
    // 52 x 5 = 260 bits: 256 of key, then 4 that a canonical encoding leaves zero.
    (at == 32 && bits == 4 && acc == 0).then_some(out)
}

/// The canonical z-base32 spelling of 32 bytes.
pub fn z32_encode(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(USER_KEY_LEN);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(Z32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    out.push(Z32[((acc << (5 - bits)) & 31) as usize] as char);
    out
}

/// Keys found valid lately: a bounded set, emptied when full (a key not in it is only
/// checked again). Holds public keys only, nothing secret.
struct Verified(std::sync::Mutex<std::collections::HashSet<[u8; 32]>>);

/// How many keys `VERIFIED` remembers at most (32 bytes each).
const VERIFIED_KEYS: usize = 16_384;

static VERIFIED: std::sync::LazyLock<Verified> =
    std::sync::LazyLock::new(|| Verified(Default::default()));

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 32]>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.lock().contains(key)
    }

    fn insert(&self, key: [u8; 32]) {
        let mut keys = self.lock();
        if keys.len() >= VERIFIED_KEYS {
            keys.clear();
        }
        keys.insert(key);
    }
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
    fn z32_round_trips_and_refuses_what_is_not_canonical() {
        let bytes = z32_decode(ALICE).expect("a key's shape");
        assert_eq!(z32_encode(&bytes), ALICE);
        let key = pkarr::PublicKey::try_from(ALICE).expect("key");
        assert_eq!(&bytes, key.as_bytes());
        // The last character carries 1 bit of key and 4 of padding: only y (0) and o (16).
        let mut loose = ALICE.to_string();
        loose.replace_range(51.., "b");
        assert_eq!(z32_decode(&loose), None);
        assert_eq!(z32_decode(&ALICE[1..]), None);
        assert_eq!(z32_decode(&format!("{}l", &ALICE[..51])), None);
        assert_eq!(z32_decode(&ALICE.to_uppercase()), None);
        for seed in 0..64u8 {
            let key = pkarr::Keypair::from_secret_key(&[seed; 32]).public_key();
            let text = key.to_string();
            assert_eq!(z32_decode(&text).as_ref(), Some(key.as_bytes()));
            assert_eq!(z32_encode(key.as_bytes()), text);
        }
    }

    #[test]
    fn a_key_is_parsed_the_same_the_second_time() {
        // A valid shape that is not a point: refused every time, never remembered.
        let not_a_point = "8".repeat(51) + "y";
        for _ in 0..2 {
            assert!(
                matches!(parse(&not_a_point), Err(KeyError::Invalid(_))),
                "{:?}",
                parse(&not_a_point)
            );
            assert_eq!(parse(ALICE).as_deref(), Ok(ALICE));
        }
    }

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
