//! Health state that outlives config swaps: per cluster (circuit-breaker counters,
//! round-robin cursor) and per endpoint (connections, in-flight requests, outlier
//! ejection). Keyed by cluster name and endpoint address, so a new config that keeps
//! a cluster keeps its state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;
use trellis_model::OutlierDetection;

use crate::body::ProxyBody;

/// Milliseconds since the process started (a cheap monotonic clock). It is tokio's
/// clock, so tests can pause and advance it.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    Instant::now()
        .saturating_duration_since(*START.get_or_init(Instant::now))
        .as_millis() as u64
}

/// Per-cluster state.
#[derive(Default)]
pub struct ClusterState {
    /// Keyed by address and the fingerprint of the TLS settings connections to it are
    /// made with (0 for plaintext), so pooled connections never outlive their settings.
    endpoints: Mutex<HashMap<(SocketAddr, u64), Arc<EndpointState>>>,
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub requests: AtomicU32,
    pub retries: AtomicU32,
    pub round_robin: AtomicUsize,
    /// Woken when a connection is released, for requests waiting on the pool.
    pub released: Notify,
    /// Counters shown on the admin endpoint.
    pub overflows: AtomicU64,
    pub ejections_total: AtomicU64,
}

impl ClusterState {
    /// The state of the plaintext endpoint at `addr`, created on first use.
    #[cfg(test)]
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointState> {
        self.endpoint_with(addr, 0, false)
    }

    /// The state of the endpoint at `addr` reached with TLS settings `tls` (their
    /// fingerprint; 0 for plaintext; `mesh`: the mesh's mutual TLS), created on
    /// first use. The fingerprint tells mesh settings from others, so `mesh` never
    /// differs for one key.
    pub fn endpoint_with(&self, addr: SocketAddr, tls: u64, mesh: bool) -> Arc<EndpointState> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((addr, tls))
            .or_insert_with(|| Arc::new(EndpointState::new(addr, mesh)))
            .clone()
    }

    /// Forgets endpoints no longer in `keep`.
    pub fn retain(&self, keep: &[(SocketAddr, u64)]) {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|key, _| keep.contains(key));
    }
}

/// An idle HTTP/1.1 connection and how many requests it has carried.
pub struct Pooled {
    pub sender: hyper::client::conn::http1::SendRequest<ProxyBody>,
    pub uses: u32,
    /// When it was returned to the pool (`now_ms`), for the idle timeout.
    pub idle_since_ms: u64,
}

/// Per-endpoint state.
pub struct EndpointState {
    pub addr: SocketAddr,
    /// Connections to it use the mesh's mutual TLS.
    pub mesh: bool,
    /// Requests in flight (for least-request balancing).
    pub active: AtomicU32,
    pub connections: AtomicU32,
    /// Idle HTTP/1.1 connections ready for a request.
    pub idle: Mutex<Vec<Pooled>>,
    /// The shared HTTP/2 connection, if one is open.
    pub h2: Mutex<Option<hyper::client::conn::http2::SendRequest<ProxyBody>>>,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejected_until_ms: AtomicU64,
    pub times_ejected: AtomicU32,
    pub requests_total: AtomicU64,
    pub errors_total: AtomicU64,
}

impl EndpointState {
    fn new(addr: SocketAddr, mesh: bool) -> Self {
        EndpointState {
            addr,
            mesh,
            active: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            requests_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
        }
    }

    /// True while the endpoint is ejected by outlier detection.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Milliseconds of ejection left (0 when healthy).
    pub fn ejected_for_ms(&self) -> u64 {
        self.ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms())
    }
}

/// What an upstream attempt ended with, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500 (or a 5xx that is not the upstream's fault is still a 5xx).
    Status(u16),
    /// Connecting, or the connection, failed: counts as a gateway error.
    ConnectFailure,
    /// A TCP connection was established (a success for outlier detection).
    Connected,
}

/// The longest an ejection may last, whatever the count (Envoy's default cap).
const MAX_EJECTION_MS: u64 = 300_000;

/// Records an outcome for `endpoint` of a cluster whose endpoints are `all`, ejecting
/// it when its consecutive failures reach the configured threshold.
pub fn record_outcome(
    cluster: &ClusterState,
    all: &[Arc<EndpointState>],
    endpoint: &EndpointState,
    policy: Option<&OutlierDetection>,
    outcome: Outcome,
) {
    endpoint.requests_total.fetch_add(1, Ordering::Relaxed);
    let (is_5xx, is_gateway) = match outcome {
        Outcome::Status(code) => (code >= 500, matches!(code, 502..=504)),
        Outcome::ConnectFailure => (true, true),
        Outcome::Connected => (false, false),
    };
    if !is_5xx {
        endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
        endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
        return;
    }
    endpoint.errors_total.fetch_add(1, Ordering::Relaxed);
    let Some(policy) = policy else { return };
    let n5xx = endpoint.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
    let ngw = if is_gateway {
        endpoint.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
        0
    };
    let tripped = (policy.consecutive_5xx > 0 && n5xx >= policy.consecutive_5xx)
        || (policy.consecutive_gateway_errors > 0 && ngw >= policy.consecutive_gateway_errors);
    if !tripped || endpoint.is_ejected() {
        return;
    }
    let ejected = all.iter().filter(|e| e.is_ejected()).count();
    let total = all.len().max(1);
    // Envoy ejects at least one host even when the percentage rounds below one.
    let allowed = (total * policy.max_ejection_percent as usize / 100).max(1);
    if ejected >= allowed {
        return;
    }
    let times = endpoint.times_ejected.fetch_add(1, Ordering::Relaxed) as u64 + 1;
    let duration = policy
        .base_ejection_ms
        .saturating_mul(times)
        .min(MAX_EJECTION_MS.max(policy.base_ejection_ms));
    endpoint
        .ejected_until_ms
        .store(now_ms() + duration.max(1), Ordering::Relaxed);
    endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
    endpoint.consecutive_gateway.store(0, Ordering::Relaxed);
    cluster.ejections_total.fetch_add(1, Ordering::Relaxed);
    tracing::info!(endpoint = %endpoint.addr, ms = duration, times, "outlier detection ejected endpoint");
}

/// All cluster states, by cluster name; entries die with the last config that used them.
#[derive(Default)]
pub struct Registry {
    clusters: Mutex<HashMap<String, Weak<ClusterState>>>,
}

impl Registry {
    /// The state for cluster `name`, reused when a live config already has it.
    pub fn cluster(&self, name: &str) -> Arc<ClusterState> {
        let mut map = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(ClusterState::default());
        map.insert(name.to_string(), Arc::downgrade(&fresh));
        map.retain(|_, w| w.strong_count() > 0);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            interval_ms: 1000,
            base_ejection_ms: 50,
            max_ejection_percent: 50,
            min_health_percent: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_errors_eject_and_the_ejection_ends() {
        let cluster = ClusterState::default();
        let a = cluster.endpoint("127.0.0.1:1".parse().expect("addr"));
        let b = cluster.endpoint("127.0.0.1:2".parse().expect("addr"));
        let all = vec![a.clone(), b.clone()];
        for _ in 0..2 {
            record_outcome(&cluster, &all, &a, Some(&policy()), Outcome::Status(500));
        }
        assert!(!a.is_ejected());
        record_outcome(&cluster, &all, &a, Some(&policy()), Outcome::Status(500));
        assert!(a.is_ejected());
        // 50% of 2 endpoints: the second may not be ejected too.
        for _ in 0..3 {
            record_outcome(&cluster, &all, &b, Some(&policy()), Outcome::ConnectFailure);
        }
        assert!(!b.is_ejected());
        tokio::time::advance(std::time::Duration::from_millis(49)).await;
        assert!(
            a.is_ejected(),
            "still ejected before the base ejection time"
        );
        tokio::time::advance(std::time::Duration::from_millis(2)).await;
        assert!(!a.is_ejected());
    }

    #[test]
    fn success_resets_the_count() {
        let cluster = ClusterState::default();
        let a = cluster.endpoint("127.0.0.1:1".parse().expect("addr"));
        let all = vec![a.clone()];
        for code in [500, 500, 200, 500, 500] {
            record_outcome(&cluster, &all, &a, Some(&policy()), Outcome::Status(code));
        }
        assert!(!a.is_ejected());
    }

    #[test]
    fn ejection_time_grows_with_each_ejection() {
        let cluster = ClusterState::default();
        let a = cluster.endpoint("127.0.0.1:1".parse().expect("addr"));
        let all = vec![a.clone()];
        let mut p = policy();
        p.max_ejection_percent = 100;
        p.base_ejection_ms = 1000;
        for _ in 0..3 {
            record_outcome(&cluster, &all, &a, Some(&p), Outcome::Status(503));
        }
        let first = a.ejected_for_ms();
        a.ejected_until_ms.store(0, Ordering::Relaxed);
        for _ in 0..3 {
            record_outcome(&cluster, &all, &a, Some(&p), Outcome::Status(503));
        }
        assert!(
            a.ejected_for_ms() > first + 500,
            "{first} then {}",
            a.ejected_for_ms()
        );
    }
}
