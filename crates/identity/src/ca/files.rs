//! Where the CA's key comes from: a self-signed root made on first start and kept
//! (`ca-key.pem`, `ca-cert.pem`, 0600), or Istio's plugged-in `cacerts` layout.
//! Both are checked before the CA signs anything: the key matches its certificate,
//! the chain chains to the root, and a test certificate verifies as a peer's would.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CLOCK_SKEW, Ca, CaError, CaSource};
use crate::cert::{self, CertSummary};
use crate::credentials::Trust;
use crate::files;
use crate::spiffe::{SpiffeId, check_trust_domain};

/// The certificate the CA signs with (the root itself when self-signed).
pub const CA_CERT: &str = "ca-cert.pem";
/// Its key (0600).
pub const CA_KEY: &str = "ca-key.pem";
/// Plugged-in only: the root(s) peers trust.
pub const ROOT_CERT: &str = "root-cert.pem";
/// Plugged-in only: `ca-cert.pem` up to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// How long a self-signed root lives.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

impl Ca {
    /// The CA kept in `dir`, made there first if `dir` holds none: a self-signed
    /// ECDSA P-256 root valid for ten years. The directory is created 0700, the files
    /// 0600; a restarted control plane reads the same root back.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        files::create_private_dir(dir).map_err(io(dir))?;
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        let key = match (key_path.exists(), cert_path.exists()) {
            (true, true) => return Ca::load_self_signed(dir, trust_domain),
            (false, true) => {
                return Err(CaError::Incomplete {
                    present: cert_path,
                    missing: key_path,
                });
            }
            // A key without its certificate: a first start stopped between the two
            // writes. The certificate was never handed out, so it is made again.
            (true, false) => read_key(&key_path)?,
            (false, false) => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| CaError::Sign(e.to_string()))?;
                files::write_private(&key_path, key.serialize_pem().as_bytes())
                    .map_err(io(&key_path))?;
                key
            }
        };
        let root = root_params(trust_domain)
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        files::write_private(&cert_path, root.pem().as_bytes()).map_err(io(&cert_path))?;
        tracing::info!(dir = %dir.display(), trust_domain, "created the mesh CA's root");
        Ca::load_self_signed(dir, trust_domain)
    }

    fn load_self_signed(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        warn_if_readable_by_others(&key_path);
        let key = read_key(&key_path)?;
        let root = read_one_cert(&cert_path)?;
        let summary = check_signing_cert(&cert_path, &root, &key_path, &key)?;
        let ca = Ca::assemble(
            trust_domain,
            CaSource::SelfSigned(dir.to_path_buf()),
            (root.clone(), summary),
            key,
            &cert_path,
            Vec::new(),
            vec![root],
        )?;
        Ok(ca)
    }

    /// Istio's plugged-in CA in `dir`: `ca-cert.pem` signs, `ca-key.pem` is its key,
    /// `cert-chain.pem` runs from `ca-cert.pem` up to the root, `root-cert.pem` holds
    /// the root(s). Every mismatch is an error naming the file.
    pub fn from_plugged(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        check_trust_domain(trust_domain)?;
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let root_path = dir.join(ROOT_CERT);
        let chain_path = dir.join(CERT_CHAIN);
        warn_if_readable_by_others(&key_path);
        let signing = read_one_cert(&cert_path)?;
        let key = read_key(&key_path)?;
        let summary = check_signing_cert(&cert_path, &signing, &key_path, &key)?;
        let roots = read_certs(&root_path)?;
        let chain = read_certs(&chain_path)?;
        if chain.first() != Some(&signing) {
            return Err(CaError::Chain {
                path: chain_path,
                reason: format!("the chain must start with the certificate in {CA_CERT}"),
            });
        }
        check_chain(&chain, &roots, &chain_path, &root_path)?;
        let intermediates = chain
            .iter()
            .filter(|c| !roots.contains(c))
            .cloned()
            .collect();
        Ca::assemble(
            trust_domain,
            CaSource::Plugged(dir.to_path_buf()),
            (signing, summary),
            key,
            &cert_path,
            intermediates,
            roots,
        )
    }

    /// Builds the CA and issues itself a test certificate, verified as a peer would.
    fn assemble(
        trust_domain: &str,
        source: CaSource,
        (signing_cert, summary): (CertificateDer<'static>, CertSummary),
        key: KeyPair,
        cert_path: &Path,
        intermediates: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Ca, CaError> {
        let issuer =
            Issuer::from_ca_cert_der(&signing_cert, key).map_err(|e| CaError::Certificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let ca = Ca {
            trust_domain: trust_domain.to_string(),
            source,
            issuer,
            signing_cert,
            signing_not_after: summary.not_after,
            intermediates,
            roots,
        };
        ca.self_test()?;
        Ok(ca)
    }

    /// Issues a short-lived certificate and verifies it against the roots.
    fn self_test(&self) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::SelfTest(e.to_string()))?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(|e| CaError::SelfTest(e.to_string()))?;
        let identity = SpiffeId::with_trust_domain(&self.trust_domain, "default", "self-test")?;
        let issued = self.sign(csr.der(), &identity, Duration::from_secs(60))?;
        let trust = Trust::from_der(&self.trust_domain, self.roots.clone())
            .map_err(|e| CaError::SelfTest(e.to_string()))?;
        let chain = cert::certs_from_pem(&issued.chain_pem)
            .map_err(|e| CaError::SelfTest(e.to_string()))?;
        trust
            .verify_chain(&chain)
            .map_err(|e| CaError::SelfTest(e.to_string()))
    }
}

fn root_params(trust_domain: &str) -> CertificateParams {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, "Trellis mesh root CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    params.serial_number = Some(super::random_serial());
    params
}

/// The signing certificate is a CA, unexpired, and `key` is its key.
fn check_signing_cert(
    cert_path: &Path,
    der: &CertificateDer<'_>,
    key_path: &Path,
    key: &KeyPair,
) -> Result<CertSummary, CaError> {
    let summary = cert::summarize(der).map_err(|e| CaError::Certificate {
        path: cert_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !summary.is_ca {
        return Err(CaError::NotCa {
            path: cert_path.to_path_buf(),
        });
    }
    if SystemTime::now() > summary.not_after {
        return Err(CaError::Expired {
            path: cert_path.to_path_buf(),
        });
    }
    if summary.public_key != key.public_key_raw() {
        return Err(CaError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
        });
    }
    Ok(summary)
}

/// Each certificate of `chain` is signed by the next, and the last is a root or is
/// signed by one.
fn check_chain(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    chain_path: &Path,
    root_path: &Path,
) -> Result<(), CaError> {
    let chain_err = |reason: String| CaError::Chain {
        path: chain_path.to_path_buf(),
        reason,
    };
    for (i, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (parse(&pair[0], chain_path)?, parse(&pair[1], chain_path)?);
        if !parent.is_ca() {
            return Err(chain_err(format!("certificate {} is not a CA", i + 2)));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                chain_err(format!(
                    "certificate {} is not signed by certificate {}",
                    i + 1,
                    i + 2
                ))
            })?;
    }
    let last = chain.last().ok_or_else(|| chain_err("empty".into()))?;
    if roots.contains(last) {
        return Ok(());
    }
    let last = parse(last, chain_path)?;
    for root in roots {
        let root = parse(root, root_path)?;
        if last.verify_signature(Some(root.public_key())).is_ok() {
            return Ok(());
        }
    }
    Err(CaError::Chain {
        path: chain_path.to_path_buf(),
        reason: format!(
            "the chain does not end at a root in {}",
            root_path.display()
        ),
    })
}

fn parse<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::Certificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_text(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io(path))
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    // The key parser's own error is not passed on: it is never worth the risk of
    // quoting key material.
    KeyPair::from_pem(&read_text(path)?).map_err(|_| CaError::Key {
        path: path.to_path_buf(),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    cert::certs_from_pem(&read_text(path)?).map_err(|e| CaError::Certificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read_one_cert(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = read_certs(path)?;
    if certs.len() != 1 {
        return Err(CaError::Certificate {
            path: path.to_path_buf(),
            reason: format!("expected one certificate, found {}", certs.len()),
        });
    }
    Ok(certs.remove(0))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(mode) = files::mode(path)
        && mode & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the CA key is readable by other users");
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: PathBuf::from(path),
        source,
    }
}
