//! Talking to one upstream endpoint: the connection pool (idle HTTP/1.1 connections,
//! one shared HTTP/2 connection per endpoint) and the circuit-breaker limits on
//! connections and waiting requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::origin::UpstreamIo;
use crate::snapshot::ClusterRt;
use crate::state::{ClusterState, EndpointState, Pooled};

/// Envoy's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for a pooled connection when the pool is full.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Why an attempt got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// A circuit-breaker limit (connections with pending overflow).
    Overflow,
    /// The TCP connect failed or timed out.
    Connect(String),
    /// The stream was refused (HTTP/2 REFUSED_STREAM) before any processing.
    Refused,
    /// The connection or stream was reset before response headers.
    Reset(String),
}

/// Sends `req` to `endpoint`, over HTTP/2 when `h2`, else HTTP/1.1.
pub async fn send(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
    h2: bool,
) -> Result<Response<Incoming>, UpstreamError> {
    if h2 {
        send_h2(cluster, endpoint, req).await
    } else {
        send_h1(cluster, endpoint, req).await
    }
}

async fn send_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let (mut sender, uses) = acquire_h1(cluster, endpoint).await?;
    let response = sender.send_request(req).await.map_err(classify)?;
    let limit = cluster.model.pool.max_requests_per_connection;
    if limit == 0 || uses + 1 < limit {
        let endpoint = endpoint.clone();
        let state = cluster.state.clone();
        // The connection is reusable once this response's body has been read.
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                endpoint
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Pooled {
                        sender,
                        uses: uses + 1,
                        idle_since_ms: crate::state::now_ms(),
                    });
                state.released.notify_one();
            }
        });
    }
    Ok(response)
}

async fn acquire_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
) -> Result<(hyper::client::conn::http1::SendRequest<ProxyBody>, u32), UpstreamError> {
    let state = &cluster.state;
    let deadline = tokio::time::Instant::now() + MAX_QUEUE_WAIT;
    let mut queued = false;
    let result = loop {
        if let Some(p) = take_idle(endpoint, cluster.model.pool.idle_timeout_ms) {
            break Ok((p.sender, p.uses));
        }
        if try_reserve_connection(state, cluster.model.pool.max_connections) {
            break connect_h1(cluster, endpoint).await.map(|s| (s, 0));
        }
        if !queued {
            let max_pending = cluster.model.pool.max_pending_requests;
            let pending = state.pending.fetch_add(1, Ordering::AcqRel);
            if max_pending > 0 && pending >= max_pending {
                state.pending.fetch_sub(1, Ordering::AcqRel);
                state.overflows.fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::Overflow);
            }
            queued = true;
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(UpstreamError::Overflow);
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), state.released.notified()).await;
    };
    if queued {
        state.pending.fetch_sub(1, Ordering::AcqRel);
    }
    result
}

/// The most recently returned usable connection. Connections idle longer than
/// `idle_timeout_ms` (DestinationRule `http.idleTimeout`; 0 = no limit) are dropped,
/// which closes them.
fn take_idle(endpoint: &EndpointState, idle_timeout_ms: u64) -> Option<Pooled> {
    let mut idle = endpoint.idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle_timeout_ms > 0 {
        let now = crate::state::now_ms();
        idle.retain(|p| now.saturating_sub(p.idle_since_ms) < idle_timeout_ms);
    }
    while let Some(p) = idle.pop() {
        if p.sender.is_ready() {
            return Some(p);
        }
    }
    None
}

fn try_reserve_connection(state: &ClusterState, max: u32) -> bool {
    state
        .connections
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (max == 0 || c < max).then_some(c + 1)
        })
        .is_ok()
}

/// Releases a connection slot when the connection task ends.
struct ConnectionSlot {
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

async fn dial(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    h2: bool,
) -> Result<(UpstreamIo, ConnectionSlot), UpstreamError> {
    endpoint.connections.fetch_add(1, Ordering::AcqRel);
    let slot = ConnectionSlot {
        state: cluster.state.clone(),
        endpoint: endpoint.clone(),
    };
    let timeout = match cluster.model.pool.connect_timeout_ms {
        0 => DEFAULT_CONNECT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
        Err(_) => return Err(UpstreamError::Connect("connect timeout".into())),
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
    let io = match &cluster.tls {
        None => UpstreamIo::Plain(stream),
        Some(tls) => match tokio::time::timeout(timeout, tls.connect(stream, h2)).await {
            Ok(Ok(s)) => UpstreamIo::Tls(Box::new(s)),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => return Err(UpstreamError::Connect("TLS handshake timeout".into())),
        },
    };
    Ok((io, slot))
}

async fn connect_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
) -> Result<hyper::client::conn::http1::SendRequest<ProxyBody>, UpstreamError> {
    let (stream, slot) = match dial(cluster, endpoint, false).await {
        Ok(ok) => ok,
        Err(e) => return Err(e),
    };
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _slot = slot;
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

async fn send_h2(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, UpstreamError> {
    let existing = endpoint
        .h2
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|s| !s.is_closed())
        .cloned();
    let mut sender = match existing {
        Some(s) => s,
        None => {
            if !try_reserve_connection(&cluster.state, cluster.model.pool.max_connections) {
                cluster.state.overflows.fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::Overflow);
            }
            let (stream, slot) = dial(cluster, endpoint, true).await?;
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                let _slot = slot;
                let _ = conn.await;
            });
            *endpoint.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
            sender
        }
    };
    sender.ready().await.map_err(classify)?;
    sender.send_request(req).await.map_err(classify)
}

fn classify(e: hyper::Error) -> UpstreamError {
    use std::error::Error;
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("REFUSED_STREAM") || text.contains("refused stream") {
            return UpstreamError::Refused;
        }
        source = s.source();
    }
    UpstreamError::Reset(e.to_string())
}
