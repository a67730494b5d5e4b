//! Listeners: where a proxy accepts connections and what it does with them.

use std::net::SocketAddr;

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
