//! Connection pools per endpoint: idle HTTP/1.1 connections (a request takes one, or
//! waits for one under the cluster's pending-request limit) and one shared HTTP/2
//! connection. New connections come from [`super::connect`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::connect::{self, Alpn, ConnectionSlot};
use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::snapshot::ClusterRt;
use crate::state::{EndpointState, Pooled};

/// How long a request may wait for a pooled connection when the pool is full.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Sends `req` over HTTP/1.1: on an idle pooled connection, else a new one. A pooled
/// connection that turns out closed before the request was written is not the
/// request's failure: it is sent again on a fresh connection.
pub async fn send_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, ProxyError> {
    let (mut sender, uses, pooled) = acquire_h1(cluster, endpoint).await?;
    let response = match sender.try_send_request(req).await {
        Ok(response) => response,
        Err(mut e) => match e.take_message() {
            Some(req) if pooled => {
                let (fresh, _) = new_h1(cluster, endpoint).await?;
                sender = fresh;
                sender
                    .send_request(req)
                    .await
                    .map_err(ProxyError::from_upstream)?
            }
            _ => return Err(ProxyError::from_upstream(e.into_error())),
        },
    };
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

/// A connection to send on, how many requests it carried, and whether it was pooled.
async fn acquire_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
) -> Result<(http1::SendRequest<ProxyBody>, u32, bool), ProxyError> {
    let state = &cluster.state;
    let deadline = tokio::time::Instant::now() + MAX_QUEUE_WAIT;
    let mut queued = false;
    let result = loop {
        if let Some(p) = take_idle(endpoint, cluster.model.pool.idle_timeout_ms) {
            break Ok((p.sender, p.uses, true));
        }
        if let Some(slot) = connect::reserve(cluster, endpoint) {
            break handshake_h1(cluster, endpoint, slot)
                .await
                .map(|s| (s, 0, false));
        }
        if !queued {
            let max_pending = cluster.model.pool.max_pending_requests;
            let pending = state.pending.fetch_add(1, Ordering::AcqRel);
            if max_pending > 0 && pending >= max_pending {
                state.pending.fetch_sub(1, Ordering::AcqRel);
                state.overflows.fetch_add(1, Ordering::Relaxed);
                return Err(ProxyError::new(ErrorKind::Overflow));
            }
            queued = true;
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(ProxyError::new(ErrorKind::Overflow));
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), state.released.notified()).await;
    };
    if queued {
        state.pending.fetch_sub(1, Ordering::AcqRel);
    }
    result
}

/// A new connection, bypassing the idle list (used once a pooled one proved dead;
/// the dead one's slot is already released).
async fn new_h1(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
) -> Result<(http1::SendRequest<ProxyBody>, u32), ProxyError> {
    let slot = connect::reserve(cluster, endpoint).ok_or_else(|| {
        cluster.state.overflows.fetch_add(1, Ordering::Relaxed);
        ProxyError::new(ErrorKind::Overflow)
    })?;
    Ok((handshake_h1(cluster, endpoint, slot).await?, 0))
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

async fn handshake_h1(
    cluster: &ClusterRt,
    endpoint: &EndpointState,
    slot: ConnectionSlot,
) -> Result<http1::SendRequest<ProxyBody>, ProxyError> {
    let io = connect::connect(cluster, endpoint, Alpn::Http1).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::with(ErrorKind::ConnectFailure, e))?;
    tokio::spawn(async move {
        let _slot = slot;
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Sends `req` over the endpoint's shared HTTP/2 connection, opening it if needed.
pub async fn send_h2(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, ProxyError> {
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
            let Some(slot) = connect::reserve(cluster, endpoint) else {
                cluster.state.overflows.fetch_add(1, Ordering::Relaxed);
                return Err(ProxyError::new(ErrorKind::Overflow));
            };
            let sender = handshake_h2(cluster, endpoint, slot).await?;
            *endpoint.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
            sender
        }
    };
    sender.ready().await.map_err(ProxyError::from_upstream)?;
    sender
        .send_request(req)
        .await
        .map_err(ProxyError::from_upstream)
}

async fn handshake_h2(
    cluster: &ClusterRt,
    endpoint: &EndpointState,
    slot: ConnectionSlot,
) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
    let io = connect::connect(cluster, endpoint, Alpn::Http2).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::with(ErrorKind::ConnectFailure, e))?;
    tokio::spawn(async move {
        let _slot = slot;
        let _ = conn.await;
    });
    Ok(sender)
}
