//! What proxies run: the compiled [`ProxyConfig`] — listeners, route tables, clusters
//! and endpoints — the contract between the control plane (or standalone compiler)
//! and the proxy.
//!
//! Nothing here knows Istio's YAML shapes: VirtualService and DestinationRule are
//! already flattened into Envoy-like routes and clusters, and security policies into
//! [`Security`] (settled scope, typed values). Durations are milliseconds.

mod cluster;
mod listener;
mod route;
pub mod security;

use serde::{Deserialize, Serialize};

pub use cluster::*;
pub use listener::*;
pub use route::*;
pub use security::Security;

/// Everything one proxy needs, as one immutable snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Increases with every change; shown by the admin endpoint.
    pub version: u64,
    /// Who this proxy is, for metric labels and source matching.
    pub node: Node,
    pub listeners: Vec<Listener>,
    pub route_tables: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
    /// mTLS mode, authorization policies and JWT rules for this proxy's workload.
    #[serde(default, skip_serializing_if = "Security::is_empty")]
    pub security: Security,
}

/// Which side of the mesh a proxy serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Sidecar,
    Gateway,
}

/// The workload a proxy belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub role: Role,
    pub workload: Workload,
}

/// A workload's identity as metrics and policies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Deployment (or pod owner) name; `unknown` when not known.
    pub name: String,
    pub namespace: String,
    /// `app` label (Istio's canonical service).
    pub app: String,
    /// `version` label (Istio's canonical revision).
    pub version: String,
    /// `spiffe://cluster.local/ns/NS/sa/SA`, or empty.
    pub principal: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ProxyConfig {
    /// True when the config carries private keys (TLS listeners or clusters).
    pub fn has_private_keys(&self) -> bool {
        self.listeners.iter().any(|l| l.tls.is_some())
            || self
                .clusters
                .iter()
                .any(|c| c.tls.as_ref().is_some_and(|t| t.client_key_pem.is_some()))
    }

    /// This config with every private key replaced by `[redacted]`, for showing
    /// (as Envoy's config_dump does).
    pub fn redacted(&self) -> ProxyConfig {
        let mut out = self.clone();
        for tls in out.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            for cert in &mut tls.certificates {
                cert.private_key_pem = "[redacted]".into();
            }
        }
        for tls in out.clusters.iter_mut().filter_map(|c| c.tls.as_mut()) {
            if tls.client_key_pem.is_some() {
                tls.client_key_pem = Some("[redacted]".into());
            }
        }
        out
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The route table named `name`.
    pub fn route_table(&self, name: &str) -> Option<&RouteTable> {
        self.route_tables.iter().find(|t| t.name == name)
    }

    /// Checks internal references: every listener's route table and every route's
    /// clusters exist. A config failing this is rejected (NACKed) as a whole.
    pub fn check(&self) -> Result<(), String> {
        for l in &self.listeners {
            if let Some(table) = &l.route_table
                && self.route_table(table).is_none()
            {
                return Err(format!(
                    "listener {} names missing route table {table}",
                    l.name
                ));
            }
            for t in l.capture.iter().flat_map(|c| c.targets.iter()) {
                if !self.listeners.iter().any(|o| o.name == t.listener) {
                    return Err(format!(
                        "capture listener {} names missing listener {}",
                        l.name, t.listener
                    ));
                }
            }
            for t in &l.tcp_routes {
                for w in &t.clusters {
                    if self.cluster(&w.cluster).is_none() {
                        return Err(format!(
                            "listener {} routes to missing cluster {}",
                            l.name, w.cluster
                        ));
                    }
                }
            }
        }
        for t in &self.route_tables {
            for vh in &t.virtual_hosts {
                for r in &vh.routes {
                    let mut names: Vec<&str> =
                        r.mirrors.iter().map(|m| m.cluster.as_str()).collect();
                    if let Action::Forward(f) = &r.action {
                        names.extend(f.clusters.iter().map(|w| w.cluster.as_str()));
                    }
                    for name in names {
                        if self.cluster(name).is_none() {
                            return Err(format!(
                                "route {} in {} names missing cluster {name}",
                                r.name, t.name
                            ));
                        }
                    }
                }
            }
        }
        self.security.check().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_every_private_key_and_nothing_else() {
        let mut config = ProxyConfig::default();
        assert!(!config.has_private_keys());
        config.listeners.push(Listener {
            tls: Some(TlsServer {
                certificates: vec![TlsCertificate {
                    sni_hosts: vec![],
                    cert_chain_pem: "CERT".into(),
                    private_key_pem: "SERVER KEY".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        config.clusters.push(Cluster {
            tls: Some(UpstreamTls {
                sni: "api.example".into(),
                client_cert_pem: Some("CLIENT CERT".into()),
                client_key_pem: Some("CLIENT KEY".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(config.has_private_keys());
        let shown = serde_json::to_string(&config.redacted()).expect("json");
        assert!(
            !shown.contains("SERVER KEY") && !shown.contains("CLIENT KEY"),
            "{shown}"
        );
        assert!(
            shown.contains("CERT")
                && shown.contains("CLIENT CERT")
                && shown.contains("api.example")
        );
    }
}
