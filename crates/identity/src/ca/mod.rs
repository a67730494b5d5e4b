//! The mesh certificate authority: it signs a workload's CSR for the identity the
//! caller proved, never for what the CSR asks. Only the CSR's public key is used
//! (after its self-signature is checked), in fresh certificate parameters. Where
//! the CA's key comes from is `files.rs`.

mod files;

pub use files::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;

use crate::cert;
use crate::credentials::{Credentials, CredentialsError};
use crate::spiffe::SpiffeId;

/// How long a workload certificate lives unless the caller says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// How far back a certificate's `notBefore` is set, for peers whose clocks lag.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The namespace and service account of the control plane's own certificate.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "trellis-control-plane";

/// Why the CA could not load or sign. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: not a readable private key (PKCS#8, SEC1 or PKCS#1 PEM)")]
    Key { path: PathBuf },
    #[error("{key}: the key does not match the certificate in {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{path}: the certificate is not a CA (basicConstraints CA:TRUE is missing)")]
    NotCa { path: PathBuf },
    #[error("{path}: the certificate expired")]
    Expired { path: PathBuf },
    #[error("{path}: {reason}")]
    Chain { path: PathBuf, reason: String },
    #[error("{present} exists but {missing} does not; restore it or remove both")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("the CA for trust domain {ca:?} cannot sign for {requested}")]
    WrongTrustDomain { ca: String, requested: SpiffeId },
    #[error("invalid trust domain: {0}")]
    TrustDomain(#[from] crate::spiffe::SpiffeIdError),
    #[error("the certificate signing request is refused: {0}")]
    Csr(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the CA's own test certificate does not verify: {0}")]
    SelfTest(String),
    #[error("the server credentials: {0}")]
    Credentials(#[from] CredentialsError),
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The leaf, then the intermediates up to (not including) the root, PEM.
    pub chain_pem: String,
    /// The root(s) to verify the chain with, PEM.
    pub root_pem: String,
    /// Who the certificate is for.
    pub identity: SpiffeId,
    pub not_after: SystemTime,
    /// Lowercase hex.
    pub serial: String,
}

/// Where the CA's key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A root made by `load_or_create` and kept in this directory.
    SelfSigned(PathBuf),
    /// Istio's plugged-in `cacerts` files in this directory.
    Plugged(PathBuf),
}

/// The mesh CA. Its key is only ever used to sign; it is not printed, returned or
/// serialised (the files it was read from are the only copy).
pub struct Ca {
    trust_domain: String,
    source: CaSource,
    issuer: Issuer<'static, KeyPair>,
    /// The certificate the CA signs with (the root itself when self-signed).
    signing_cert: CertificateDer<'static>,
    signing_not_after: SystemTime,
    /// Certificates between a leaf and the root: the signing certificate and those
    /// above it, unless it is a root.
    intermediates: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
}

impl Ca {
    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn source(&self) -> &CaSource {
        &self.source
    }

    /// The roots peers verify with, PEM.
    pub fn root_pem(&self) -> String {
        cert::certs_to_pem(&self.roots)
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The certificate the CA signs with.
    pub fn signing_certificate(&self) -> &CertificateDer<'static> {
        &self.signing_cert
    }

    /// The control plane's own identity in this trust domain.
    pub fn control_plane_identity(&self) -> SpiffeId {
        SpiffeId::with_trust_domain(
            &self.trust_domain,
            CONTROL_PLANE_NAMESPACE,
            CONTROL_PLANE_SERVICE_ACCOUNT,
        )
        .expect("the control plane's names are valid and the trust domain was checked")
    }

    /// Signs the public key of `csr` (PEM or DER) for `identity`, which the caller
    /// proved (the CSR's own names are ignored). `lifetime` is capped at the CA's own
    /// expiry.
    pub fn sign(
        &self,
        csr: &[u8],
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                ca: self.trust_domain.clone(),
                requested: identity.clone(),
            });
        }
        let request = parse_csr(csr)?;
        let params = self.leaf_params(identity, &[], &[], lifetime)?;
        self.issue(params, request, identity)
    }

    /// A serving certificate for the control plane (DNS and IP SANs plus its SPIFFE
    /// id), with a key made here that stays in the returned credentials.
    pub fn sign_server(
        &self,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        lifetime: Duration,
    ) -> Result<Credentials, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let identity = self.control_plane_identity();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let issued = self.sign_server_csr(csr.der(), dns_names, ip_addresses, lifetime)?;
        Ok(Credentials::new(
            &key,
            &issued.chain_pem,
            &issued.root_pem,
            &identity,
            None,
        )?)
    }

    /// The control plane's serving certificate for the key in `csr`, so its own
    /// `CertificateManager` can rotate it like a workload's.
    pub fn sign_server_csr(
        &self,
        csr: &[u8],
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        lifetime: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let identity = self.control_plane_identity();
        let request = parse_csr(csr)?;
        let params = self.leaf_params(&identity, dns_names, ip_addresses, lifetime)?;
        self.issue(params, request, &identity)
    }

    /// Fresh parameters for a leaf: nothing in them comes from a CSR.
    fn leaf_params(
        &self,
        identity: &SpiffeId,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        lifetime: Duration,
    ) -> Result<CertificateParams, CaError> {
        let now = SystemTime::now();
        let not_after = (now + lifetime).min(self.signing_not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        let uri = rcgen::string::Ia5String::try_from(identity.to_string())
            .map_err(|e| CaError::Sign(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        for name in dns_names {
            let dns = rcgen::string::Ia5String::try_from(name.as_str())
                .map_err(|e| CaError::Sign(format!("DNS name {name:?}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        for ip in ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        Ok(params)
    }

    /// Signs `request.public_key` into `params`.
    fn issue(
        &self,
        params: CertificateParams,
        request: CertificateSigningRequestParams,
        identity: &SpiffeId,
    ) -> Result<IssuedCertificate, CaError> {
        // Only the public key crosses over from the request.
        let fresh = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        let leaf = fresh
            .signed_by(&self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let summary = cert::summarize(leaf.der()).map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        tracing::debug!(identity = %identity, serial = %summary.serial, "certificate issued");
        Ok(IssuedCertificate {
            chain_pem: cert::certs_to_pem(&chain),
            root_pem: self.root_pem(),
            identity: identity.clone(),
            not_after: summary.not_after,
            serial: summary.serial,
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("source", &self.source)
            .field("signing_not_after", &self.signing_not_after)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .field("key", &"[never shown]")
            .finish()
    }
}

/// Parses a CSR (PEM or DER) and checks its self-signature: the caller holds the key.
fn parse_csr(csr: &[u8]) -> Result<CertificateSigningRequestParams, CaError> {
    let text = std::str::from_utf8(csr)
        .ok()
        .filter(|t| t.contains("-----BEGIN"));
    let parsed = match text {
        Some(pem) => CertificateSigningRequestParams::from_pem(pem),
        None => CertificateSigningRequestParams::from_der(&csr.into()),
    };
    parsed.map_err(|e| CaError::Csr(e.to_string()))
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280: at most 20).
fn random_serial() -> SerialNumber {
    let mut bytes = crate::random::bytes::<16>();
    bytes[0] = (bytes[0] & 0x7F) | 0x40;
    SerialNumber::from_slice(&bytes)
}
