//! The mesh's own mutual TLS to upstreams (ISTIO_MUTUAL, or automatic to endpoints
//! with a sidecar): the proxy's workload certificate presented, the server checked
//! against the mesh root and by its SPIFFE id (the destination's service accounts).
//! Configs read the current certificate on every handshake, so a rotation needs no
//! rebuild; they are made once per cluster when a config is compiled.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use trellis_identity::{CurrentCredentials, SpiffeId};
use trellis_model::MeshTls;

use super::origin::Alpn;

/// A cluster's mesh mTLS, ready to dial.
pub struct MeshOrigin {
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    opaque: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// Fingerprint of the settings, part of the endpoint key (never 0).
    pub key: u64,
}

impl MeshOrigin {
    /// Compiles `tls` for a proxy whose certificate `credentials` holds.
    pub fn compile(tls: &MeshTls, credentials: &CurrentCredentials) -> Result<MeshOrigin, String> {
        let allowed = tls
            .identities
            .iter()
            .map(|id| SpiffeId::parse(id).map_err(|e| format!("mesh TLS identity {id:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let config = |alpn: &[&[u8]]| {
            trellis_identity::client_config(credentials, &allowed, alpn).map_err(|e| e.to_string())
        };
        let sni = if tls.sni.is_empty() {
            "outbound".to_string()
        } else {
            tls.sni.clone()
        };
        let name = ServerName::try_from(sni.clone())
            .map_err(|e| format!("mesh TLS server name {sni:?}: {e}"))?;
        let key = {
            let mut h = std::hash::DefaultHasher::new();
            ("mesh", tls).hash(&mut h);
            h.finish().max(1)
        };
        Ok(MeshOrigin {
            http1: config(&[b"http/1.1"])?,
            http2: config(&[b"h2"])?,
            opaque: config(&[])?,
            name,
            key,
        })
    }

    /// Mutual TLS over `tcp`, offering the ALPN `alpn` asks for.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        alpn: Alpn,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::Http2 => &self.http2,
            Alpn::None => &self.opaque,
        };
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(self.name.clone(), tcp)
            .await
    }
}
