//! A workload's credentials (chain and key as rustls uses them, the mesh roots it
//! trusts) and the swap every handshake reads them from. They are checked when made
//! — for this key, this identity, chaining to the roots — and the key sits inside
//! rustls' signing key: no accessor returns it and `Debug` never prints it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::cert::{self, CertError};
use crate::spiffe::{SpiffeId, check_trust_domain};

/// The crypto provider every config and verifier of this crate uses: aws-lc-rs,
/// always named explicitly (never a process default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why credentials could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("certificate chain: {0}")]
    Chain(CertError),
    #[error("trust roots: {0}")]
    Roots(CertError),
    #[error("trust roots: {0}")]
    RootStore(String),
    #[error("the issued certificate is not for this key pair")]
    KeyMismatch,
    #[error("the issued certificate does not chain to the mesh roots: {0}")]
    Untrusted(rustls::Error),
    #[error("the issued certificate is for {found}, expected {expected}")]
    WrongIdentity {
        expected: Box<SpiffeId>,
        found: Box<SpiffeId>,
    },
    #[error("the private key could not be loaded")]
    Key,
    #[error("the trust domain: {0}")]
    TrustDomain(#[from] crate::spiffe::SpiffeIdError),
}

/// The roots of one trust domain and the client-certificate verifier built on them.
/// Built once per root set: a renewal that brings the same roots keeps this value.
pub struct Trust {
    trust_domain: String,
    roots: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl Trust {
    /// The roots in `pem` (one or more certificates), for `trust_domain`.
    pub fn from_pem(trust_domain: &str, pem: &str) -> Result<Arc<Trust>, CredentialsError> {
        let roots = cert::certs_from_pem(pem).map_err(CredentialsError::Roots)?;
        Trust::from_der(trust_domain, roots)
    }

    /// The roots `roots` (DER), for `trust_domain`.
    pub fn from_der(
        trust_domain: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<Trust>, CredentialsError> {
        check_trust_domain(trust_domain)?;
        if roots.is_empty() {
            return Err(CredentialsError::Roots(CertError::Empty));
        }
        let mut store = RootCertStore::empty();
        for root in &roots {
            store
                .add(root.clone())
                .map_err(|e| CredentialsError::RootStore(e.to_string()))?;
        }
        let store = Arc::new(store);
        // Whether a certificate is required is the listener's choice (see `tls`); this
        // verifier only judges a certificate that was sent.
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| CredentialsError::RootStore(e.to_string()))?;
        Ok(Arc::new(Trust {
            trust_domain: trust_domain.to_string(),
            roots,
            store,
            client_verifier,
        }))
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificates, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The root certificates, PEM.
    pub fn roots_pem(&self) -> String {
        cert::certs_to_pem(&self.roots)
    }

    pub fn root_store(&self) -> &Arc<RootCertStore> {
        &self.store
    }

    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }

    /// Checks that `chain` (leaf first) chains to these roots now.
    pub fn verify_chain(&self, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let parsed = ParsedCertificate::try_from(leaf)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.store,
            intermediates,
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        )
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// A certificate chain with its key, the identity it proves and the roots to
/// verify peers with.
pub struct Credentials {
    identity: SpiffeId,
    certified: Arc<CertifiedKey>,
    trust: Arc<Trust>,
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Credentials {
    /// Checks `chain_pem` (leaf first, then intermediates) against the key it must
    /// carry, the identity it must prove and the roots in `roots_pem`, and keeps the
    /// key inside rustls. `previous` lends its [`Trust`] when the roots are the same,
    /// so verifiers are not rebuilt on every renewal.
    pub fn new(
        key: &rcgen::KeyPair,
        chain_pem: &str,
        roots_pem: &str,
        expected: &SpiffeId,
        previous: Option<&Trust>,
    ) -> Result<Credentials, CredentialsError> {
        let roots = cert::certs_from_pem(roots_pem).map_err(CredentialsError::Roots)?;
        let trust = match previous {
            Some(p) if p.roots == roots && p.trust_domain == expected.trust_domain() => {
                // The same roots: reuse the verifiers already built on them.
                Arc::new(Trust {
                    trust_domain: p.trust_domain.clone(),
                    roots,
                    store: p.store.clone(),
                    client_verifier: p.client_verifier.clone(),
                })
            }
            _ => Trust::from_der(expected.trust_domain(), roots)?,
        };
        let chain = cert::certs_from_pem(chain_pem).map_err(CredentialsError::Chain)?;
        let leaf = chain
            .first()
            .ok_or(CredentialsError::Chain(CertError::Empty))?;
        let summary = cert::summarize(leaf).map_err(CredentialsError::Chain)?;
        if summary.public_key != key.public_key_raw() {
            return Err(CredentialsError::KeyMismatch);
        }
        let found = cert::spiffe_id_of(leaf).map_err(CredentialsError::Chain)?;
        if &found != expected {
            return Err(CredentialsError::WrongIdentity {
                expected: Box::new(expected.clone()),
                found: Box::new(found),
            });
        }
        trust
            .verify_chain(&chain)
            .map_err(CredentialsError::Untrusted)?;
        // PKCS#8 for the keys this crate makes; SEC1 or PKCS#1 if a caller brings one.
        let der =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|_| CredentialsError::Key)?;
        let signing_key = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|_| CredentialsError::Key)?;
        Ok(Credentials {
            identity: found,
            certified: Arc::new(CertifiedKey::new(chain, signing_key)),
            trust,
            serial: summary.serial,
            not_before: summary.not_before,
            not_after: summary.not_after,
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The chain as rustls presents it (leaf first) with its key.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The certificate chain, DER, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The certificate chain, PEM (for `proxy-config secret`; never a key).
    pub fn chain_pem(&self) -> String {
        cert::certs_to_pem(self.chain())
    }

    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// The leaf's serial number, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the leaf has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain", &self.chain().len())
            .field("trust", &self.trust)
            .field("key", &"[never shown]")
            .finish()
    }
}

/// The credentials in force, read by every handshake; a rotation is one store.
/// Empty until the first certificate is in. Clones share the same slot.
#[derive(Clone, Default)]
pub struct CurrentCredentials {
    slot: Arc<ArcSwapOption<Credentials>>,
}

impl CurrentCredentials {
    /// An empty slot: handshakes that need a certificate fail until one is stored.
    pub fn empty() -> CurrentCredentials {
        CurrentCredentials::default()
    }

    /// A slot holding `credentials` (the control plane's serving certificate, tests).
    pub fn with(credentials: Credentials) -> CurrentCredentials {
        let current = CurrentCredentials::empty();
        current.store(Some(Arc::new(credentials)));
        current
    }

    /// The credentials now; `None` before the first certificate or after expiry.
    pub fn load(&self) -> Option<Arc<Credentials>> {
        self.slot.load_full()
    }

    /// Replaces the credentials; connections already made keep theirs.
    pub fn store(&self, credentials: Option<Arc<Credentials>>) {
        self.slot.store(credentials);
    }
}

impl fmt::Debug for CurrentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CurrentCredentials")
            .field(&self.load())
            .finish()
    }
}
