//! Reading certificates: PEM bundles to DER, and the few fields the mesh needs from
//! one certificate (its SPIFFE id, validity, serial, public key). Nothing here
//! verifies a chain; callers read certificates rustls or the CA already checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::random::hex;
use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate does not say what the mesh needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("not a PEM certificate bundle: {0}")]
    Pem(String),
    #[error("no certificate in the PEM bundle")]
    Empty,
    #[error("not an X.509 certificate: {0}")]
    Parse(String),
    #[error("the certificate carries no SPIFFE id (URI SAN spiffe://…)")]
    NoSpiffeId,
    #[error("the certificate carries more than one SPIFFE id")]
    SeveralSpiffeIds,
    #[error("the certificate's SPIFFE id is not a mesh id: {0}")]
    InvalidSpiffeId(#[from] SpiffeIdError),
    #[error("{found} is not in trust domain {expected:?}")]
    WrongTrustDomain { expected: String, found: SpiffeId },
}

/// The fields of one certificate the mesh reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The serial number, lowercase hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The subject public key (the BIT STRING's content).
    pub public_key: Vec<u8>,
    pub is_ca: bool,
    /// URI subject alternative names.
    pub uris: Vec<String>,
}

/// Every certificate in a PEM text, in order; at least one.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(certs)
}

/// PEM text of `certs`, one block each.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

/// One PEM block, 64 characters a line.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads the fields of the certificate `der`.
pub fn summarize(der: &[u8]) -> Result<CertSummary, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    let validity = cert.validity();
    let uris = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertSummary {
        serial: hex(cert.raw_serial()),
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        is_ca: cert.is_ca(),
        uris,
    })
}

/// The SPIFFE id of the certificate `der`: exactly one `spiffe://` URI SAN, of the
/// mesh's strict shape.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, CertError> {
    let summary = summarize(der)?;
    let mut ids = summary.uris.iter().filter(|u| u.starts_with("spiffe://"));
    let first = ids.next().ok_or(CertError::NoSpiffeId)?;
    if ids.next().is_some() {
        return Err(CertError::SeveralSpiffeIds);
    }
    Ok(SpiffeId::parse(first)?)
}

/// [`spiffe_id_of`], also requiring `trust_domain`.
pub fn spiffe_id_in(der: &[u8], trust_domain: &str) -> Result<SpiffeId, CertError> {
    let id = spiffe_id_of(der)?;
    if id.trust_domain() != trust_domain {
        return Err(CertError::WrongTrustDomain {
            expected: trust_domain.to_string(),
            found: id,
        });
    }
    Ok(id)
}

/// Seconds since the epoch as a `SystemTime` (times before 1970 clamp to it).
fn system_time(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_uris(uris: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*uri).expect("ia5"),
            ));
        }
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn reads_the_one_spiffe_id() {
        let der = cert_with_uris(&["https://example.com", "spiffe://cluster.local/ns/a/sa/b"]);
        let id = spiffe_id_of(&der).expect("id");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/a/sa/b");
        assert!(spiffe_id_in(&der, "cluster.local").is_ok());
        assert!(matches!(
            spiffe_id_in(&der, "other.domain"),
            Err(CertError::WrongTrustDomain { .. })
        ));
    }

    #[test]
    fn none_several_or_malformed_ids_are_refused() {
        assert_eq!(
            spiffe_id_of(&cert_with_uris(&[])),
            Err(CertError::NoSpiffeId)
        );
        assert_eq!(
            spiffe_id_of(&cert_with_uris(&[
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/a/sa/c"
            ])),
            Err(CertError::SeveralSpiffeIds)
        );
        assert!(matches!(
            spiffe_id_of(&cert_with_uris(&["spiffe://cluster.local/ns/a/sa/b/c"])),
            Err(CertError::InvalidSpiffeId(_))
        ));
        assert!(matches!(spiffe_id_of(b"junk"), Err(CertError::Parse(_))));
    }

    #[test]
    fn pem_round_trips() {
        let a = cert_with_uris(&[]);
        let b = cert_with_uris(&[]);
        let pem = certs_to_pem(&[a.clone(), b.clone()]);
        assert_eq!(certs_from_pem(&pem), Ok(vec![a, b]));
        assert_eq!(certs_from_pem(""), Err(CertError::Empty));
    }
}
