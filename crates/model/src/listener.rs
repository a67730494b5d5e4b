//! Listeners: where a proxy accepts connections and what it does with them.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::route::WeightedCluster;

/// Which way traffic flows through a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the local app out to the mesh.
    #[default]
    Outbound,
    /// From the mesh into the local app.
    Inbound,
    /// From outside the mesh into it.
    Gateway,
}

/// How a listener reads its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge), told apart by the first bytes.
    #[default]
    Http,
    /// Opaque TCP.
    Tcp,
    /// HTTP when the first bytes look like HTTP, TCP otherwise.
    Auto,
}

/// One listening socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    pub bind: Option<SocketAddr>,
    pub direction: Direction,
    pub protocol: ListenerProtocol,
    /// The HTTP route table, for HTTP listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<String>,
    /// TCP routes, first match wins, for TCP listeners (or non-HTTP bytes on Auto).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    /// TLS terminated here (HTTPS gateway servers); plain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsServer>,
    /// The port as the mesh names it (a Gateway server's port, an inbound listener's
    /// workload port), which policies match on; the bound port may differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A capture listener (traffic redirected here by iptables): each connection is
    /// served by the listener its original destination names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
}

/// What a capture listener does with a connection, by the address the client
/// meant to reach (`SO_ORIGINAL_DST`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    /// Original destinations and the (unbound) listener that serves each; an exact
    /// address is tried before a port-only target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<CaptureTarget>,
    /// Destinations no target names: passed on to the original destination as
    /// opaque TCP (Istio's passthrough: `ALLOW_ANY`, and inbound ports the mesh does
    /// not know), or closed (`REGISTRY_ONLY`).
    pub passthrough: bool,
    /// Answers DNS for the mesh's names (the app's queries redirected here by
    /// `trellis proxy init --redirect-dns`); other names go to the upstream resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// The proxy's DNS server: where it listens (UDP) and the names it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    pub bind: SocketAddr,
    /// Lowercase, without a trailing dot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<DnsName>,
}

/// One name and its addresses (A and AAAA records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsName {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// One original destination a capture listener knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTarget {
    /// The address connected to (a service's cluster IP); none matches any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The listener, by name, that serves these connections.
    pub listener: String,
}

/// How a listener terminates TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsServer {
    pub mode: TlsMode,
    /// Picked by the client's SNI; the first is the default when no name matches.
    pub certificates: Vec<TlsCertificate>,
    /// Protocols offered in ALPN, in order of preference (`h2`, `http/1.1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// Roots that client certificates must chain to (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_pem: Option<String>,
}

/// Whether the client must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Server certificate only.
    #[default]
    Simple,
    /// The client must present a certificate signed by `client_ca_pem`.
    Mutual,
}

/// A certificate chain and its key, for the server names it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// Exact names or `*.example.com` wildcards; empty or `*` serves any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// PEM, leaf first.
    pub cert_chain_pem: String,
    /// PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

/// Where opaque TCP goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    pub name: String,
    /// TLS server names this route takes (TLS routes); empty takes any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
    pub clusters: Vec<WeightedCluster>,
}
