//! Capture listeners: connections iptables redirected here (`trellis proxy init`).
//! The address the client meant to reach (`SO_ORIGINAL_DST`) picks the listener that
//! serves the connection, which then goes the usual way (sniffing, HTTP routing by
//! Host, TCP routes, inbound mTLS and authorization). A destination the config does
//! not name is passed through as opaque TCP or closed, as the listener says.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use trellis_model::{Capture, Direction};

use crate::Shared;
use crate::downstream::Connection;
use crate::flags::Flags;
use crate::snapshot::ListenerRt;

/// How long a passthrough connection may take to reach its original destination.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A capture listener's targets, by original destination, as listener positions.
pub struct CaptureRt {
    exact: HashMap<(IpAddr, u16), usize>,
    by_port: HashMap<u16, usize>,
    pub passthrough: bool,
}

impl CaptureRt {
    /// Resolves target listener names to their positions (`slots`).
    pub fn compile(capture: &Capture, slots: &HashMap<&str, usize>) -> Result<CaptureRt, String> {
        let mut exact = HashMap::new();
        let mut by_port = HashMap::new();
        for t in &capture.targets {
            let slot = *slots
                .get(t.listener.as_str())
                .ok_or_else(|| format!("capture target names missing listener {}", t.listener))?;
            match t.ip {
                Some(ip) => exact.entry((ip, t.port)).or_insert(slot),
                None => by_port.entry(t.port).or_insert(slot),
            };
        }
        Ok(CaptureRt {
            exact,
            by_port,
            passthrough: capture.passthrough,
        })
    }

    /// The position of the listener serving connections meant for `original`.
    pub fn target(&self, original: SocketAddr) -> Option<usize> {
        let ip = match original.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(original.ip()),
            v4 => v4,
        };
        self.exact
            .get(&(ip, original.port()))
            .or_else(|| self.by_port.get(&original.port()))
            .copied()
    }
}

/// The destination a redirected connection was meant for.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let addr = match stream.local_addr().ok()? {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    addr.ok()?.as_socket()
}

/// Serves one connection accepted on the capture listener `listener`.
pub async fn serve(shared: Arc<Shared>, listener: Arc<ListenerRt>, stream: TcpStream) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let Some(original) = original_destination(&stream) else {
        tracing::debug!(%peer, "captured connection without an original destination: closed");
        return;
    };
    if original == local {
        // Connected to the capture port itself, not redirected: serving it would
        // connect back here.
        tracing::debug!(%peer, %local, "direct connection to a capture port: closed");
        return;
    }
    let snapshot = shared.snapshot.load_full();
    let current = snapshot
        .listeners
        .get(listener.slot)
        .filter(|l| l.model.name == listener.model.name)
        .cloned()
        .unwrap_or(listener);
    let Some(capture) = current.capture.as_ref() else {
        return;
    };
    match capture.target(original) {
        Some(slot) => {
            let Some(target) = snapshot.listeners.get(slot).cloned() else {
                return;
            };
            drop(snapshot);
            let conn = Arc::new(Connection::new(shared, target, peer, original));
            crate::listener::serve(conn, stream).await;
        }
        None if capture.passthrough && current.model.direction == Direction::Inbound => {
            // The workload's mTLS mode for the port holds here too: under STRICT an
            // undeclared port takes only the mesh's mutual TLS.
            let mode = snapshot.config.security.mtls.mode_for(original.port());
            drop(snapshot);
            let conn = Arc::new(Connection::new(
                shared.clone(),
                current.clone(),
                peer,
                original,
            ));
            match crate::inbound::accept(&conn, stream, mode).await {
                crate::inbound::Accepted::Plain(s) => {
                    passthrough(&shared, &current, s, original).await
                }
                crate::inbound::Accepted::Mesh(tls, _) => {
                    passthrough(&shared, &current, *tls, original).await
                }
                crate::inbound::Accepted::Refused => {}
            }
        }
        None if capture.passthrough => passthrough(&shared, &current, stream, original).await,
        None => {
            tracing::debug!(%peer, %original, "destination outside the mesh's registry: closed (REGISTRY_ONLY)");
            let flags = Flags::NO_ROUTE;
            shared.metrics.tcp_opened(&current.unrouted_labels, flags);
            shared
                .metrics
                .tcp_closed(&current.unrouted_labels, flags, 0, 0);
        }
    }
}

/// Carries a connection to where it was going, as opaque TCP (inbound, after the
/// mesh's mTLS was terminated when it came so). Inbound, the app is reached on
/// loopback (a connection to the pod's own IP would be captured again).
async fn passthrough<S>(
    shared: &Shared,
    listener: &ListenerRt,
    mut downstream: S,
    original: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let to = if listener.model.direction == Direction::Inbound {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), original.port())
    } else {
        original
    };
    let labels = &listener.unrouted_labels;
    let start = Instant::now();
    let upstream = tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, TcpStream::connect(to)).await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%to, error = %e, "passthrough connect failed (UF)");
            shared
                .metrics
                .tcp_opened(labels, Flags::UPSTREAM_CONNECT_FAILURE);
            shared
                .metrics
                .tcp_closed(labels, Flags::UPSTREAM_CONNECT_FAILURE, 0, 0);
            return;
        }
        Err(_) => {
            tracing::debug!(%to, "passthrough connect timed out (UF)");
            shared
                .metrics
                .tcp_opened(labels, Flags::UPSTREAM_CONNECT_FAILURE);
            shared
                .metrics
                .tcp_closed(labels, Flags::UPSTREAM_CONNECT_FAILURE, 0, 0);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    shared.metrics.tcp_opened(labels, Flags::NONE);
    let (received, sent) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream)
        .await
        .unwrap_or((0, 0));
    shared
        .metrics
        .tcp_closed(labels, Flags::NONE, sent, received);
    tracing::debug!(%to, elapsed = ?start.elapsed(), "passthrough connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::CaptureTarget;

    #[test]
    fn an_exact_address_wins_over_a_port_and_unknowns_find_nothing() {
        let capture = Capture {
            targets: vec![
                CaptureTarget {
                    ip: None,
                    port: 9080,
                    listener: "any".into(),
                },
                CaptureTarget {
                    ip: Some("10.96.0.10".parse().expect("ip")),
                    port: 9080,
                    listener: "exact".into(),
                },
            ],
            passthrough: false,
            dns: None,
        };
        let slots = HashMap::from([("any", 0), ("exact", 1)]);
        let rt = CaptureRt::compile(&capture, &slots).expect("compiles");
        let at = |s: &str| rt.target(s.parse().expect("addr"));
        assert_eq!(at("10.96.0.10:9080"), Some(1));
        assert_eq!(at("[::ffff:10.96.0.10]:9080"), Some(1));
        assert_eq!(at("10.1.1.1:9080"), Some(0));
        assert_eq!(at("10.96.0.10:9081"), None);
        let missing = Capture {
            targets: vec![CaptureTarget {
                ip: None,
                port: 1,
                listener: "gone".into(),
            }],
            passthrough: true,
            dns: None,
        };
        assert!(CaptureRt::compile(&missing, &slots).is_err());
    }
}
