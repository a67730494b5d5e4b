//! The mesh's mutual TLS on a sidecar's inbound listeners, as PeerAuthentication
//! says: STRICT takes only mTLS, PERMISSIVE takes mTLS and plaintext on the same port
//! (told apart by the first byte: a TLS handshake record), DISABLE takes plaintext.
//! The client must present a certificate of the mesh; its SPIFFE id becomes the
//! connection's peer identity, which metrics and authorization read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use trellis_identity::SpiffeId;
use trellis_model::security::MtlsMode;

use crate::downstream::Connection;
use crate::tls::HANDSHAKE_TIMEOUT;

/// The verified peer of a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub id: SpiffeId,
    /// `spiffe://TD/ns/NS/sa/SA`, as metrics write it.
    pub uri: String,
}

/// How long a PERMISSIVE port waits for a client's first byte before taking the
/// connection as plaintext (a protocol where the server speaks first).
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(500);

/// What an inbound connection turned out to be.
pub enum Accepted {
    /// Mutual TLS, terminated; the peer identity is on the connection.
    Mesh(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        Option<bool>,
    ),
    /// Plaintext, allowed on this port.
    Plain(TcpStream),
    /// Refused (plaintext under STRICT, a failed handshake); already closed.
    Refused,
}

/// Terminates the mesh's mTLS on `stream` as `mode` says.
pub async fn accept(conn: &Arc<Connection>, stream: TcpStream, mode: MtlsMode) -> Accepted {
    let Some(acceptor) = conn.shared.inbound_tls.clone() else {
        if mode == MtlsMode::Strict {
            // STRICT with no workload certificate to terminate with: fail closed.
            tracing::warn!(listener = %conn.listener.model.name, "STRICT mTLS, but this proxy has no mesh identity: connection refused");
            return Accepted::Refused;
        }
        return Accepted::Plain(stream);
    };
    if mode == MtlsMode::Disable {
        return Accepted::Plain(stream);
    }
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(FIRST_BYTE_WAIT, stream.peek(&mut first)).await;
    let tls = matches!(peeked, Ok(Ok(1))) && first[0] == 0x16;
    if !tls {
        if mode == MtlsMode::Strict {
            tracing::debug!(peer = %conn.peer, listener = %conn.listener.model.name, "plaintext refused: STRICT mTLS");
            conn.shared
                .metrics
                .mtls_plaintext_refused
                .fetch_add(1, Ordering::Relaxed);
            return Accepted::Refused;
        }
        return Accepted::Plain(stream);
    }
    let metrics = &conn.shared.metrics;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %conn.peer, error = %e, "mesh mTLS handshake refused");
            return Accepted::Refused;
        }
        Err(_) => {
            metrics.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            return Accepted::Refused;
        }
    };
    metrics.tls_handshakes.fetch_add(1, Ordering::Relaxed);
    let state = tls.get_ref().1;
    let Some(id) = trellis_identity::peer_spiffe_id(state) else {
        // The verifier requires a mesh certificate; without an id there is no peer.
        return Accepted::Refused;
    };
    let h2 = match state.alpn_protocol() {
        Some(b"h2") => Some(true),
        Some(_) => Some(false),
        None => None,
    };
    let _ = conn.peer_identity.set(PeerIdentity {
        uri: id.to_string(),
        id,
    });
    Accepted::Mesh(Box::new(tls), h2)
}
