//! Clusters: a named set of endpoints with how to pick one (load balancing), how many
//! connections and requests to allow (circuit breaking), and when to stop sending to
//! a failing endpoint (outlier detection).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Workload;

/// An upstream service (or one subset of it) on one port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Istio-style: `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    /// The service host name, for metrics (`destination_service`).
    pub service: String,
    pub protocol: UpstreamProtocol,
    pub lb: LoadBalancer,
    pub pool: ConnectionPool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierDetection>,
    pub endpoints: Vec<Endpoint>,
    /// TLS to the upstream (DestinationRule `trafficPolicy.tls` SIMPLE or MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// The mesh's own mutual TLS (ISTIO_MUTUAL, or automatic mTLS to endpoints that
    /// run a sidecar); none: plaintext unless `tls` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_tls: Option<MeshTls>,
}

/// Mutual TLS with the proxy's own workload certificate, the server checked by its
/// SPIFFE identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshTls {
    pub mode: MeshTlsMode,
    /// The SPIFFE ids (`spiffe://TD/ns/NS/sa/SA`) a server may present: the service
    /// accounts of the destination's workloads, or the DestinationRule's
    /// `subjectAltNames`. Empty: any identity of the mesh's trust domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Server name sent in the ClientHello (Istio's `outbound_.PORT_.SUBSET_.HOST`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
}

/// When mesh mutual TLS is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshTlsMode {
    /// To endpoints that have a sidecar (`Endpoint::mtls`); plaintext to the rest
    /// (Istio's auto mTLS).
    #[default]
    Auto,
    /// To every endpoint (DestinationRule `ISTIO_MUTUAL`).
    Istio,
}

/// How the proxy originates TLS to a cluster's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// Server name sent in the ClientHello and checked against the certificate.
    pub sni: String,
    /// Roots to trust (PEM); none means the system's CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// MUTUAL: the certificate chain and key this proxy presents (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// DNS names any one of which the server certificate must carry (instead of `sni`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Accept any server certificate (DestinationRule `insecureSkipVerify`).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Why the settings cannot be used (a missing file or Secret): connections to the
    /// cluster then fail with this reason rather than going out in plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// How to speak to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// Whatever the downstream spoke.
    #[default]
    Auto,
    Http1,
    Http2,
    Tcp,
}

/// One address of a cluster, with the workload behind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: Option<SocketAddr>,
    /// Weight for load balancing (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub workload: Workload,
    /// The endpoint runs a sidecar that accepts mesh mutual TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mtls: bool,
}

fn one() -> u32 {
    1
}

/// How an endpoint is picked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// Power of two choices over outstanding requests.
    LeastRequest,
    Random,
    /// Send to the address the client asked for.
    Passthrough,
    ConsistentHash(HashPolicy),
}

/// Affinity: requests with the same key go to the same endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashPolicy {
    pub key: HashKey,
    pub algorithm: HashAlgorithm,
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    Header(String),
    /// A cookie; when absent and `ttl_secs` is set, the proxy mints one.
    Cookie {
        name: String,
        path: Option<String>,
        ttl_secs: Option<u64>,
    },
    #[default]
    SourceIp,
    QueryParameter(String),
}

/// The consistent hashing scheme.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashAlgorithm {
    #[default]
    RingHash,
    Maglev,
}

/// Circuit-breaking limits (Envoy's thresholds). Zero means "no limit set".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    /// HTTP/1 requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight to the cluster.
    pub max_requests: u32,
    pub max_requests_per_connection: u32,
    /// Retries in flight to the cluster.
    pub max_retries: u32,
    pub idle_timeout_ms: u64,
    /// Speak HTTP/2 upstream even when the downstream spoke HTTP/1.1.
    pub h2_upgrade: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// Kernel keepalive probes on upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    pub probes: u32,
    pub time_ms: u64,
    pub interval_ms: u64,
}

/// Passive health checking: eject endpoints that keep failing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 0 disables this trigger.
    pub consecutive_5xx: u32,
    /// 0 disables this trigger (502, 503, 504 and connect failures).
    pub consecutive_gateway_errors: u32,
    pub interval_ms: u64,
    /// Multiplied by the number of times the endpoint has been ejected.
    pub base_ejection_ms: u64,
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejection stops.
    pub min_health_percent: u32,
}
