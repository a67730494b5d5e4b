//! Opaque TCP proxying: pick a cluster by the listener's TCP routes, an endpoint by the
//! cluster's balancer, and copy bytes both ways, counting them for Istio's TCP metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use crate::http::Connection;
use crate::state::{Outcome, record_outcome};

/// How long a client may take to send its ClientHello on an SNI-routed listener.
const SNI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Proxies one accepted TCP connection.
pub async fn proxy(conn: Arc<Connection>, mut downstream: TcpStream) {
    let snapshot = conn.shared.snapshot.load_full();
    let listener = snapshot
        .listeners
        .iter()
        .find(|l| l.model.name == conn.listener.model.name)
        .cloned()
        .unwrap_or_else(|| conn.listener.clone());
    // TLS routes: read the ClientHello's server name (not consuming it) only when a
    // route asks for one.
    let sni = if listener.tcp_routes.iter().any(|r| !r.sni.is_empty()) {
        crate::sni::peek_server_name(&downstream, SNI_TIMEOUT).await
    } else {
        None
    };
    let route = listener.tcp_routes.iter().find(|r| {
        r.sni.is_empty()
            || sni
                .as_deref()
                .is_some_and(|name| r.sni.iter().any(|p| crate::sni::name_matches(p, name)))
    });
    let Some(route) = route else {
        tracing::debug!(listener = %listener.model.name, sni = ?sni, "no TCP route: closing (NR)");
        return;
    };
    let Some((_, cluster)) = route.pick.pick() else {
        return;
    };
    let cluster = cluster.clone();
    let Some(index) = cluster
        .balancer
        .pick(&cluster.state, &cluster.endpoints, None, &[])
    else {
        tracing::debug!(cluster = %cluster.model.name, "no healthy upstream (UH)");
        return;
    };
    let endpoint = cluster.endpoints[index].clone();
    let labels = cluster.labels[index].clone();
    let metrics = &conn.shared.metrics;
    metrics.tcp_opened(&labels);
    let mut upstream = match TcpStream::connect(endpoint.addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream = %endpoint.addr, error = %e, "upstream connect failure (UF)");
            record_outcome(
                &cluster.state,
                &cluster.endpoints,
                &endpoint,
                cluster.model.outlier.as_ref(),
                Outcome::ConnectFailure,
            );
            metrics.tcp_closed(&labels, 0, 0);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    endpoint.active.fetch_add(1, Ordering::AcqRel);
    let (received, sent) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream)
        .await
        .unwrap_or((0, 0));
    endpoint.active.fetch_sub(1, Ordering::AcqRel);
    metrics.tcp_closed(&labels, sent, received);
}
