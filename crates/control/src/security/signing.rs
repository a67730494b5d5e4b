//! `trellis.mesh.v1.MeshConfig/Sign`, the mesh CA's signing call: authenticate the caller (its
//! verified workload certificate, a one-time bootstrap token in the
//! `authorization: Bootstrap TOKEN` metadata, or in cluster mode the pod's
//! service-account token as `authorization: Bearer TOKEN`), then sign the CSR's public key for
//! that identity only. A refusal says why without echoing the credential.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_identity::Credential;

use super::Security;
use super::tls::PeerInfo;
use crate::proto::{SignRequest, SignResponse};

/// The metadata scheme a first CSR carries its bootstrap token in.
pub const BOOTSTRAP_SCHEME: &str = "Bootstrap ";
/// The scheme of a Kubernetes service-account token (cluster mode), as Istio's
/// sidecars send theirs.
pub const BEARER_SCHEME: &str = "Bearer ";

/// Signs a CSR for the identity the request authenticated as.
pub async fn sign(
    security: &Arc<Security>,
    request: Request<SignRequest>,
) -> Result<Response<SignResponse>, Status> {
    let Some(credential) = credential_of(&request) else {
        return Err(Status::unauthenticated(
            "no credential: present a workload certificate, a bootstrap token as `authorization: Bootstrap TOKEN`, or a service-account token as `authorization: Bearer TOKEN`",
        ));
    };
    let who = security
        .authenticate(&credential)
        .await
        .map_err(|e| match e {
            trellis_identity::AuthError::Unavailable(_) => Status::unavailable(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        })?;
    let id = who
        .spiffe_id(security.ca.trust_domain())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let csr = request.into_inner().csr_pem;
    let issued = security
        .ca
        .sign(csr.as_bytes(), &id, security.workload_lifetime())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    tracing::info!(identity = %id, serial = %issued.serial, "signed a workload certificate");
    Ok(Response::new(SignResponse {
        chain_pem: issued.chain_pem,
        roots_pem: issued.root_pem,
    }))
}

/// The credential a request presents: its verified client certificate if the
/// connection had one, else a bootstrap token from its metadata.
pub fn credential_of<T>(request: &Request<T>) -> Option<Credential> {
    if let Some(chain) = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.chain.clone())
    {
        return Some(Credential::VerifiedPeer(chain.as_ref().clone()));
    }
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    if let Some(token) = value.strip_prefix(BEARER_SCHEME) {
        return Some(Credential::ServiceAccountToken(token.trim().to_string()));
    }
    let token = value.strip_prefix(BOOTSTRAP_SCHEME)?;
    Some(Credential::BootstrapToken(token.trim().to_string()))
}
