//! The proxy's side of mesh identity: a [`Signer`] that asks the control plane's CA
//! over gRPC (the first time with the one-time bootstrap token, or in cluster mode
//! the pod's service-account token, and no client certificate; afterwards with the
//! current workload certificate), and the TLS
//! config the config stream dials with (the mesh root and the control plane's SPIFFE
//! id pinned, the workload certificate presented).

use std::sync::{Arc, Mutex};

use trellis_identity::{
    CertificateManager, CurrentCredentials, RenewalPolicy, SignError, SignedChain, Signer,
    SpiffeId, Trust,
};

use super::signing::{BEARER_SCHEME, BOOTSTRAP_SCHEME};
use crate::proto::SignRequest;
use crate::proto::mesh_config_client::MeshConfigClient;

/// How a proxy reaches the control plane securely.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The mesh root, pinned (read from the CA's file in local mode).
    pub trust: Arc<Trust>,
    /// The control plane's SPIFFE id.
    pub control_plane: SpiffeId,
    /// The proxy's workload certificate, renewed in the background.
    pub manager: Arc<CertificateManager>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("identity", self.manager.identity())
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Starts getting certificates for `identity` from the control plane at
    /// `address`, the first one with `bootstrap_token` (needs a tokio runtime).
    pub fn bootstrap(
        address: &str,
        trust: Arc<Trust>,
        identity: SpiffeId,
        bootstrap_token: String,
        policy: RenewalPolicy,
    ) -> ClientIdentity {
        ClientIdentity::start(
            address,
            trust,
            identity,
            FirstCredential::Bootstrap(bootstrap_token),
            policy,
        )
    }

    /// As [`ClientIdentity::bootstrap`], proving the workload with the Kubernetes
    /// service-account token in `token_file` (read afresh for each first
    /// certificate: the kubelet rotates projected tokens).
    pub fn with_token_file(
        address: &str,
        trust: Arc<Trust>,
        identity: SpiffeId,
        token_file: std::path::PathBuf,
        policy: RenewalPolicy,
    ) -> ClientIdentity {
        ClientIdentity::start(
            address,
            trust,
            identity,
            FirstCredential::TokenFile(token_file),
            policy,
        )
    }

    /// Starts getting certificates for `identity` from the control plane at
    /// `address`, the first one proven by `first` (needs a tokio runtime).
    pub fn start(
        address: &str,
        trust: Arc<Trust>,
        identity: SpiffeId,
        first: FirstCredential,
        policy: RenewalPolicy,
    ) -> ClientIdentity {
        let control_plane = SpiffeId::with_trust_domain(
            trust.trust_domain(),
            "istio-system",
            "trellis-control-plane",
        )
        .expect("the control plane's identity is well formed");
        let signer = GrpcSigner {
            address: address.to_string(),
            trust: trust.clone(),
            control_plane: control_plane.clone(),
            token: Mutex::new(Some(first)),
            current: Mutex::new(None),
        };
        let signer = Arc::new(signer);
        let manager = CertificateManager::start(identity, SharedSigner(signer.clone()), policy);
        *signer.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(manager.credentials());
        ClientIdentity {
            trust,
            control_plane,
            manager: Arc::new(manager),
        }
    }

    /// The TLS config of the config stream: the workload certificate presented, the
    /// control plane checked by its SPIFFE id.
    pub fn stream_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        trellis_identity::client_config(
            &self.manager.credentials(),
            std::slice::from_ref(&self.control_plane),
            &[b"h2"],
        )
        .map_err(|e| e.to_string())
    }
}

struct SharedSigner(Arc<GrpcSigner>);

impl Signer for SharedSigner {
    async fn sign(&self, csr_pem: String) -> Result<SignedChain, SignError> {
        self.0.sign(csr_pem).await
    }
}

/// What proves the workload before it has a certificate.
pub enum FirstCredential {
    /// Local mode: a one-time token from the runner (spent once used).
    Bootstrap(String),
    /// Cluster mode: the pod's projected service-account token, re-read each time.
    TokenFile(std::path::PathBuf),
}

impl FirstCredential {
    /// The `authorization` metadata value.
    fn header(&self) -> Result<String, SignError> {
        match self {
            FirstCredential::Bootstrap(token) => Ok(format!("{BOOTSTRAP_SCHEME}{token}")),
            FirstCredential::TokenFile(file) => {
                let token = std::fs::read_to_string(file).map_err(|e| {
                    SignError::Unavailable(format!(
                        "the service-account token {}: {e}",
                        file.display()
                    ))
                })?;
                Ok(format!("{BEARER_SCHEME}{}", token.trim()))
            }
        }
    }

    /// Whether it works only once.
    fn one_time(&self) -> bool {
        matches!(self, FirstCredential::Bootstrap(_))
    }
}

/// Signs over gRPC: bootstrap token first, the current certificate afterwards.
struct GrpcSigner {
    address: String,
    trust: Arc<Trust>,
    control_plane: SpiffeId,
    /// For the first certificate (a bootstrap token is used once).
    token: Mutex<Option<FirstCredential>>,
    /// The manager's credentials, once it exists.
    current: Mutex<Option<CurrentCredentials>>,
}

impl GrpcSigner {
    async fn sign(&self, csr_pem: String) -> Result<SignedChain, SignError> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| c.load().is_some());
        let token = {
            let first = self.token.lock().unwrap_or_else(|e| e.into_inner());
            match first.as_ref() {
                Some(f) => Some((f.header()?, f.one_time())),
                None => None,
            }
        };
        let allowed = std::slice::from_ref(&self.control_plane);
        let (config, token) = match (&current, token) {
            (Some(current), _) => (
                trellis_identity::client_config(current, allowed, &[b"h2"]),
                None,
            ),
            (None, Some(token)) => (
                trellis_identity::bootstrap_client_config(self.trust.clone(), allowed, &[b"h2"]),
                Some(token),
            ),
            (None, None) => {
                return Err(SignError::Refused(
                    "no certificate to renew with and the bootstrap token is spent".into(),
                ));
            }
        };
        let config = config.map_err(|e| SignError::Unavailable(e.to_string()))?;
        let channel = super::tls::connect(&self.address, config)
            .await
            .map_err(SignError::Unavailable)?;
        let mut request = tonic::Request::new(SignRequest { csr_pem });
        if let Some((header, _)) = &token {
            let value = header
                .parse()
                .map_err(|_| SignError::Refused("the token is not ASCII".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = MeshConfigClient::new(channel)
            .sign(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    SignError::Unavailable(status.message().to_string())
                }
                _ => SignError::Refused(status.message().to_string()),
            })?
            .into_inner();
        if token.is_some_and(|(_, one_time)| one_time) {
            // Spent: a bootstrap token works once.
            *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        Ok(SignedChain {
            chain_pem: response.chain_pem,
            roots_pem: response.roots_pem,
        })
    }
}
