//! Random bytes from aws-lc-rs, the provider rustls already links, so the crate
//! brings no second crypto library. Random serials come from here.

use std::fmt::Write as _;

/// Operating-system randomness; failing to get any is not something to carry on from.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("the system random generator is available");
    out
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ() {
        assert_ne!(bytes::<16>(), bytes::<16>());
    }
}
