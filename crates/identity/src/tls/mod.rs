//! rustls configs for mesh mTLS that read the credentials in force on every
//! handshake: a rotation is a store into `CurrentCredentials`, never a config
//! rebuild, and open connections keep the certificate they started with. Built
//! with aws-lc-rs named explicitly, never a process default.

mod verify;

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::credentials::{CurrentCredentials, Trust, provider};
use crate::spiffe::SpiffeId;

pub use verify::{MeshClientVerifier, SpiffeServerVerifier, UnexpectedPeer, peer_spiffe_id};

/// Whether a server asks for and requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Mesh mTLS (PeerAuthentication STRICT).
    Required,
    /// Verified when sent (a PERMISSIVE port; the control plane's bootstrap path).
    Optional,
    /// Not asked for.
    None,
}

/// Why a config could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

/// Presents the certificate in force, as a server and as a client.
#[derive(Debug, Clone)]
pub struct CurrentCertificate(pub CurrentCredentials);

impl CurrentCertificate {
    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.0.load().map(|c| c.certified_key().clone())
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }

    fn has_certs(&self) -> bool {
        self.0.load().is_some()
    }
}

/// Presents no client certificate (a proxy's first call to the control plane).
#[derive(Debug)]
struct NoClientCertificate;

impl ResolvesClientCert for NoClientCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Session resumption keeps rustls' defaults in both configs: a resumed session
/// carries the identity verified at its first full handshake, so a root change
/// applies to full handshakes (build new configs to cut resumed ones off too).
///
/// A server config presenting the current certificate; client certificates are
/// verified against the current mesh roots as `client_auth` says.
pub fn server_config(
    credentials: &CurrentCredentials,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required | ClientAuth::Optional => builder.with_client_cert_verifier(Arc::new(
            MeshClientVerifier::new(credentials, client_auth == ClientAuth::Required),
        )),
    };
    let mut config = builder.with_cert_resolver(Arc::new(CurrentCertificate(credentials.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config presenting the current certificate and accepting a server of
/// the mesh whose SPIFFE id is one of `allowed` (any of the trust domain when empty).
/// The server name given at connect time is not checked.
pub fn client_config(
    credentials: &CurrentCredentials,
    allowed: &[SpiffeId],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let verifier = SpiffeServerVerifier::new(credentials, allowed.to_vec());
    build_client(
        verifier,
        Arc::new(CurrentCertificate(credentials.clone())),
        alpn,
    )
}

/// A client config for a proxy that has no certificate yet: the mesh roots pinned,
/// the server one of `allowed` (the control plane), no client certificate.
pub fn bootstrap_client_config(
    trust: Arc<Trust>,
    allowed: &[SpiffeId],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let verifier = SpiffeServerVerifier::with_trust(trust, allowed.to_vec());
    build_client(verifier, Arc::new(NoClientCertificate), alpn)
}

fn build_client(
    verifier: SpiffeServerVerifier,
    resolver: Arc<dyn ResolvesClientCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
