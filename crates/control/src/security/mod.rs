//! The control plane's security duties: it runs the mesh CA (kept in its state
//! directory, or Istio's plugged-in `cacerts`), signs proxies' CSRs for the identity
//! it authenticated (a one-time bootstrap token, or the current workload
//! certificate), serves gRPC only over TLS with its own CA-issued certificate, and
//! guards the HTTP API with a token kept in a 0600 file. Keys stay in this process.

pub mod client;
mod signing;
pub mod tls;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use trellis_identity::{
    Authenticator, Authenticators, BootstrapTokens, Ca, CaSigner, CertificateManager, Credential,
    CurrentCredentials, RenewalPolicy, SpiffeId, WorkloadIdentity,
};

pub use signing::{BEARER_SCHEME, BOOTSTRAP_SCHEME, credential_of as signing_credential, sign};

/// How long the control plane's own serving certificate lives (renewed at half).
const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Where the control plane keeps what makes it the mesh's authority.
#[derive(Clone)]
pub struct SecurityOptions {
    /// `ca/` (the root it makes), `tokens/` (bootstrap token hashes) and
    /// `api-token` live here; created 0700.
    pub state_dir: PathBuf,
    /// Istio's plugged-in CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`) instead of a root of its own.
    pub plugged_ca: Option<PathBuf>,
    /// MeshConfig `trustDomain`.
    pub trust_domain: String,
    /// Lifetime of the workload certificates it signs (24 h by default).
    pub workload_lifetime: Duration,
    /// Further ways to prove an identity, asked after the built-in ones (cluster
    /// mode's TokenReview of a pod's service-account token).
    pub authenticators: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for SecurityOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityOptions")
            .field("state_dir", &self.state_dir)
            .field("plugged_ca", &self.plugged_ca)
            .field("trust_domain", &self.trust_domain)
            .field("workload_lifetime", &self.workload_lifetime)
            .field("authenticators", &self.authenticators.len())
            .finish()
    }
}

impl SecurityOptions {
    pub fn new(state_dir: PathBuf) -> SecurityOptions {
        SecurityOptions {
            state_dir,
            plugged_ca: None,
            trust_domain: trellis_identity::DEFAULT_TRUST_DOMAIN.into(),
            workload_lifetime: trellis_identity::DEFAULT_LIFETIME,
            authenticators: Vec::new(),
        }
    }
}

/// Why the control plane's security could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("the mesh CA: {0}")]
    Ca(#[from] trellis_identity::CaError),
    #[error("the bootstrap token store: {0}")]
    Tokens(#[from] trellis_identity::TokenStoreError),
    #[error("{file}: {source}")]
    File {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("the control plane's TLS: {0}")]
    Tls(#[from] trellis_identity::TlsConfigError),
}

/// The CA and what guards the control plane's two ports.
pub struct Security {
    pub ca: Arc<Ca>,
    pub tokens: Arc<BootstrapTokens>,
    authenticators: Authenticators,
    /// The control plane's own certificate, renewed in the background.
    serving: CertificateManager,
    api_token: String,
    api_token_file: PathBuf,
    workload_lifetime: Duration,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("ca", &self.ca)
            .field("api_token_file", &self.api_token_file)
            .finish_non_exhaustive()
    }
}

impl Security {
    /// Opens (or makes, on first start) the CA, the token store and the API token in
    /// `options.state_dir`, and gets the control plane its serving certificate for
    /// `ips`. Needs a tokio runtime (the certificate is renewed by a task).
    pub async fn open(
        options: &SecurityOptions,
        ips: Vec<IpAddr>,
    ) -> Result<Security, SecurityError> {
        let dir = &options.state_dir;
        create_private_dir(dir)?;
        let ca = match &options.plugged_ca {
            Some(plugged) => Ca::from_plugged(plugged, &options.trust_domain)?,
            None => Ca::load_or_create(&dir.join("ca"), &options.trust_domain)?,
        };
        let ca = Arc::new(ca);
        let tokens = Arc::new(BootstrapTokens::open(&dir.join("tokens"))?);
        if let Err(e) = tokens.prune() {
            tracing::warn!(error = %e, "cannot prune expired bootstrap tokens");
        }
        let mut authenticators = Authenticators::new()
            .with(Arc::new(trellis_identity::PeerCertificates::new(
                ca.trust_domain(),
            )))
            .with(Arc::new(TokenAuthenticator(tokens.clone())));
        for extra in &options.authenticators {
            authenticators = authenticators.with(extra.clone());
        }
        let mut names = vec!["localhost".to_string(), tls::SERVER_NAME.to_string()];
        names.push("istiod".into());
        let signer = CaSigner::new(ca.clone(), names, ips, SERVING_LIFETIME);
        let serving = CertificateManager::start(
            ca.control_plane_identity(),
            signer,
            RenewalPolicy::default(),
        );
        serving.ready().await;
        let api_token_file = dir.join("api-token");
        let api_token = api_token(&api_token_file)?;
        Ok(Security {
            ca,
            tokens,
            authenticators,
            serving,
            api_token,
            api_token_file,
            workload_lifetime: options.workload_lifetime,
        })
    }

    /// The control plane's SPIFFE id, which proxies pin.
    pub fn control_plane_identity(&self) -> SpiffeId {
        self.ca.control_plane_identity()
    }

    /// The current serving credentials (for the gRPC server config).
    pub fn serving(&self) -> CurrentCredentials {
        self.serving.credentials()
    }

    /// The gRPC port's TLS: the serving certificate; a client certificate verified
    /// when sent (a first CSR comes without one, with a bootstrap token instead).
    pub fn grpc_server_config(&self) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
        Ok(trellis_identity::server_config(
            &self.serving(),
            trellis_identity::ClientAuth::Optional,
            &[b"h2"],
        )?)
    }

    /// Who `credential` is, if anyone.
    pub async fn authenticate(
        &self,
        credential: &Credential,
    ) -> Result<WorkloadIdentity, trellis_identity::AuthError> {
        self.authenticators.authenticate(credential).await
    }

    /// Whether `presented` is the HTTP API's token (compared in constant time).
    pub fn api_token_matches(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.api_token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Where the HTTP API's token is kept (mode 0600).
    pub fn api_token_file(&self) -> &Path {
        &self.api_token_file
    }

    pub fn workload_lifetime(&self) -> Duration {
        self.workload_lifetime
    }

    /// A proxy's identity for the workload `namespace`/`service_account`, for a proxy
    /// in this process (tests, benchmarks): a bootstrap token minted here, the root
    /// pinned. Needs a tokio runtime (the certificate manager is a task).
    pub fn client_identity(
        &self,
        address: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<client::ClientIdentity, String> {
        let who = WorkloadIdentity::new(namespace, service_account).map_err(|e| e.to_string())?;
        let token = self
            .tokens
            .mint(&who, Duration::from_secs(600))
            .map_err(|e| e.to_string())?;
        let id = who
            .spiffe_id(self.ca.trust_domain())
            .map_err(|e| e.to_string())?;
        let trust = trellis_identity::Trust::from_pem(self.ca.trust_domain(), &self.ca.root_pem())
            .map_err(|e| e.to_string())?;
        Ok(client::ClientIdentity::bootstrap(
            address,
            trust,
            id,
            token.secret().to_string(),
            RenewalPolicy::default(),
        ))
    }
}

/// First CSRs: a one-time bootstrap token.
struct TokenAuthenticator(Arc<BootstrapTokens>);

impl Authenticator for TokenAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> trellis_identity::auth::AuthFuture<'a> {
        Box::pin(async move {
            match credential {
                Credential::BootstrapToken(token) => self.0.redeem(token),
                other => Err(trellis_identity::AuthError::Unsupported(other.kind())),
            }
        })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), SecurityError> {
    let error = |source| SecurityError::File {
        file: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(error)
}

/// The API token in `file`, made (random, mode 0600) when there is none yet.
fn api_token(file: &Path) -> Result<String, SecurityError> {
    let error = |source| SecurityError::File {
        file: file.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| error(std::io::Error::other("no randomness")))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(error)?;
    f.write_all(token.as_bytes()).map_err(error)?;
    Ok(token)
}
