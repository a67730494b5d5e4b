//! Downstream TLS termination: a rustls server config per TLS listener, prepared
//! with the snapshot (so a config swap swaps certificates for new connections), and
//! a certificate picked by the client's SNI.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use trellis_model::{TlsMode, TlsServer};

/// How long a client may take to finish the handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listener's prepared TLS settings.
pub struct TlsRt {
    pub acceptor: TlsAcceptor,
}

impl TlsRt {
    /// Parses the certificates and keys; an error names the listener's bad certificate.
    pub fn compile(model: &TlsServer) -> Result<TlsRt, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut certs = Vec::new();
        for (i, c) in model.certificates.iter().enumerate() {
            let key = certified_key(c, &provider).map_err(|e| format!("certificate {i}: {e}"))?;
            certs.push((
                c.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                Arc::new(key),
            ));
        }
        if certs.is_empty() {
            return Err("TLS without a certificate".into());
        }
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (model.mode, &model.client_ca_pem) {
            (TlsMode::Mutual, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| format!("client CA: {e}"))?;
                    roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("client CA: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            (TlsMode::Mutual, None) => return Err("MUTUAL TLS without a client CA".into()),
            (TlsMode::Simple, _) => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
        config.alpn_protocols = model.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(TlsRt {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

fn certified_key(
    c: &trellis_model::TlsCertificate,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(c.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the chain".into());
    }
    let key = PrivateKeyDer::from_pem_slice(c.private_key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(key)
}

/// Picks a certificate by SNI: an exact name, then a `*.domain` wildcard, then one
/// that serves any name, then the first (Envoy's default filter chain).
#[derive(Debug)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let sni = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        if let Some(name) = sni.as_deref() {
            let exact = self
                .certs
                .iter()
                .find(|(hosts, _)| hosts.iter().any(|h| h == name));
            let wildcard = || {
                self.certs.iter().find(|(hosts, _)| {
                    hosts.iter().any(|h| {
                        h.strip_prefix('*').is_some_and(|suffix| {
                            suffix.starts_with('.')
                                && name.len() > suffix.len()
                                && name.ends_with(suffix)
                        })
                    })
                })
            };
            if let Some((_, key)) = exact.or_else(wildcard) {
                return Some(key.clone());
            }
        }
        self.certs
            .iter()
            .find(|(hosts, _)| hosts.is_empty() || hosts.iter().any(|h| h == "*"))
            .or(self.certs.first())
            .map(|(_, key)| key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
