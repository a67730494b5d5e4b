//! The proxy's certificate manager: a background task that makes a key pair (new
//! each time, never leaving the process), has its CSR signed by a `Signer`,
//! publishes the result to `CurrentCredentials` and renews at about half-life. A
//! failed renewal is retried with backoff while the old certificate still serves.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, SanType};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::ca::Ca;
use crate::credentials::{Credentials, CurrentCredentials, Trust};
use crate::random;
use crate::spiffe::SpiffeId;

/// A signed certificate as the CA returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChain {
    /// The leaf then its intermediates, PEM.
    pub chain_pem: String,
    /// The mesh root(s), PEM.
    pub roots_pem: String,
}

impl From<crate::ca::IssuedCertificate> for SignedChain {
    fn from(issued: crate::ca::IssuedCertificate) -> SignedChain {
        SignedChain {
            chain_pem: issued.chain_pem,
            roots_pem: issued.root_pem,
        }
    }
}

/// Why a signing request failed; either way the manager retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The CA could not be reached or the call broke off.
    #[error("the CA is unavailable: {0}")]
    Unavailable(String),
    /// The CA answered and refused.
    #[error("the CA refused: {0}")]
    Refused(String),
}

/// Sends a CSR to the CA and returns what it signed (the lead's gRPC client, or
/// [`CaSigner`] in-process).
pub trait Signer: Send + Sync + 'static {
    fn sign(&self, csr_pem: String) -> impl Future<Output = Result<SignedChain, SignError>> + Send;
}

/// When to renew and how to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// Renew when this fraction of the remaining life has passed (ztunnel: 0.5).
    pub at_fraction: f64,
    /// Plus or minus this fraction of the remaining life, at random, so proxies
    /// started together do not renew together.
    pub jitter: f64,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> RenewalPolicy {
        RenewalPolicy {
            at_fraction: 0.5,
            jitter: 0.05,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RenewalPolicy {
    /// How long after receiving a certificate that lives `remaining` to renew it.
    pub fn renew_after(&self, remaining: Duration) -> Duration {
        let spread = self.jitter * (2.0 * random::unit() - 1.0);
        remaining.mul_f64((self.at_fraction + spread).clamp(0.05, 0.95))
    }
}

/// The background task's handle. Dropping it stops the task; the credentials
/// already published stay in `credentials()` until replaced.
pub struct CertificateManager {
    identity: SpiffeId,
    current: CurrentCredentials,
    updates: watch::Receiver<Option<Arc<Credentials>>>,
    renew_now: Arc<Notify>,
    task: JoinHandle<()>,
}

impl CertificateManager {
    /// Starts getting certificates for `identity` from `signer` (needs a tokio runtime).
    pub fn start<S: Signer>(
        identity: SpiffeId,
        signer: S,
        policy: RenewalPolicy,
    ) -> CertificateManager {
        let current = CurrentCredentials::empty();
        let (sender, updates) = watch::channel(None);
        let renew_now = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            identity.clone(),
            signer,
            policy,
            current.clone(),
            sender,
            renew_now.clone(),
        ));
        CertificateManager {
            identity,
            current,
            updates,
            renew_now,
            task,
        }
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The slot every TLS config of this proxy reads.
    pub fn credentials(&self) -> CurrentCredentials {
        self.current.clone()
    }

    /// Whether a valid certificate is in.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// Waits for the first certificate (returns at once when one is in).
    pub async fn ready(&self) -> Arc<Credentials> {
        let mut updates = self.updates.clone();
        let creds = updates
            .wait_for(Option::is_some)
            .await
            .expect("the task holds the sender for as long as the manager lives");
        creds.clone().expect("waited for Some")
    }

    /// Each new certificate (and `None` when one expired without a successor).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.updates.clone()
    }

    /// Renews at once (for example after the mesh roots changed).
    pub fn renew_now(&self) {
        self.renew_now.notify_one();
    }
}

impl Drop for CertificateManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateManager")
            .field("identity", &self.identity.to_string())
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

async fn run<S: Signer>(
    identity: SpiffeId,
    signer: S,
    policy: RenewalPolicy,
    current: CurrentCredentials,
    updates: watch::Sender<Option<Arc<Credentials>>>,
    renew_now: Arc<Notify>,
) {
    let mut failures: u32 = 0;
    loop {
        let previous = current.load();
        let wait = match renew(&identity, &signer, previous.as_ref().map(|c| c.trust())).await {
            Ok(creds) => {
                failures = 0;
                let remaining = creds
                    .not_after()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tracing::info!(identity = %identity, serial = creds.serial(), valid_for = ?remaining, "workload certificate in");
                let creds = Arc::new(creds);
                current.store(Some(creds.clone()));
                updates.send_replace(Some(creds));
                policy.renew_after(remaining)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let backoff = backoff(&policy, failures);
                tracing::warn!(identity = %identity, %error, retry_in = ?backoff, "certificate renewal failed");
                match previous {
                    Some(old) if old.expired_at(SystemTime::now()) => {
                        tracing::error!(identity = %identity, serial = old.serial(), "the workload certificate expired without a successor");
                        current.store(None);
                        updates.send_replace(None);
                        backoff
                    }
                    // Wake up at the old certificate's expiry at the latest.
                    Some(old) => backoff.min(
                        old.not_after()
                            .duration_since(SystemTime::now())
                            .unwrap_or_default()
                            + Duration::from_millis(10),
                    ),
                    None => backoff,
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = renew_now.notified() => {}
        }
    }
}

/// Why one renewal attempt failed.
#[derive(Debug, thiserror::Error)]
enum RenewError {
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Sign(#[from] SignError),
    #[error("{0}")]
    Credentials(#[from] crate::credentials::CredentialsError),
}

/// One attempt: a new key pair, a CSR, the signature, the checks.
async fn renew<S: Signer>(
    identity: &SpiffeId,
    signer: &S,
    previous_trust: Option<&Arc<Trust>>,
) -> Result<Credentials, RenewError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| RenewError::Key(e.to_string()))?;
    let csr_pem = csr_for(identity, &key).map_err(|e| RenewError::Key(e.to_string()))?;
    let signed = signer.sign(csr_pem).await?;
    Ok(Credentials::new(
        &key,
        &signed.chain_pem,
        &signed.roots_pem,
        identity,
        previous_trust.map(|t| t.as_ref()),
    )?)
}

/// A CSR for `key` naming `identity` (the CA ignores the name; it is for people
/// reading the request).
pub fn csr_for(identity: &SpiffeId, key: &KeyPair) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .subject_alt_names
        .push(SanType::URI(rcgen::string::Ia5String::try_from(
            identity.to_string(),
        )?));
    params.serialize_request(key)?.pem()
}

fn backoff(policy: &RenewalPolicy, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

/// A signer in the control plane's own process, for its serving certificate: the
/// CA signs the CSR with the control plane's identity and the given names.
#[derive(Debug, Clone)]
pub struct CaSigner {
    ca: Arc<Ca>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    lifetime: Duration,
}

impl CaSigner {
    pub fn new(
        ca: Arc<Ca>,
        dns_names: Vec<String>,
        ip_addresses: Vec<IpAddr>,
        lifetime: Duration,
    ) -> CaSigner {
        CaSigner {
            ca,
            dns_names,
            ip_addresses,
            lifetime,
        }
    }
}

impl Signer for CaSigner {
    async fn sign(&self, csr_pem: String) -> Result<SignedChain, SignError> {
        self.ca
            .sign_server_csr(
                csr_pem.as_bytes(),
                &self.dns_names,
                &self.ip_addresses,
                self.lifetime,
            )
            .map(SignedChain::from)
            .map_err(|e| SignError::Refused(e.to_string()))
    }
}
