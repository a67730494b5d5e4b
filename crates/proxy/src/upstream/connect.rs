//! The one way to open a connection to an upstream endpoint, for HTTP, TCP and mirrors
//! alike: the cluster's connection limit, the dial with its connect timeout, kernel
//! keepalive, and TLS origination (SNI, verification, ALPN) when the cluster's
//! DestinationRule asks for it. What the connection then carries is the caller's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};
use crate::snapshot::ClusterRt;
use crate::state::{ClusterState, EndpointState};

pub use super::origin::{Alpn, UpstreamIo};

/// Envoy's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection's place under the cluster's `maxConnections`, and in the endpoint's
/// connection count; both are given back when it is dropped (with the connection).
pub struct ConnectionSlot {
    state: Arc<ClusterState>,
    endpoint: Arc<EndpointState>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.connections.fetch_sub(1, Ordering::AcqRel);
        self.state.released.notify_one();
    }
}

/// Takes a connection slot for `endpoint` if the cluster is under its connection limit.
pub fn reserve(cluster: &ClusterRt, endpoint: &Arc<EndpointState>) -> Option<ConnectionSlot> {
    let max = cluster.model.pool.max_connections;
    let state = &cluster.state;
    state
        .connections
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (max == 0 || c < max).then_some(c + 1)
        })
        .ok()?;
    endpoint.connections.fetch_add(1, Ordering::AcqRel);
    Some(ConnectionSlot {
        state: state.clone(),
        endpoint: endpoint.clone(),
    })
}

/// The cluster's connect timeout (DestinationRule `tcp.connectTimeout`, else Envoy's 10 s).
pub fn connect_timeout(cluster: &ClusterRt) -> Duration {
    match cluster.model.pool.connect_timeout_ms {
        0 => DEFAULT_CONNECT_TIMEOUT,
        ms => Duration::from_millis(ms),
    }
}

/// Dials `endpoint` under `slot`: TCP within the connect timeout, keepalive, then TLS
/// when the cluster originates it. The connection's bytes carry what `alpn` says.
pub async fn connect(
    cluster: &ClusterRt,
    endpoint: &EndpointState,
    alpn: Alpn,
) -> Result<UpstreamIo, ProxyError> {
    let timeout = connect_timeout(cluster);
    if endpoint.mesh && cluster.mesh_tls.is_none() {
        // ISTIO_MUTUAL asked for, and this proxy has no workload certificate.
        return Err(ProxyError::with(
            ErrorKind::ConnectFailure,
            "ISTIO_MUTUAL: this proxy has no mesh identity (no workload certificate)",
        )
        .at_fault(crate::error::Fault::Config));
    }
    // Settings that cannot be used fail every connection, never fall back to plaintext.
    if let Some(problem) = cluster
        .tls
        .as_ref()
        .filter(|_| !endpoint.mesh)
        .and_then(|t| t.problem())
    {
        return Err(ProxyError::with(
            ErrorKind::ConnectFailure,
            format!("upstream TLS settings unusable: {problem}"),
        )
        .at_fault(crate::error::Fault::Config));
    }
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ProxyError::with(ErrorKind::ConnectFailure, e)),
        Err(_) => {
            return Err(ProxyError::with(
                ErrorKind::ConnectFailure,
                "connect timeout",
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    if let Some(ka) = &cluster.model.pool.tcp_keepalive {
        let mut params = socket2::TcpKeepalive::new();
        if ka.time_ms > 0 {
            params = params.with_time(Duration::from_millis(ka.time_ms));
        }
        if ka.interval_ms > 0 {
            params = params.with_interval(Duration::from_millis(ka.interval_ms));
        }
        if ka.probes > 0 {
            params = params.with_retries(ka.probes);
        }
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&params);
    }
    let handshake = match (&cluster.mesh_tls, &cluster.tls) {
        (Some(mesh), _) if endpoint.mesh => {
            tokio::time::timeout(timeout, mesh.handshake(stream, alpn)).await
        }
        (_, Some(tls)) => tokio::time::timeout(timeout, tls.handshake(stream, alpn)).await,
        _ => return Ok(UpstreamIo::Plain(stream)),
    };
    match handshake {
        Ok(Ok(s)) => Ok(UpstreamIo::Tls(Box::new(s))),
        Ok(Err(e)) => Err(ProxyError::with(
            ErrorKind::ConnectFailure,
            format!("TLS handshake: {e}"),
        )),
        Err(_) => Err(ProxyError::with(
            ErrorKind::ConnectFailure,
            "TLS handshake timeout",
        )),
    }
}
