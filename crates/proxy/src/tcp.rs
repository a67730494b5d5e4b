//! Opaque TCP proxying: pick a cluster by the listener's TCP routes (by the
//! ClientHello's SNI when a route names server names), an endpoint by the cluster's
//! balancer, connect through the same step as HTTP (limits, connect timeout,
//! keepalive, DestinationRule TLS), and copy bytes both ways. Each connection's
//! outcome is one set of response flags (NR, UH, UO, UF) in Istio's TCP metrics and
//! the access log, as Envoy's TCP proxy reports it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::downstream::Connection;
use crate::error::{ErrorKind, ProxyError};
use crate::flags::Flags;
use crate::snapshot::ClusterRt;
use crate::state::{Outcome, record_outcome};
use crate::upstream::connect::{self, Alpn};

/// What one connection came to, for metrics and the access log.
struct Record {
    start: Instant,
    labels: Arc<str>,
    flags: Flags,
    cluster: Option<Arc<ClusterRt>>,
    upstream: Option<std::net::SocketAddr>,
    failure: Option<String>,
    /// The open was counted already (when the upstream connection was made).
    opened: bool,
    sent: u64,
    received: u64,
}

/// Proxies one accepted TCP connection (`sni`: the ClientHello's server name, when
/// the listener routes by it).
pub async fn proxy<S>(conn: Arc<Connection>, mut downstream: S, sni: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let listener = conn.current_listener(&conn.shared.snapshot.load());
    let mut record = Record {
        start: Instant::now(),
        labels: listener.unrouted_labels.clone(),
        flags: Flags::NONE,
        cluster: None,
        upstream: None,
        failure: None,
        opened: false,
        sent: 0,
        received: 0,
    };
    let route = listener.tcp_routes.iter().find(|r| {
        r.sni.is_empty()
            || sni
                .as_deref()
                .is_some_and(|name| r.sni.iter().any(|p| crate::sni::name_matches(p, name)))
    });
    if let Some(security) = listener.security.as_ref().filter(|s| !s.authz.is_empty()) {
        let attributes = crate::policy::RequestAttributes {
            source_ip: Some(conn.peer.ip()),
            remote_ip: Some(conn.peer.ip()),
            destination_ip: Some(conn.local.ip()),
            destination_port: listener.port,
            sni: sni.as_deref(),
            http: None,
            ..crate::policy::RequestAttributes::default()
        }
        .with_peer(conn.peer_identity.get().map(|p| p.uri.as_str()));
        let decision = crate::policy::authorize(&security.authz, &attributes);
        if let crate::policy::Verdict::Deny { policy } = decision.verdict {
            tracing::debug!(peer = %conn.peer, principal = ?attributes.source_principal, policy = ?policy, "TCP connection denied by AuthorizationPolicy");
            record.flags = crate::flags::Flags::RBAC_DENIED;
            // Reported against the workload the connection was for, from its peer (as
            // HTTP denials are), not with the unrouted labels.
            if let Some((cluster, _)) = route.and_then(|r| r.pick.choices.first())
                && !cluster.labels.is_empty()
            {
                record.labels = conn.labels_for(cluster, 0);
            }
            write(&conn, &record);
            return;
        }
    }
    match route.and_then(|r| r.pick.pick()) {
        None => {
            tracing::debug!(listener = %listener.model.name, sni = ?sni, "no TCP route: closing (NR)");
            record.flags = ErrorKind::NoRoute.flag();
        }
        Some((_, cluster)) => {
            let cluster = cluster.clone();
            record.labels = cluster.service_labels.clone();
            record.cluster = Some(cluster.clone());
            if let Err(e) = forward(&conn, &cluster, &mut downstream, &mut record).await {
                tracing::debug!(cluster = %cluster.model.name, error = %e, flag = %e.kind.flag(), "TCP connection not proxied");
                record.flags.insert(e.kind.flag());
                if e.kind == ErrorKind::ConnectFailure {
                    record.failure = Some(e.to_string());
                }
            }
        }
    }
    write(&conn, &record);
}

/// Connects to an endpoint of `cluster` and copies bytes until either side closes.
async fn forward<S>(
    conn: &Connection,
    cluster: &ClusterRt,
    downstream: &mut S,
    record: &mut Record,
) -> Result<(), ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let index = cluster
        .balancer
        .pick(&cluster.state, &cluster.endpoints, None, &[])
        .ok_or_else(|| ProxyError::new(ErrorKind::NoHealthyUpstream))?;
    let endpoint = cluster.endpoints[index].clone();
    record.labels = conn.labels_for(cluster, index);
    record.upstream = Some(endpoint.addr);
    let Some(_slot) = connect::reserve(cluster, &endpoint) else {
        cluster.state.overflows.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::new(ErrorKind::Overflow));
    };
    let outlier = cluster.model.outlier.as_ref();
    let mut upstream = match connect::connect(cluster, &endpoint, Alpn::None).await {
        Ok(io) => io,
        Err(e) => {
            let all = &cluster.endpoints;
            record_outcome(
                &cluster.state,
                all,
                &endpoint,
                outlier,
                Outcome::ConnectFailure,
            );
            return Err(e);
        }
    };
    record_outcome(
        &cluster.state,
        &cluster.endpoints,
        &endpoint,
        outlier,
        Outcome::Connected,
    );
    conn.shared.metrics.tcp_opened(&record.labels, record.flags);
    record.opened = true;
    endpoint.active.fetch_add(1, Ordering::AcqRel);
    let copied = tokio::io::copy_bidirectional(downstream, &mut upstream).await;
    endpoint.active.fetch_sub(1, Ordering::AcqRel);
    let (received, sent) = copied.unwrap_or((0, 0));
    record.received = received;
    record.sent = sent;
    Ok(())
}

/// Istio's TCP metrics and the access-log line for one connection.
fn write(conn: &Connection, r: &Record) {
    let metrics = &conn.shared.metrics;
    if !r.opened {
        metrics.tcp_opened(&r.labels, r.flags);
    }
    metrics.tcp_closed(&r.labels, r.flags, r.sent, r.received);
    if conn.shared.access_log {
        crate::access_log::write(
            conn.shared.access_log_json,
            &crate::access_log::Entry {
                http: None,
                flags: r.flags,
                failure_reason: r.failure.as_deref(),
                bytes_received: r.received,
                bytes_sent: r.sent,
                duration: r.start.elapsed(),
                upstream: r.upstream,
                cluster: r.cluster.as_ref().map(|c| c.model.name.as_str()),
                downstream_local: conn.local,
                downstream_peer: conn.peer,
            },
        );
    }
}
