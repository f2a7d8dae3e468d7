//! Event ids: a u64 sequence as 13 characters of Crockford base32.
//!
//! Big-endian and zero-padded, so that comparing two ids as strings compares their numbers:
//! a relay can merge and sort ids without parsing them. 13 characters carry 65 bits, so the
//! first character of a valid id is at most `F`.

use std::fmt;

/// Crockford's alphabet: digits and upper-case letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const ID_LEN: usize = 13;

/// Why a string is not an event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an event id is {ID_LEN} characters long, this one is {0}")]
    Length(usize),
    #[error("an event id uses Crockford base32 (0-9, A-Z without I L O U, upper case); {0:?} is not one of them")]
    Character(char),
    #[error("an event id encodes a 64-bit number; its first character must be 0-F")]
    Overflow,
}

/// Encode a sequence number as its 13-character id.
pub fn encode(seq: u64) -> String {
    let mut out = [0u8; ID_LEN];
    encode_into(seq, &mut out);
    // The alphabet is ASCII.
    out.iter().map(|&b| b as char).collect()
}

/// Encode into a fixed buffer: the hot path (SSE frames) writes ids without allocating.
pub fn encode_into(seq: u64, out: &mut [u8; ID_LEN]) {
    let mut rest = seq;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(rest & 31) as usize];
        rest >>= 5;
    }
}

/// Decode an id into its sequence number; anything but 13 valid characters is refused.
pub fn decode(id: &str) -> Result<u64, IdError> {
    let chars = id.chars().count();
    if chars != ID_LEN || id.len() != ID_LEN {
        return Err(IdError::Length(chars));
    }
    let mut value: u64 = 0;
    for (index, byte) in id.bytes().enumerate() {
        let digit = digit_of(byte).ok_or(IdError::Character(byte as char))?;
        if index == 0 && digit > 0xF {
            return Err(IdError::Overflow);
        }
        value = (value << 5) | u64::from(digit);
    }
    Ok(value)
}

/// Whether `byte` is a character of the alphabet.
pub fn is_digit(byte: u8) -> bool {
    digit_of(byte).is_some()
}

fn digit_of(byte: u8) -> Option<u8> {
    ALPHABET.iter().position(|&c| c == byte).map(|d| d as u8)
}

/// An id, for `format!`.
pub struct Id(pub u64);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_LEN];
        encode_into(self.0, &mut buf);
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(encode(0), "0000000000000");
        assert_eq!(encode(1), "0000000000001");
        assert_eq!(encode(32), "0000000000010");
        assert_eq!(encode(u64::MAX), "FZZZZZZZZZZZZ");
        assert_eq!(Id(31).to_string(), "000000000000Z");
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        assert_eq!(decode(""), Err(IdError::Length(0)));
        assert_eq!(decode("000000000001"), Err(IdError::Length(12)));
        assert_eq!(decode("00000000000001"), Err(IdError::Length(14)));
        assert_eq!(decode("000000000000I"), Err(IdError::Character('I')));
        assert_eq!(decode("000000000000a"), Err(IdError::Character('a')));
        assert_eq!(decode("G000000000000"), Err(IdError::Overflow));
        assert_eq!(decode("ZZZZZZZZZZZZZ"), Err(IdError::Overflow));
        assert!(decode("00000000000é").is_err());
    }

    proptest! {
        #[test]
        fn round_trips(seq: u64) {
            prop_assert_eq!(decode(&encode(seq)), Ok(seq));
        }

        #[test]
        fn sorts_like_numbers(a: u64, b: u64) {
            prop_assert_eq!(encode(a).cmp(&encode(b)), a.cmp(&b));
        }

        #[test]
        fn decodes_only_ids(s in "\\PC{0,16}") {
            if let Ok(seq) = decode(&s) {
                prop_assert_eq!(encode(seq), s);
            }
        }
    }
}
