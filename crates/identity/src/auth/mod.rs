//! Who is asking for a certificate: one `Authenticator` trait, whatever the proof
//! (a local bootstrap token, the current workload certificate, later a Kubernetes
//! service-account token). The answer is always a `WorkloadIdentity` — namespace
//! and service account — from which the CA derives the SPIFFE id.

mod bootstrap;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::cert::{self, CertError};
use crate::spiffe::{SpiffeId, SpiffeIdError, is_dns_label, is_dns_subdomain};

pub use bootstrap::{BootstrapToken, BootstrapTokens, TokenStoreError};

/// What a caller presents to prove who it is.
#[derive(Clone)]
pub enum Credential {
    /// A one-time token from the local runner.
    BootstrapToken(String),
    /// The caller's certificate chain (leaf first), already verified by rustls
    /// against the mesh roots during the handshake.
    VerifiedPeer(Vec<CertificateDer<'static>>),
    /// A Kubernetes service-account token (for a TokenReview authenticator).
    ServiceAccountToken(String),
}

impl Credential {
    /// The kind, for messages (never the secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::BootstrapToken(_) => "bootstrap token",
            Credential::VerifiedPeer(_) => "workload certificate",
            Credential::ServiceAccountToken(_) => "service-account token",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::VerifiedPeer(chain) => f
                .debug_tuple("VerifiedPeer")
                .field(&format!("{} certificate(s)", chain.len()))
                .finish(),
            other => f.debug_tuple(other.kind()).field(&"[secret]").finish(),
        }
    }
}

/// Who the caller proved to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadIdentity {
    pub namespace: String,
    pub service_account: String,
}

impl WorkloadIdentity {
    /// Checks the names as Kubernetes does (namespace: DNS-1123 label; service
    /// account: DNS-1123 subdomain).
    pub fn new(namespace: &str, service_account: &str) -> Result<WorkloadIdentity, SpiffeIdError> {
        if !is_dns_label(namespace) {
            return Err(SpiffeIdError::InvalidNamespace(namespace.to_string()));
        }
        if !is_dns_subdomain(service_account) {
            return Err(SpiffeIdError::InvalidServiceAccount(
                service_account.to_string(),
            ));
        }
        Ok(WorkloadIdentity {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// The SPIFFE id in `trust_domain` the CA signs for.
    pub fn spiffe_id(&self, trust_domain: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::with_trust_domain(trust_domain, &self.namespace, &self.service_account)
    }
}

impl From<&SpiffeId> for WorkloadIdentity {
    fn from(id: &SpiffeId) -> WorkloadIdentity {
        WorkloadIdentity {
            namespace: id.namespace().to_string(),
            service_account: id.service_account().to_string(),
        }
    }
}

/// Why a caller was not authenticated. Never quotes the secret it was given.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this authenticator does not accept a {0}")]
    Unsupported(&'static str),
    #[error("unknown bootstrap token")]
    UnknownToken,
    #[error("the bootstrap token was already used")]
    TokenAlreadyUsed,
    #[error("the bootstrap token expired")]
    TokenExpired,
    #[error("the workload certificate: {0}")]
    Certificate(#[from] CertError),
    #[error("the token store: {0}")]
    Store(#[from] TokenStoreError),
    /// The service-account token was not accepted (says why, never the token).
    #[error("the service-account token: {0}")]
    TokenRejected(String),
    /// The authority that judges the credential could not be asked (retry later).
    #[error("cannot check the credential now: {0}")]
    Unavailable(String),
}

/// The future an authenticator returns (boxed so `dyn Authenticator` works).
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<WorkloadIdentity, AuthError>> + Send + 'a>>;

/// Turns a caller's credential into the workload it proves. Implementations
/// answer `AuthError::Unsupported` for credential kinds they do not judge.
///
/// Implemented by [`BootstrapTokens`] (local mode's first CSR) and
/// [`PeerCertificates`] (renewals). Cluster mode adds `TokenReview`: it takes
/// `Credential::ServiceAccountToken` (the pod's projected token, audience
/// `istio-ca`), POSTs an `authentication.k8s.io/v1` TokenReview, requires
/// `status.authenticated` and that audience, and reads the identity from
/// `status.user.username` = `system:serviceaccount:NAMESPACE:NAME`. That HTTP call
/// is why the trait returns a future.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, credential: &'a Credential) -> AuthFuture<'a>;
}

/// The identity in a verified peer chain's leaf (its SPIFFE URI SAN), required to
/// be in `trust_domain`. The chain must already have been verified against the
/// mesh roots (rustls did, during the handshake).
pub fn identity_from_verified_chain(
    chain: &[CertificateDer<'_>],
    trust_domain: &str,
) -> Result<WorkloadIdentity, AuthError> {
    let leaf = chain.first().ok_or(CertError::Empty)?;
    let id = cert::spiffe_id_in(leaf, trust_domain)?;
    Ok(WorkloadIdentity::from(&id))
}

/// Renewals: the caller's current workload certificate proves who it is.
#[derive(Debug, Clone)]
pub struct PeerCertificates {
    trust_domain: String,
}

impl PeerCertificates {
    pub fn new(trust_domain: &str) -> PeerCertificates {
        PeerCertificates {
            trust_domain: trust_domain.to_string(),
        }
    }
}

impl Authenticator for PeerCertificates {
    fn authenticate<'a>(&'a self, credential: &'a Credential) -> AuthFuture<'a> {
        Box::pin(async move {
            match credential {
                Credential::VerifiedPeer(chain) => {
                    identity_from_verified_chain(chain, &self.trust_domain)
                }
                other => Err(AuthError::Unsupported(other.kind())),
            }
        })
    }
}

/// Several authenticators in order: the first that accepts the credential's kind
/// decides (its refusal is final; no other is tried).
#[derive(Clone, Default)]
pub struct Authenticators {
    list: Vec<Arc<dyn Authenticator>>,
}

impl Authenticators {
    pub fn new() -> Authenticators {
        Authenticators::default()
    }

    /// Adds `authenticator` after those already there.
    pub fn with(mut self, authenticator: Arc<dyn Authenticator>) -> Authenticators {
        self.list.push(authenticator);
        self
    }
}

impl Authenticator for Authenticators {
    fn authenticate<'a>(&'a self, credential: &'a Credential) -> AuthFuture<'a> {
        Box::pin(async move {
            for authenticator in &self.list {
                match authenticator.authenticate(credential).await {
                    Err(AuthError::Unsupported(_)) => continue,
                    decided => return decided,
                }
            }
            Err(AuthError::Unsupported(credential.kind()))
        })
    }
}

impl fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticators")
            .field("count", &self.list.len())
            .finish()
    }
}
