//! Istio's standard metrics (istio_requests_total, istio_request_duration_milliseconds,
//! istio_request_bytes, istio_response_bytes and the istio_tcp_* family), kept in
//! per-thread shards so a request only touches an uncontended lock, and rendered in
//! Prometheus text format when scraped.
//!
//! Peer labels (source and destination workload, service, ...) are rendered once per
//! config into a label block; a request adds only its protocol, code and flags.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use trellis_model::Workload;

use crate::flags::Flags;

/// Istio's duration buckets, in milliseconds.
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's size buckets, in bytes.
const SIZE_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
    1000000000.0,
];

/// Request protocol label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Peer labels compared by identity: the same rendered block is shared by every
/// request of a config, so hashing the pointer is enough on the hot path.
#[derive(Clone)]
struct Peers(Arc<str>);

impl PartialEq for Peers {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Peers {}

impl std::hash::Hash for Peers {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(state);
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RequestKey {
    peers: Peers,
    protocol: Protocol,
    code: u16,
    grpc_status: Option<u8>,
    flags: Flags,
}

/// A request series key compared by label text, for rendering.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TextKey {
    peers: Arc<str>,
    protocol: Protocol,
    code: u16,
    grpc_status: Option<u8>,
    flags: Flags,
}

struct Histogram {
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(buckets: &[f64]) -> Self {
        Histogram {
            counts: vec![0; buckets.len()],
            sum: 0.0,
        }
    }

    fn observe(&mut self, buckets: &[f64], value: f64) {
        self.sum += value;
        if let Some(i) = buckets.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
    }

    fn merge(&mut self, other: &Histogram) {
        self.sum += other.sum;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
}

struct RequestSeries {
    total: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    fn new() -> Self {
        RequestSeries {
            total: 0,
            duration: Histogram::new(DURATION_BUCKETS),
            request_bytes: Histogram::new(SIZE_BUCKETS),
            response_bytes: Histogram::new(SIZE_BUCKETS),
        }
    }
}

#[derive(Default)]
struct TcpSeries {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

#[derive(Default)]
struct Shard {
    requests: HashMap<RequestKey, RequestSeries>,
    tcp: HashMap<(Arc<str>, Flags), TcpSeries>,
}

/// One finished HTTP request, as metrics see it.
pub struct RequestRecord {
    pub peers: Arc<str>,
    pub protocol: Protocol,
    pub code: u16,
    pub grpc_status: Option<u8>,
    pub flags: Flags,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// All metrics of one proxy.
#[derive(Default)]
pub struct Metrics {
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// Downstream TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Downstream TLS handshakes that failed or timed out.
    pub tls_handshake_errors: AtomicU64,
    /// Plaintext connections refused by a STRICT mTLS port.
    pub mtls_plaintext_refused: AtomicU64,
}

thread_local! {
    static SHARD: std::cell::RefCell<Option<(usize, Arc<Mutex<Shard>>)>> = const { std::cell::RefCell::new(None) };
}

impl Metrics {
    fn with_shard(&self, f: impl FnOnce(&mut Shard)) {
        let id = self as *const Metrics as usize;
        let shard = SHARD.with(|cell| {
            let mut cell = cell.borrow_mut();
            match &*cell {
                Some((owner, shard)) if *owner == id => shard.clone(),
                _ => {
                    let shard = Arc::new(Mutex::new(Shard::default()));
                    self.shards
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(shard.clone());
                    *cell = Some((id, shard.clone()));
                    shard
                }
            }
        });
        f(&mut shard.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records one HTTP request.
    pub fn record_request(&self, r: RequestRecord) {
        self.with_shard(|shard| {
            let key = RequestKey {
                peers: Peers(r.peers),
                protocol: r.protocol,
                code: r.code,
                grpc_status: r.grpc_status,
                flags: r.flags,
            };
            let series = shard.requests.entry(key).or_insert_with(RequestSeries::new);
            series.total += 1;
            series.duration.observe(DURATION_BUCKETS, r.duration_ms);
            series
                .request_bytes
                .observe(SIZE_BUCKETS, r.request_bytes as f64);
            series
                .response_bytes
                .observe(SIZE_BUCKETS, r.response_bytes as f64);
        });
    }

    /// Records a TCP connection opening.
    pub fn tcp_opened(&self, peers: &Arc<str>, flags: Flags) {
        self.with_shard(|shard| shard.tcp.entry((peers.clone(), flags)).or_default().opened += 1);
    }

    /// Records a TCP connection closing with the bytes it carried.
    pub fn tcp_closed(&self, peers: &Arc<str>, flags: Flags, sent: u64, received: u64) {
        self.with_shard(|shard| {
            let s = shard.tcp.entry((peers.clone(), flags)).or_default();
            s.closed += 1;
            s.sent += sent;
            s.received += received;
        });
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        // Series are merged by label text: configs replaced since may have rendered
        // the same labels into a new block.
        let mut requests: HashMap<TextKey, RequestSeries> = HashMap::new();
        let mut tcp: HashMap<(Arc<str>, Flags), TcpSeries> = HashMap::new();
        for shard in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in &shard.requests {
                let text = TextKey {
                    peers: k.peers.0.clone(),
                    protocol: k.protocol,
                    code: k.code,
                    grpc_status: k.grpc_status,
                    flags: k.flags,
                };
                let s = requests.entry(text).or_insert_with(RequestSeries::new);
                s.total += v.total;
                s.duration.merge(&v.duration);
                s.request_bytes.merge(&v.request_bytes);
                s.response_bytes.merge(&v.response_bytes);
            }
            for (k, v) in &shard.tcp {
                let s = tcp.entry(k.clone()).or_default();
                s.opened += v.opened;
                s.closed += v.closed;
                s.sent += v.sent;
                s.received += v.received;
            }
        }
        let mut keys: Vec<&TextKey> = requests.keys().collect();
        keys.sort_by(|a, b| (&*a.peers, a.code, a.flags).cmp(&(&*b.peers, b.code, b.flags)));
        let labels = |k: &TextKey| {
            let grpc = k.grpc_status.map_or("-".to_string(), |g| g.to_string());
            format!(
                "{}request_protocol=\"{}\",response_code=\"{}\",grpc_response_status=\"{grpc}\",response_flags=\"{}\"",
                k.peers,
                k.protocol.label(),
                k.code,
                k.flags
            )
        };
        let mut out = String::with_capacity(4096);
        out.push_str("# TYPE istio_requests_total counter\n");
        for k in &keys {
            let _ = writeln!(
                out,
                "istio_requests_total{{{}}} {}",
                labels(k),
                requests[*k].total
            );
        }
        type Pick = fn(&RequestSeries) -> &Histogram;
        let histograms: [(&str, &[f64], Pick); 3] = [
            (
                "istio_request_duration_milliseconds",
                DURATION_BUCKETS,
                |s| &s.duration,
            ),
            ("istio_request_bytes", SIZE_BUCKETS, |s| &s.request_bytes),
            ("istio_response_bytes", SIZE_BUCKETS, |s| &s.response_bytes),
        ];
        for (name, buckets, pick) in histograms {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for k in &keys {
                let series = &requests[*k];
                let h = pick(series);
                let l = labels(k);
                let mut cumulative = 0;
                for (b, c) in buckets.iter().zip(&h.counts) {
                    cumulative += c;
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", series.total);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{l}}} {}", series.total);
            }
        }
        let mut tcp_keys: Vec<&(Arc<str>, Flags)> = tcp.keys().collect();
        tcp_keys.sort();
        type Read = fn(&TcpSeries) -> u64;
        let tcp_metrics: [(&str, Read); 4] = [
            ("istio_tcp_connections_opened_total", |s| s.opened),
            ("istio_tcp_connections_closed_total", |s| s.closed),
            ("istio_tcp_sent_bytes_total", |s| s.sent),
            ("istio_tcp_received_bytes_total", |s| s.received),
        ];
        for (name, value) in tcp_metrics {
            let _ = writeln!(out, "# TYPE {name} counter");
            for k in &tcp_keys {
                let (peers, flags) = k;
                let _ = writeln!(
                    out,
                    "{name}{{{peers}response_flags=\"{flags}\"}} {}",
                    value(&tcp[*k])
                );
            }
        }
        let (ok, failed, refused) = (
            self.tls_handshakes.load(Ordering::Relaxed),
            self.tls_handshake_errors.load(Ordering::Relaxed),
            self.mtls_plaintext_refused.load(Ordering::Relaxed),
        );
        if ok + failed + refused > 0 {
            for (name, value) in [
                ("trellis_tls_handshakes_total", ok),
                ("trellis_tls_handshake_errors_total", failed),
                ("trellis_mtls_plaintext_refused_total", refused),
            ] {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
            }
        }
        out
    }
}

/// Who reports a metric: the caller's proxy (`source`) or the callee's (`destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

/// Renders the peer label block (ending with a comma) for one source/destination pair.
pub fn peer_labels(
    reporter: Reporter,
    source: &Workload,
    destination: &Workload,
    service: &str,
    security: &str,
) -> Arc<str> {
    let (service_name, service_namespace) = service_parts(service);
    let mut out = String::with_capacity(512);
    let reporter = match reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    let mut add = |k: &str, v: &str| {
        let v = if v.is_empty() { "unknown" } else { v };
        let _ = write!(out, "{k}=\"{}\",", escape(v));
    };
    add("reporter", reporter);
    add("source_workload", &source.name);
    add("source_workload_namespace", &source.namespace);
    add("source_principal", &source.principal);
    add("source_app", &source.app);
    add("source_version", &source.version);
    add("source_cluster", "Kubernetes");
    add("destination_workload", &destination.name);
    add("destination_workload_namespace", &destination.namespace);
    add("destination_principal", &destination.principal);
    add("destination_app", &destination.app);
    add("destination_version", &destination.version);
    add("destination_service", service);
    add("destination_service_name", service_name);
    add("destination_service_namespace", service_namespace);
    add("destination_cluster", "Kubernetes");
    add("connection_security_policy", security);
    Arc::from(out)
}

/// `reviews.default.svc.cluster.local` → (`reviews`, `default`); other hosts keep their name.
fn service_parts(service: &str) -> (&str, &str) {
    let mut parts = service.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(ns), Some("svc")) => (name, ns),
        _ => (service, "unknown"),
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_with_istio_labels_and_histograms() {
        let m = Metrics::default();
        let src = Workload {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            app: "productpage".into(),
            version: "v1".into(),
            ..Default::default()
        };
        let dst = Workload {
            name: "reviews-v2".into(),
            namespace: "default".into(),
            app: "reviews".into(),
            version: "v2".into(),
            ..Default::default()
        };
        let peers = peer_labels(
            Reporter::Source,
            &src,
            &dst,
            "reviews.default.svc.cluster.local",
            "unknown",
        );
        for code in [200, 200, 503] {
            m.record_request(RequestRecord {
                peers: peers.clone(),
                protocol: Protocol::Http,
                code,
                grpc_status: None,
                flags: if code == 503 {
                    Flags::UPSTREAM_OVERFLOW
                } else {
                    Flags::NONE
                },
                duration_ms: 3.0,
                request_bytes: 0,
                response_bytes: 120,
            });
        }
        let text = m.render();
        assert!(
            text.contains("destination_service_name=\"reviews\""),
            "{text}"
        );
        assert!(
            text.contains(
                "response_code=\"200\",grpc_response_status=\"-\",response_flags=\"-\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("response_flags=\"UO\"} 1"), "{text}");
        assert!(
            text.contains("istio_request_duration_milliseconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("le=\"5\"} 2"), "{text}");
    }
}
