//! The client certificate of a mutual-TLS connection, as requests see it.
//!
//! A listener that verifies client certificates keeps the leaf's identity on the
//! connection: its SHA-256, subject and subject-alternative-name URIs (a SPIFFE ID,
//! `spiffe://trust-domain/ns/NS/sa/SA`) and DNS names. Gateways forward it to the
//! upstream in `X-Forwarded-Client-Cert`, as Envoy does with Istio's default
//! (`SANITIZE_SET`): a client's own header is always removed, and set again only from
//! a verified certificate.
//!
//! Only the fields needed are read from the DER: a small reader, not a general X.509
//! parser (the certificate was already verified by rustls).

use std::fmt::Write as _;

/// What a verified client certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub hash: String,
    /// The subject as an RFC 4514 string (`CN=client,O=Example`).
    pub subject: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
}

impl PeerCert {
    /// Reads the leaf certificate `der`; `None` when it is not a certificate.
    pub fn from_der(der: &[u8]) -> Option<PeerCert> {
        let (tag, cert, _) = tlv(der)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = tlv(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut rest = tbs;
        let mut field = 0;
        let (mut subject, mut uris, mut dns) = (String::new(), Vec::new(), Vec::new());
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest)?;
            rest = next;
            match tag {
                // [0] version: not counted among the positional fields.
                0xA0 => continue,
                // [3] extensions
                0xA3 => read_alt_names(content, &mut uris, &mut dns)?,
                // serial, signature, issuer, validity, subject, key: subject is 4th.
                _ => {
                    if field == 4 {
                        subject = rfc4514(content)?;
                    }
                    field += 1;
                }
            }
        }
        Some(PeerCert {
            hash: sha256_hex(der),
            subject,
            uris,
            dns,
        })
    }

    /// The `X-Forwarded-Client-Cert` element for this certificate:
    /// `Hash=…;Subject="…";URI=…;DNS=…`.
    pub fn xfcc(&self) -> String {
        let mut out = format!("Hash={}", self.hash);
        if !self.subject.is_empty() {
            let _ = write!(out, ";Subject=\"{}\"", self.subject.replace('"', "\\\""));
        }
        for uri in &self.uris {
            let _ = write!(out, ";URI={}", xfcc_value(uri));
        }
        for name in &self.dns {
            let _ = write!(out, ";DNS={}", xfcc_value(name));
        }
        out
    }
}

/// Quotes a value that contains XFCC's separators.
fn xfcc_value(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-ce-subjectAltName (2.5.29.17)
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

/// One DER element: (tag, content, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Collects URIs and DNS names from the subjectAltName extension, if present.
fn read_alt_names(explicit: &[u8], uris: &mut Vec<String>, dns: &mut Vec<String>) -> Option<()> {
    let (tag, mut extensions, _) = tlv(explicit)?;
    if tag != SEQUENCE {
        return None;
    }
    while !extensions.is_empty() {
        let (_, extension, next) = tlv(extensions)?;
        extensions = next;
        let (tag, id, rest) = tlv(extension)?;
        if tag != OID || id != SUBJECT_ALT_NAME {
            continue;
        }
        // An optional `critical` BOOLEAN, then the value as an OCTET STRING.
        let (mut tag, mut value, after) = tlv(rest)?;
        if tag == 0x01 {
            (tag, value, _) = tlv(after)?;
        }
        if tag != 0x04 {
            return None;
        }
        let (tag, mut names, _) = tlv(value)?;
        if tag != SEQUENCE {
            return None;
        }
        while !names.is_empty() {
            let (tag, name, next) = tlv(names)?;
            names = next;
            let text = || String::from_utf8_lossy(name).into_owned();
            match tag {
                0x86 => uris.push(text()),
                0x82 => dns.push(text()),
                _ => {}
            }
        }
    }
    Some(())
}

/// A Name as RFC 4514 text: the last RDN first, attributes by short name.
fn rfc4514(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, rdn, next) = tlv(name)?;
        name = next;
        if tag != SET {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = rdn;
        while !rest.is_empty() {
            let (_, attribute, next) = tlv(rest)?;
            rest = next;
            let (tag, oid, value) = tlv(attribute)?;
            if tag != OID {
                return None;
            }
            let (tag, value, _) = tlv(value)?;
            let text = match tag {
                // UTF8String, PrintableString, TeletexString, IA5String
                0x0C | 0x13 | 0x14 | 0x16 => escape(&String::from_utf8_lossy(value)),
                _ => format!("#{}", hex(value)),
            };
            parts.push(format!("{}={text}", attribute_name(oid)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0A] => "O".into(),
        [0x55, 0x04, 0x0B] => "OU".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => dotted(oid),
    }
}

/// An OID in dotted-decimal form.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for b in oid {
        value = value << 7 | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Escapes RFC 4514's special characters.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 by the TLS provider's hash (aws-lc-rs): no second crypto library.
fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    match suite.tls13() {
        Some(s) => hex(s.common.hash_provider.hash(data).as_ref()),
        None => String::new(),
    }
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
    fn oids_print_dotted() {
        // 1.2.840.113549.1.9.1
        assert_eq!(
            dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
        assert_eq!(dotted(&[0x55, 0x1D, 0x11]), "2.5.29.17");
    }

    #[test]
    fn reads_subject_spiffe_id_and_dns_names_of_a_real_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["client.example.com".to_string()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/shop/sa/client")
                .expect("uri"),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).expect("cert");
        let peer = PeerCert::from_der(cert.der()).expect("parsed");
        assert_eq!(peer.subject, "CN=client,O=Example\\, Inc");
        assert_eq!(peer.uris, ["spiffe://cluster.local/ns/shop/sa/client"]);
        assert_eq!(peer.dns, ["client.example.com"]);
        assert_eq!(peer.hash, sha256_hex(cert.der()));
        assert_eq!(peer.hash.len(), 64);
        assert_eq!(
            peer.xfcc(),
            format!(
                "Hash={};Subject=\"CN=client,O=Example\\, Inc\";URI=spiffe://cluster.local/ns/shop/sa/client;DNS=client.example.com",
                peer.hash
            )
        );
    }

    #[test]
    fn truncated_or_foreign_input_is_refused() {
        assert_eq!(PeerCert::from_der(b""), None);
        assert_eq!(PeerCert::from_der(&[0x30, 0x82, 0x01]), None);
        assert_eq!(PeerCert::from_der(&[0x04, 0x01, 0x00]), None);
    }

    proptest::proptest! {
        /// Arbitrary bytes are read or refused, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = PeerCert::from_der(&bytes);
        }

        /// Any prefix of a real certificate is refused or read; the whole one reads back
        /// the names it was made with.
        #[test]
        fn real_certificates_read_back_their_names(
            namespace in "[a-z][a-z0-9-]{0,20}",
            account in "[a-z][a-z0-9-]{0,20}",
            dns in proptest::collection::vec("[a-z]{1,10}\\.example\\.com", 0..3),
            common_name in "[A-Za-z0-9 ,+=]{1,20}",
        ) {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(dns.clone()).expect("params");
            let uri = format!("spiffe://cluster.local/ns/{namespace}/sa/{account}");
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(uri.as_str()).expect("uri"),
            ));
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, common_name.as_str());
            let cert = params.self_signed(&key).expect("cert");
            let der = cert.der();
            let peer = PeerCert::from_der(der).expect("a real certificate is read");
            proptest::prop_assert_eq!(&peer.uris, &vec![uri]);
            proptest::prop_assert_eq!(&peer.dns, &dns);
            proptest::prop_assert_eq!(peer.subject, format!("CN={}", escape(&common_name)));
            for cut in [1, der.len() / 3, der.len() / 2, der.len() - 1] {
                proptest::prop_assert_eq!(PeerCert::from_der(&der[..cut]), None);
            }
        }
    }
}
