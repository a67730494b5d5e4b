//! The mesh as compilation sees it: services (Kubernetes Services and ServiceEntries)
//! with their ports, workloads (Pods with addresses, WorkloadEntries, runner-provided
//! workloads) with their labels, and the Istio resources that shape traffic.

use std::collections::BTreeMap;
use std::net::IpAddr;

use std::sync::Arc;

use trellis_api::kube::Secret;
use trellis_api::networking::{
    DestinationRule, Gateway, Location, Protocol, Sidecar, VirtualService,
};
use trellis_api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use trellis_api::values::IntOrString;
use trellis_api::{Resource, Spec};

/// The cluster-local DNS suffix.
pub const DOMAIN: &str = "svc.cluster.local";
/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A service: a host name with ports, backed by the workloads its selector matches
/// or by listed endpoints.
#[derive(Debug, Clone)]
pub struct Service {
    /// Fully qualified: `reviews.default.svc.cluster.local`, or a ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub selector: Option<BTreeMap<String, String>>,
    /// Listed endpoints (ServiceEntry `endpoints`; a selector-less Service's
    /// EndpointSlices).
    pub endpoints: Vec<Workload>,
    pub external: bool,
    /// Namespaces that may see this service (`exportTo`); empty means all.
    pub export_to: Vec<String>,
    /// Virtual IPs apps connect to (a Service's cluster IPs, a ServiceEntry's
    /// `addresses`), which capture mode recognises as this service.
    pub addresses: Vec<IpAddr>,
}

/// One port of a service.
#[derive(Debug, Clone)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    /// Where the workload listens: a number, or a container port name.
    pub target: IntOrString,
}

impl ServicePort {
    /// HTTP-family ports get HTTP routing; the rest are TCP.
    pub fn is_http(&self) -> bool {
        self.protocol.is_http() || self.protocol == Protocol::Unsupported
    }
}

/// A running instance: a Pod, a WorkloadEntry, or a process of `trellis up`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Deployment (owner) name, or the pod name.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub address: Option<IpAddr>,
    /// Named ports (container ports, or WorkloadEntry `ports` keyed by service port name).
    pub ports: BTreeMap<String, u16>,
    pub service_account: String,
    /// It runs a sidecar, so it takes mesh mutual TLS: an injected Pod, a workload
    /// labelled `security.istio.io/tlsMode: istio`, or a local pod with its sidecar.
    pub sidecar: bool,
}

/// Istio's label for workloads that accept mesh mutual TLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Istio's annotation on a Pod its injector gave a sidecar.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

fn labelled_istio_tls(labels: &BTreeMap<String, String>) -> bool {
    labels.get(TLS_MODE_LABEL).is_some_and(|v| v == "istio")
}

/// Everything compilation reads, indexed once.
#[derive(Debug, Default)]
pub struct Mesh {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
    pub virtual_services: Vec<(Resource, VirtualService)>,
    pub destination_rules: Vec<(Resource, DestinationRule)>,
    pub gateways: Vec<(Resource, Gateway)>,
    pub sidecars: Vec<(Resource, Sidecar)>,
    /// Secrets, for gateway TLS certificates (`credentialName`).
    pub secrets: Vec<(Resource, Secret)>,
    /// The SPIFFE trust domain (MeshConfig `trustDomain`).
    pub trust_domain: String,
    /// MeshConfig `outboundTrafficPolicy.mode`: what captured connections to
    /// destinations the mesh does not know get (a Sidecar resource may override it).
    pub outbound_policy: OutboundPolicy,
    /// Security policies, in Istio's order: oldest first (creationTimestamp, name,
    /// namespace), as its precedence rules read them.
    pub peer_authentications: Vec<(Resource, Arc<PeerAuthentication>)>,
    pub authorization_policies: Vec<(Resource, Arc<AuthorizationPolicy>)>,
    pub request_authentications: Vec<(Resource, Arc<RequestAuthentication>)>,
    /// Lookups by host and label, built by [`Mesh::new`] and [`Mesh::reindex`].
    index: Index,
}

/// Istio's `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Unknown destinations are reached directly (Istio's default).
    #[default]
    AllowAny,
    /// Only destinations in the service registry are reached.
    RegistryOnly,
}

/// Lookup tables, so compiling one proxy is linear in what it sees rather than in
/// services × workloads (5,000 services with 20,000 endpoints compile in milliseconds).
#[derive(Debug, Default)]
struct Index {
    service_by_host: std::collections::HashMap<String, usize>,
    /// `(label, value)` → workloads carrying it.
    workloads_by_label: std::collections::HashMap<(String, String), Vec<usize>>,
    /// How many workloads were indexed: when `workloads` has grown since, lookups
    /// fall back to a scan rather than miss the new ones.
    workloads_indexed: usize,
    /// Fully qualified exact host → DestinationRules / VirtualServices naming it, and
    /// those with wildcard hosts, each in resource order.
    drs_by_host: std::collections::HashMap<String, Vec<usize>>,
    drs_wildcard: Vec<usize>,
    vss_by_host: std::collections::HashMap<String, Vec<usize>>,
    vss_wildcard: Vec<usize>,
    /// How many DestinationRules and VirtualServices were indexed.
    drs_indexed: usize,
    vss_indexed: usize,
}

/// The distinct IP addresses among `texts` (`None` of a headless Service and CIDR
/// ranges of a ServiceEntry are not addresses one connects to).
fn virtual_ips<'a>(texts: impl Iterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in texts.filter_map(|t| t.parse::<IpAddr>().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// `reviews` seen from namespace `default` → `reviews.default.svc.cluster.local`.
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('*') || host.ends_with(".cluster.local") {
        return host.to_string();
    }
    if !host.contains('.') {
        format!("{host}.{namespace}.{DOMAIN}")
    } else if host.ends_with(".svc") {
        format!("{host}.cluster.local")
    } else {
        host.to_string()
    }
}

/// True when `pattern` (which may start with `*`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => false,
    }
}

impl Mesh {
    /// Indexes `resources`; `extra` are workloads known from elsewhere (a local runner).
    pub fn new(resources: &[Resource], extra: Vec<Workload>) -> Mesh {
        let mut mesh = Mesh {
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            ..Mesh::default()
        };
        let ns_of = |r: &Resource| r.meta.namespace_or_default().to_string();
        for r in resources {
            match &r.spec {
                Spec::Service(s) => {
                    let ns = ns_of(r);
                    let ports = s
                        .spec
                        .ports
                        .iter()
                        .map(|p| {
                            let name = p.name.clone().unwrap_or_default();
                            let protocol = p
                                .app_protocol
                                .as_deref()
                                .map(Protocol::parse)
                                .filter(|p| *p != Protocol::Unsupported)
                                .unwrap_or_else(|| protocol_from_name(&name));
                            ServicePort {
                                number: p.port.clamp(0, 65535) as u16,
                                name,
                                protocol,
                                target: p.target(),
                            }
                        })
                        .collect();
                    mesh.services.push(Service {
                        hostname: format!("{}.{ns}.{DOMAIN}", r.meta.name),
                        namespace: ns,
                        ports,
                        selector: (!s.spec.selector.is_empty()).then(|| s.spec.selector.clone()),
                        endpoints: Vec::new(),
                        external: false,
                        addresses: virtual_ips(
                            s.spec.cluster_ip.iter().chain(s.spec.cluster_ips.iter()),
                        ),
                        export_to: r
                            .meta
                            .annotations
                            .get("networking.istio.io/exportTo")
                            .map(|v| {
                                v.split(',')
                                    .map(|s| s.trim().to_string())
                                    .filter(|s| !s.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Spec::ServiceEntry(se) => {
                    let ns = ns_of(r);
                    let ports: Vec<ServicePort> = se
                        .ports
                        .iter()
                        .map(|p| ServicePort {
                            number: p.number.min(65535) as u16,
                            name: p.name.clone(),
                            protocol: Protocol::parse(&p.protocol),
                            target: IntOrString::Int(i64::from(if p.target_port > 0 {
                                p.target_port
                            } else {
                                p.number
                            })),
                        })
                        .collect();
                    let endpoints: Vec<Workload> = se
                        .endpoints
                        .iter()
                        .flatten()
                        .map(|e| Workload {
                            name: r.meta.name.clone(),
                            namespace: ns.clone(),
                            labels: e.labels.clone(),
                            address: e.address.parse().ok(),
                            ports: e
                                .ports
                                .iter()
                                .map(|(k, v)| (k.clone(), (*v).min(65535) as u16))
                                .collect(),
                            service_account: e.service_account.clone(),
                            sidecar: labelled_istio_tls(&e.labels),
                        })
                        .collect();
                    for host in &se.hosts {
                        mesh.services.push(Service {
                            hostname: host.clone(),
                            namespace: ns.clone(),
                            ports: ports.clone(),
                            selector: se.workload_selector.as_ref().map(|s| s.labels.clone()),
                            endpoints: endpoints.clone(),
                            external: se.location == Some(Location::MeshExternal),
                            export_to: se.export_to.clone(),
                            addresses: virtual_ips(se.addresses.iter()),
                        });
                    }
                }
                Spec::Pod(p) => {
                    let address = p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse().ok());
                    if address.is_some() {
                        mesh.workloads.push(Workload {
                            name: r.meta.name.clone(),
                            namespace: ns_of(r),
                            labels: r.meta.labels.clone(),
                            address,
                            ports: p
                                .spec
                                .all_containers()
                                .flat_map(|c| c.ports.iter())
                                .filter_map(|cp| {
                                    Some((
                                        cp.name.clone()?,
                                        cp.container_port.clamp(0, 65535) as u16,
                                    ))
                                })
                                .collect(),
                            service_account: p.spec.service_account().to_string(),
                            sidecar: r.meta.annotations.contains_key(SIDECAR_STATUS_ANNOTATION)
                                || labelled_istio_tls(&r.meta.labels),
                        });
                    }
                }
                Spec::WorkloadEntry(w) => mesh.workloads.push(Workload {
                    name: r.meta.name.clone(),
                    namespace: ns_of(r),
                    labels: w.labels.clone(),
                    address: w.address.parse().ok(),
                    ports: w
                        .ports
                        .iter()
                        .map(|(k, v)| (k.clone(), (*v).min(65535) as u16))
                        .collect(),
                    service_account: w.service_account.clone(),
                    sidecar: labelled_istio_tls(&w.labels),
                }),
                Spec::VirtualService(vs) => mesh.virtual_services.push((r.clone(), (**vs).clone())),
                Spec::DestinationRule(dr) => {
                    mesh.destination_rules.push((r.clone(), (**dr).clone()))
                }
                Spec::Gateway(g) => mesh.gateways.push((r.clone(), (**g).clone())),
                Spec::Sidecar(sc) => mesh.sidecars.push((r.clone(), (**sc).clone())),
                Spec::Secret(sec) => mesh.secrets.push((r.clone(), (**sec).clone())),
                Spec::PeerAuthentication(p) => {
                    mesh.peer_authentications.push((r.clone(), p.clone()))
                }
                Spec::AuthorizationPolicy(p) => {
                    mesh.authorization_policies.push((r.clone(), p.clone()))
                }
                Spec::RequestAuthentication(p) => {
                    mesh.request_authentications.push((r.clone(), p.clone()))
                }
                _ => {}
            }
        }
        crate::security::sort_by_age(&mut mesh.peer_authentications);
        crate::security::sort_by_age(&mut mesh.authorization_policies);
        crate::security::sort_by_age(&mut mesh.request_authentications);
        mesh.workloads.extend(extra);
        crate::endpoint_slices::add(&mut mesh, resources);
        mesh.reindex();
        mesh
    }

    /// Rebuilds the lookup tables; call after adding workloads or resources by hand.
    pub fn reindex(&mut self) {
        let mut index = Index::default();
        for (i, s) in self.services.iter().enumerate() {
            index.service_by_host.entry(s.hostname.clone()).or_insert(i);
        }
        for (i, w) in self.workloads.iter().enumerate() {
            for (k, v) in &w.labels {
                index
                    .workloads_by_label
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .push(i);
            }
        }
        index.workloads_indexed = self.workloads.len();
        for (i, (r, dr)) in self.destination_rules.iter().enumerate() {
            let host = fqdn(&dr.host, r.meta.namespace_or_default());
            if host.contains('*') {
                index.drs_wildcard.push(i);
            } else {
                index.drs_by_host.entry(host).or_default().push(i);
            }
        }
        for (i, (r, vs)) in self.virtual_services.iter().enumerate() {
            for h in &vs.hosts {
                let host = fqdn(h, r.meta.namespace_or_default());
                if host.contains('*') {
                    index.vss_wildcard.push(i);
                } else {
                    let list = index.vss_by_host.entry(host).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        index.vss_wildcard.dedup();
        index.drs_indexed = self.destination_rules.len();
        index.vss_indexed = self.virtual_services.len();
        self.index = index;
    }

    /// Indexes (in resource order) of the DestinationRules whose host may cover
    /// `hostname`; callers still check with [`host_matches`].
    pub fn destination_rules_for(&self, hostname: &str) -> Vec<usize> {
        candidates(
            &self.index.drs_by_host,
            &self.index.drs_wildcard,
            hostname,
            self.index.drs_indexed,
            self.destination_rules.len(),
        )
    }

    /// Indexes (in resource order) of the VirtualServices whose hosts may cover
    /// `hostname`; callers still check with [`host_matches`].
    pub fn virtual_services_for(&self, hostname: &str) -> Vec<usize> {
        candidates(
            &self.index.vss_by_host,
            &self.index.vss_wildcard,
            hostname,
            self.index.vss_indexed,
            self.virtual_services.len(),
        )
    }

    /// The Secret `name` in `namespace`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|(r, _)| r.meta.name == name && r.meta.namespace_or_default() == namespace)
            .map(|(_, s)| s)
    }

    /// The service with this fully qualified host name.
    pub fn service(&self, hostname: &str) -> Option<&Service> {
        match self.index.service_by_host.get(hostname) {
            Some(i) => self.services.get(*i).filter(|s| s.hostname == hostname),
            None if self.index.service_by_host.len() == self.services.len() => None,
            None => self.services.iter().find(|s| s.hostname == hostname),
        }
    }

    /// The workloads behind `service` that carry every label of `subset`.
    pub fn endpoints_of<'a>(
        &'a self,
        service: &'a Service,
        subset: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Workload> + 'a {
        let listed = service.endpoints.iter();
        // Candidates: the workloads carrying the selector's first label (all of them
        // when the selector is empty or workloads were added since indexing).
        let first = service.selector.as_ref().and_then(|sel| sel.iter().next());
        let candidates: Box<dyn Iterator<Item = &'a Workload> + 'a> = match first {
            Some((k, v)) if self.index.workloads_indexed == self.workloads.len() => Box::new(
                self.index
                    .workloads_by_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten()
                    .filter_map(|i| self.workloads.get(*i)),
            ),
            _ => Box::new(self.workloads.iter()),
        };
        let selected = candidates.filter(move |w| {
            service.selector.as_ref().is_some_and(|sel| {
                // Kubernetes Services select within their namespace; ServiceEntries anywhere.
                (!service.hostname.ends_with(DOMAIN) || w.namespace == service.namespace)
                    && sel.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            })
        });
        listed
            .chain(selected)
            .filter(move |w| subset.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
    }
}

/// Exact-host entries for `hostname` merged with the wildcard ones, in order; every
/// index when the tables are out of date.
fn candidates(
    exact: &std::collections::HashMap<String, Vec<usize>>,
    wildcard: &[usize],
    hostname: &str,
    indexed: usize,
    total: usize,
) -> Vec<usize> {
    if indexed != total {
        return (0..total).collect();
    }
    let mut out: Vec<usize> = exact.get(hostname).into_iter().flatten().copied().collect();
    if hostname.contains('*') {
        // A wildcard host (a ServiceEntry `*.example.com`) may be covered by anything.
        return (0..total).collect();
    }
    out.extend(wildcard.iter().copied());
    out.sort_unstable();
    out.dedup();
    out
}

/// True when something exported to `export_to` (written in `owner_ns`) is visible from
/// `viewer_ns`: empty or `*` means everyone, `.` the owner's namespace, `~` no one.
pub fn exported(export_to: &[String], owner_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == viewer_ns || (e == "." && owner_ns == viewer_ns))
}

/// Istio's protocol selection by port name: `http`, `http-web`, `grpc-api`, ...
pub fn protocol_from_name(name: &str) -> Protocol {
    let prefix = name.split('-').next().unwrap_or(name);
    Protocol::parse(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hosts_become_fully_qualified() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod.svc", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "x"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("api.example.com", "x"), "api.example.com");
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.org"));
    }
}
