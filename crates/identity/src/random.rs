//! Random bytes and SHA-256 from aws-lc-rs, the provider rustls already links, so
//! the crate brings no second crypto library. Random serials, bootstrap tokens and
//! renewal jitter come from here.

use std::fmt::Write as _;

/// Operating-system randomness; failing to get any is not something to carry on from.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("the system random generator is available");
    out
}

/// A uniform number in [0, 1).
pub(crate) fn unit() -> f64 {
    let raw = u32::from_be_bytes(bytes::<4>());
    f64::from(raw) / (f64::from(u32::MAX) + 1.0)
}

/// SHA-256 of `data`, lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
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

/// A secret for a bearer token: 32 random bytes, lowercase hex.
pub fn token() -> String {
    hex(&bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_bytes_differ_and_unit_stays_in_range() {
        assert_ne!(bytes::<16>(), bytes::<16>());
        for _ in 0..1000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
