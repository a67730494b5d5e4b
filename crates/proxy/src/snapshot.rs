//! A compiled, immutable view of one [`ProxyConfig`]: route tables indexed by domain,
//! regexes compiled, weighted picks and balancer tables built, metric labels rendered,
//! and each cluster joined to its long-lived health state. A request loads the
//! current snapshot once; a config swap replaces it atomically.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use trellis_model::{Action, Cluster, Direction, Listener, ProxyConfig, Route, Workload};

use crate::balance::Balancer;
use crate::http::RetryRt;
use crate::matcher::RequestMatcher;
use crate::metrics::{Reporter, peer_labels};
use crate::state::{ClusterState, EndpointState, Registry};

/// The compiled config.
pub struct Snapshot {
    pub config: Arc<ProxyConfig>,
    pub clusters: HashMap<String, Arc<ClusterRt>>,
    pub listeners: Vec<Arc<ListenerRt>>,
    /// The names the DNS server answers (capture mode).
    pub dns: crate::dns::DnsTable,
}

/// A listener with its direction's metric labels for requests that match no route.
pub struct ListenerRt {
    pub model: Listener,
    /// Its position in the snapshot's listeners (how connections find it again).
    pub slot: usize,
    pub table: Option<Arc<RouteTableRt>>,
    pub tcp_routes: Vec<TcpRouteRt>,
    /// Peer labels for requests that never reached a cluster (NR).
    pub unrouted_labels: Arc<str>,
    /// TLS terminated on this listener.
    pub tls: Option<Arc<crate::tls::TlsRt>>,
    /// The mesh's mutual TLS on an inbound listener (PeerAuthentication).
    pub mtls: trellis_model::security::MtlsMode,
    /// The policies enforced here (inbound and gateway listeners), when any apply.
    pub security: Option<Arc<crate::policy::CompiledSecurity>>,
    /// The port policies see (the workload's or the Gateway server's).
    pub port: u16,
    /// A capture listener's targets by original destination.
    pub capture: Option<crate::capture::CaptureRt>,
}

/// A TCP route with resolved clusters.
pub struct TcpRouteRt {
    /// TLS server names this route takes (exact or `*.domain`); empty takes any.
    pub sni: Vec<String>,
    pub pick: WeightedPick,
}

/// Weighted choice among clusters.
pub struct WeightedPick {
    /// (cluster, cumulative weight)
    pub choices: Vec<(Arc<ClusterRt>, u32)>,
    pub total: u32,
    /// Index into the model's weighted cluster list, for per-destination headers.
    pub model_index: Vec<usize>,
}

impl WeightedPick {
    /// Picks one cluster (and its index in the route's list).
    pub fn pick(&self) -> Option<(usize, &Arc<ClusterRt>)> {
        if self.choices.len() == 1 {
            return Some((self.model_index[0], &self.choices[0].0));
        }
        if self.total == 0 {
            return None;
        }
        let r = crate::rand::below(u64::from(self.total)) as u32;
        let i = self
            .choices
            .partition_point(|(_, cumulative)| *cumulative <= r);
        self.choices.get(i).map(|(c, _)| (self.model_index[i], c))
    }
}

/// Domains → virtual hosts.
pub struct RouteTableRt {
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
    pub vhosts: Vec<VirtualHostRt>,
}

impl RouteTableRt {
    /// The virtual host for an authority (`host` or `host:port`).
    #[cfg(test)]
    pub fn find(&self, authority: &str) -> Option<&VirtualHostRt> {
        self.find_index(authority).map(|i| &self.vhosts[i])
    }

    /// The position of the virtual host for an authority (`host` or `host:port`).
    pub fn find_index(&self, authority: &str) -> Option<usize> {
        let lower;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            &lower
        } else {
            authority
        };
        if let Some(i) = self.exact.get(authority) {
            return Some(*i);
        }
        let host = strip_port(authority);
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        for (suffix, i) in &self.suffixes {
            if host.ends_with(suffix.as_str()) || authority.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        self.any
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// One virtual host's routes.
pub struct VirtualHostRt {
    #[allow(dead_code)]
    pub name: String,
    pub routes: Vec<RouteRt>,
}

/// A compiled route.
pub struct RouteRt {
    pub model: Route,
    pub matchers: Vec<RequestMatcher>,
    pub pick: Option<WeightedPick>,
    pub mirrors: Vec<(Arc<ClusterRt>, f64)>,
    pub uri_regex: Option<(Regex, String)>,
    /// Compiled `corsPolicy.allowOrigins`.
    pub cors_origins: Vec<crate::matcher::Matcher>,
    pub retry: RetryRt,
    /// The route's timeout (none: no limit).
    pub timeout: Option<std::time::Duration>,
}

/// A compiled cluster joined to its state.
pub struct ClusterRt {
    pub model: Cluster,
    pub state: Arc<ClusterState>,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub balancer: Balancer,
    /// Peer labels per endpoint.
    pub labels: Vec<Arc<str>>,
    /// Peer labels when no endpoint was reached (UH, UO).
    pub service_labels: Arc<str>,
    /// TLS origination to the endpoints, if the DestinationRule asks for it.
    pub tls: Option<Arc<crate::upstream::origin::OriginTls>>,
    /// The mesh's mutual TLS to endpoints with `EndpointState::mesh`; none when the
    /// cluster has none or this proxy has no mesh identity.
    pub mesh_tls: Option<Arc<crate::upstream::mesh::MeshOrigin>>,
    /// An inbound cluster (this workload's own app): reported by the destination.
    pub inbound: bool,
    /// The workloads behind the endpoints, for labels made per peer.
    destinations: Vec<Workload>,
}

impl ClusterRt {
    /// The label block for a request to endpoint `index` from a mesh peer over mutual
    /// TLS: the source principal (and namespace) the certificate names.
    pub fn mtls_labels(&self, index: usize, peer: &crate::inbound::PeerIdentity) -> Arc<str> {
        let source = Workload {
            namespace: peer.id.namespace().to_string(),
            principal: peer.uri.clone(),
            ..Workload::default()
        };
        let destination = self.destinations.get(index).cloned().unwrap_or_default();
        peer_labels(
            Reporter::Destination,
            &source,
            &destination,
            &self.model.service,
            "mutual_tls",
        )
    }
}

impl Snapshot {
    /// Compiles `config`; an error here means the config is rejected as a whole.
    /// Compiles `config`; `identity` is the proxy's workload certificate, when it has
    /// a mesh identity.
    pub fn compile(
        config: ProxyConfig,
        registry: &Registry,
        identity: Option<&trellis_identity::CurrentCredentials>,
    ) -> Result<Self, String> {
        config.check()?;
        let node = &config.node.workload;
        let unknown = Workload::default();
        let mut clusters = HashMap::new();
        for c in &config.clusters {
            let state = registry.cluster(&c.name);
            let tls = match &c.tls {
                Some(t) => Some(Arc::new(
                    crate::upstream::origin::OriginTls::compile(t)
                        .map_err(|e| format!("cluster {}: TLS: {e}", c.name))?,
                )),
                None => None,
            };
            let tls_key = tls.as_ref().map_or(0, |t| t.key);
            let mesh_tls = match (&c.mesh_tls, identity) {
                (Some(m), Some(creds)) => Some(Arc::new(
                    crate::upstream::mesh::MeshOrigin::compile(m, creds)
                        .map_err(|e| format!("cluster {}: {e}", c.name))?,
                )),
                _ => None,
            };
            // Which endpoints get the mesh's mTLS: all under ISTIO_MUTUAL, those with a
            // sidecar under auto mTLS. ISTIO_MUTUAL without a mesh identity still
            // marks them, so connecting fails (UF) instead of going out in plaintext.
            let mesh_mode = c.mesh_tls.as_ref().map(|m| m.mode);
            let mut endpoints = Vec::new();
            let mut weights = Vec::new();
            let mut labels = Vec::new();
            let mut destinations = Vec::new();
            let mut addrs = Vec::new();
            // Outbound clusters are reported by the caller; inbound ones by this workload.
            let inbound = c.name.starts_with("inbound|");
            let (reporter, source) = if inbound {
                (Reporter::Destination, &unknown)
            } else {
                (Reporter::Source, node)
            };
            for e in &c.endpoints {
                let Some(addr) = e.address else { continue };
                let mesh = match mesh_mode {
                    Some(trellis_model::MeshTlsMode::Istio) => true,
                    Some(trellis_model::MeshTlsMode::Auto) => e.mtls && mesh_tls.is_some(),
                    None => false,
                };
                let key = match (mesh, &mesh_tls) {
                    (true, Some(m)) => m.key,
                    (true, None) => u64::MAX,
                    (false, _) => tls_key,
                };
                addrs.push((addr, key));
                endpoints.push(state.endpoint_with(addr, key, mesh));
                weights.push(e.weight.max(1));
                let destination = if inbound { node } else { &e.workload };
                destinations.push(destination.clone());
                // The destination reports plaintext as `none`; the source does not know.
                let security = if inbound { "none" } else { "unknown" };
                labels.push(peer_labels(
                    reporter,
                    source,
                    destination,
                    &c.service,
                    security,
                ));
            }
            state.retain(&addrs);
            let min_health = c.outlier.as_ref().map_or(0, |o| o.min_health_percent);
            let balancer = Balancer::build(&c.lb, &endpoints, &weights, min_health);
            let service_labels = peer_labels(
                reporter,
                source,
                if inbound { node } else { &unknown },
                &c.service,
                "unknown",
            );
            clusters.insert(
                c.name.clone(),
                Arc::new(ClusterRt {
                    model: c.clone(),
                    state,
                    endpoints,
                    balancer,
                    labels,
                    service_labels,
                    tls,
                    mesh_tls,
                    inbound,
                    destinations,
                }),
            );
        }
        let security = Arc::new(
            crate::policy::CompiledSecurity::compile(&config.security)
                .map_err(|e| format!("security: {e}"))?,
        );
        let enforces = !security.authz.is_empty() || !security.jwt.is_empty();
        let mut tables = HashMap::new();
        for t in &config.route_tables {
            tables.insert(t.name.clone(), Arc::new(compile_table(t, &clusters)?));
        }
        let reporter = |l: &Listener| {
            if l.direction == Direction::Inbound {
                Reporter::Destination
            } else {
                Reporter::Source
            }
        };
        let slots: HashMap<&str, usize> = config
            .listeners
            .iter()
            .enumerate()
            .map(|(slot, l)| (l.name.as_str(), slot))
            .collect();
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(slot, l)| {
                let tcp_routes = l
                    .tcp_routes
                    .iter()
                    .map(|r| {
                        Ok(TcpRouteRt {
                            sni: r.sni.clone(),
                            pick: weighted(&r.clusters, &clusters)?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let (src, dst) = match reporter(l) {
                    Reporter::Source => (node, &unknown),
                    Reporter::Destination => (&unknown, node),
                };
                let tls = l
                    .tls
                    .as_ref()
                    .map(|t| crate::tls::TlsRt::compile(t).map(Arc::new))
                    .transpose()
                    .map_err(|e| format!("listener {}: {e}", l.name))?;
                let port = l.port.or(l.bind.map(|b| b.port())).unwrap_or(0);
                let policed = matches!(l.direction, Direction::Inbound | Direction::Gateway);
                let capture = l
                    .capture
                    .as_ref()
                    .map(|c| crate::capture::CaptureRt::compile(c, &slots))
                    .transpose()
                    .map_err(|e| format!("listener {}: {e}", l.name))?;
                Ok(Arc::new(ListenerRt {
                    capture,
                    slot,
                    mtls: security.mtls.mode_for(port),
                    security: (policed && enforces).then(|| security.clone()),
                    port,
                    tls,
                    model: l.clone(),
                    table: l.route_table.as_ref().and_then(|n| tables.get(n).cloned()),
                    tcp_routes,
                    unrouted_labels: peer_labels(reporter(l), src, dst, "unknown", "unknown"),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dns = config
            .listeners
            .iter()
            .find_map(|l| l.capture.as_ref()?.dns.as_ref())
            .map(crate::dns::DnsTable::compile)
            .unwrap_or_default();
        Ok(Snapshot {
            config: Arc::new(config),
            clusters,
            listeners,
            dns,
        })
    }
}

fn weighted(
    list: &[trellis_model::WeightedCluster],
    clusters: &HashMap<String, Arc<ClusterRt>>,
) -> Result<WeightedPick, String> {
    let mut choices = Vec::new();
    let mut model_index = Vec::new();
    let mut total = 0u32;
    for (i, w) in list.iter().enumerate() {
        let cluster = clusters
            .get(&w.cluster)
            .ok_or_else(|| format!("missing cluster {}", w.cluster))?;
        // A single destination takes all traffic whatever its weight says.
        let weight = if list.len() == 1 { 1 } else { w.weight };
        if weight == 0 {
            continue;
        }
        total += weight;
        choices.push((cluster.clone(), total));
        model_index.push(i);
    }
    Ok(WeightedPick {
        choices,
        total,
        model_index,
    })
}

fn compile_table(
    t: &trellis_model::RouteTable,
    clusters: &HashMap<String, Arc<ClusterRt>>,
) -> Result<RouteTableRt, String> {
    let mut exact = HashMap::new();
    let mut suffixes = Vec::new();
    let mut any = None;
    let mut vhosts = Vec::new();
    for (i, vh) in t.virtual_hosts.iter().enumerate() {
        for d in &vh.domains {
            let d = d.to_ascii_lowercase();
            if d == "*" {
                any.get_or_insert(i);
            } else if let Some(suffix) = d.strip_prefix('*') {
                suffixes.push((suffix.to_string(), i));
            } else {
                exact.entry(d).or_insert(i);
            }
        }
        let routes = vh
            .routes
            .iter()
            .map(|r| {
                let matchers = r
                    .matches
                    .iter()
                    .map(RequestMatcher::compile)
                    .collect::<Result<Vec<_>, _>>()?;
                let (pick, uri_regex) = match &r.action {
                    Action::Forward(f) => {
                        let uri_regex =
                            match f.rewrite.as_ref().and_then(|rw| rw.uri_regex.as_ref()) {
                                Some((re, sub)) => Some((
                                    Regex::new(re)
                                        .map_err(|e| format!("rewrite regex `{re}`: {e}"))?,
                                    sub.clone(),
                                )),
                                None => None,
                            };
                        (Some(weighted(&f.clusters, clusters)?), uri_regex)
                    }
                    _ => (None, None),
                };
                let mirrors = r
                    .mirrors
                    .iter()
                    .filter_map(|m| clusters.get(&m.cluster).map(|c| (c.clone(), m.percent)))
                    .collect();
                let cors_origins = match &r.cors {
                    Some(c) => c
                        .allow_origins
                        .iter()
                        .map(crate::matcher::Matcher::compile)
                        .collect::<Result<Vec<_>, _>>()?,
                    None => Vec::new(),
                };
                Ok(RouteRt {
                    retry: RetryRt::compile(r.retry.as_ref()),
                    timeout: r
                        .timeout_ms
                        .filter(|ms| *ms > 0)
                        .map(std::time::Duration::from_millis),
                    model: r.clone(),
                    matchers,
                    pick,
                    mirrors,
                    uri_regex,
                    cors_origins,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        vhosts.push(VirtualHostRt {
            name: vh.name.clone(),
            routes,
        });
    }
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    Ok(RouteTableRt {
        exact,
        suffixes,
        any,
        vhosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::{RouteTable, VirtualHost};

    fn table(domains: &[&[&str]]) -> RouteTableRt {
        let t = RouteTable {
            name: "t".into(),
            virtual_hosts: domains
                .iter()
                .enumerate()
                .map(|(i, d)| VirtualHost {
                    name: format!("vh{i}"),
                    domains: d.iter().map(|s| s.to_string()).collect(),
                    routes: vec![],
                })
                .collect(),
        };
        compile_table(&t, &HashMap::new()).expect("compiles")
    }

    #[test]
    fn domains_match_exact_then_port_then_wildcard_then_any() {
        let t = table(&[
            &["reviews", "reviews.default.svc.cluster.local"],
            &["*.example.com"],
            &["*"],
        ]);
        assert_eq!(t.find("reviews:9080").map(|v| v.name.as_str()), Some("vh0"));
        assert_eq!(t.find("Reviews").map(|v| v.name.as_str()), Some("vh0"));
        assert_eq!(
            t.find("app.example.com:80").map(|v| v.name.as_str()),
            Some("vh1")
        );
        assert_eq!(t.find("other").map(|v| v.name.as_str()), Some("vh2"));
    }
}
