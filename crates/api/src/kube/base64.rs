//! Base64 as Kubernetes stores Secret data: the standard alphabet with padding
//! required, read strictly so that a Secret whose `data` is not base64 is refused on
//! load (the analyzers rely on that). Lenient PEM decoding is the analyzers' own.

/// Decodes standard base64 (RFC 4648, `+/` alphabet, `=` padding required), as
/// Kubernetes stores Secret data. Line breaks are skipped, as Go's decoder does.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "length {} is not a multiple of 4 (is padding `=` missing?)",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.chunks(4).count();
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(format!(
                "misplaced padding `=` near byte {}",
                i * 4 + 4 - pad
            ));
        }
        let mut acc: u32 = 0;
        for (j, &b) in chunk[..4 - pad].iter().enumerate() {
            let Some(v) = sextet(b) else {
                return Err(format!(
                    "invalid character {:?} at byte {}",
                    char::from(b),
                    i * 4 + j
                ));
            };
            acc |= u32::from(v) << (18 - 6 * j);
        }
        let [_, b0, b1, b2] = acc.to_be_bytes();
        out.push(b0);
        if pad < 2 {
            out.push(b1);
        }
        if pad < 1 {
            out.push(b2);
        }
    }
    Ok(out)
}

/// Encodes bytes as standard, padded base64 (the inverse of [`decode_base64`]).
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * j)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
}
