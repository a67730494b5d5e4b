//! Base64 as Kubernetes stores Secret data: the standard alphabet with padding
//! required, read strictly so that a Secret whose `data` is not base64 is refused on
//! load (the analyzers rely on that). The `base64` crate decodes; this module decides
//! what counts as valid and says why not. Lenient PEM decoding is the analyzers' own.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.StdEncoding`, which the API server decodes `data` with: padding
/// required, and unused bits in the last symbol ignored rather than refused.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Why text is not base64. Byte offsets count after line breaks are dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// Base64 comes in groups of four characters.
    #[error("length {0} is not a multiple of 4 (is padding `=` missing?)")]
    Length(usize),
    /// `=` only ends the text, at most twice.
    #[error("misplaced padding `=` near byte {0}")]
    MisplacedPadding(usize),
    /// A character outside `A-Z a-z 0-9 + /`.
    #[error("invalid character {character:?} at byte {offset}")]
    InvalidCharacter { character: char, offset: usize },
}

/// Decodes standard base64 (RFC 4648, `+/` alphabet, `=` padding required), as
/// Kubernetes stores Secret data. Line breaks are skipped, as Go's decoder does.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    if !bytes.len().is_multiple_of(4) {
        return Err(Base64Error::Length(bytes.len()));
    }
    STANDARD.decode(&bytes).map_err(|e| match diagnose(&bytes) {
        Some(problem) => problem,
        // `diagnose` refuses everything the engine does; this keeps the engine's word.
        None => match e {
            base64::DecodeError::InvalidByte(offset, byte) => Base64Error::InvalidCharacter {
                character: char::from(byte),
                offset,
            },
            _ => Base64Error::MisplacedPadding(bytes.len()),
        },
    })
}

/// The first problem in `bytes` (a multiple of four long), group by group: padding
/// anywhere but the end of the last group (or more than two `=`), else a character
/// outside the alphabet. Only called once decoding has failed.
fn diagnose(bytes: &[u8]) -> Option<Base64Error> {
    let groups = bytes.len() / 4;
    for (i, group) in bytes.chunks(4).enumerate() {
        let pad = group.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != groups) {
            return Some(Base64Error::MisplacedPadding(i * 4 + 4 - pad));
        }
        if let Some(j) = group[..4 - pad]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/'))
        {
            return Some(Base64Error::InvalidCharacter {
                character: char::from(group[j]),
                offset: i * 4 + j,
            });
        }
    }
    None
}

/// Encodes bytes as standard, padded base64 (the inverse of [`decode_base64`]).
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "\u{0}\u{ff}",
        ] {
            let encoded = encode_base64(text.as_bytes());
            assert_eq!(decode_base64(&encoded).expect("valid"), text.as_bytes());
        }
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(decode_base64("Zm9v\nYmE=").expect("valid"), b"fooba");
    }

    #[test]
    fn bad_base64_is_refused() {
        for bad in ["Zm9", "Zm9v!mFy", "Z===", "Zg==Zg==", "Zm9v YmFy"] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong_and_where() {
        let message = |text: &str| decode_base64(text).expect_err(text).to_string();
        assert_eq!(
            message("Zm9"),
            "length 3 is not a multiple of 4 (is padding `=` missing?)"
        );
        assert_eq!(message("Z==="), "misplaced padding `=` near byte 1");
        assert_eq!(message("Zg==Zg=="), "misplaced padding `=` near byte 2");
        assert_eq!(message("Zm9v!mFy"), "invalid character '!' at byte 4");
        assert_eq!(message("Zg=a"), "invalid character '=' at byte 2");
        assert_eq!(message("Zm9v\r\n YmF"), "invalid character ' ' at byte 4");
    }

    #[test]
    fn unused_bits_in_the_last_symbol_are_ignored_as_go_does() {
        assert_eq!(decode_base64("YR==").expect("Go accepts it"), b"a");
        assert_eq!(decode_base64("YWJ=").expect("Go accepts it"), b"ab");
    }
}
