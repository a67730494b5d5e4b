//! A sidecar's config: one outbound listener that routes by Host to every service
//! (the app's HTTP proxy in local mode), and inbound listeners in front of the app.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_model as model;

use crate::mesh::{
    DOMAIN, Mesh, OutboundPolicy, Service, ServicePort, exported, fqdn, host_matches,
};
use crate::route::{Collected, Scope, bound_here, destination, http_routes};
use crate::{Note, ProxyIdentity};

/// An inbound listener: mesh traffic for one service port, delivered to the app.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub listen: SocketAddr,
    pub app: SocketAddr,
    /// The service port this serves (for route names and metrics).
    pub port: u16,
}

/// The outbound part of a sidecar's config: one virtual host per visible service
/// port (the `outbound` route table) and the clusters they route to. It depends only
/// on the sidecar's namespace and, when [`outbound_depends_on_labels`], its labels, so
/// the control plane compiles it once for every sidecar that shares those.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    pub virtual_hosts: Vec<model::VirtualHost>,
    pub clusters: Vec<model::Cluster>,
    pub notes: Vec<Note>,
}

/// Whether sidecars' outbound config can differ by workload labels: some
/// VirtualService matches `sourceLabels`, or some Sidecar resource selects workloads.
pub fn outbound_depends_on_labels(mesh: &Mesh) -> bool {
    mesh.virtual_services.iter().any(|(_, vs)| {
        vs.http
            .iter()
            .flat_map(|h| h.match_.iter())
            .any(|m| !m.source_labels.is_empty())
            || vs
                .tcp
                .iter()
                .flat_map(|t| t.match_.iter())
                .any(|m| !m.source_labels.is_empty())
            || vs
                .tls
                .iter()
                .flat_map(|t| t.match_.iter())
                .any(|m| !m.source_labels.is_empty())
    }) || mesh
        .sidecars
        .iter()
        .any(|(_, sc)| sc.workload_selector.is_some())
}

/// Compiles the config of the sidecar of `who`.
pub fn sidecar(
    mesh: &Mesh,
    who: &ProxyIdentity,
    outbound: SocketAddr,
    inbound: &[Inbound],
    version: u64,
) -> (model::ProxyConfig, Vec<Note>) {
    let shared = sidecar_outbound(mesh, who);
    let mut config = sidecar_local(who, outbound, inbound, version);
    let (security, mut notes) = crate::security::sidecar_security(mesh, who, inbound);
    config.security = security;
    config.route_tables.insert(
        0,
        model::RouteTable {
            name: "outbound".into(),
            virtual_hosts: shared.virtual_hosts,
        },
    );
    let mut clusters: BTreeMap<String, model::Cluster> = shared
        .clusters
        .into_iter()
        .chain(std::mem::take(&mut config.clusters))
        .map(|c| (c.name.clone(), c))
        .collect();
    config.clusters = std::mem::take(&mut clusters).into_values().collect();
    notes.extend(shared.notes);
    (config, notes)
}

/// The outbound part of the config of the sidecar of `who` (see [`Outbound`]).
pub fn sidecar_outbound(mesh: &Mesh, who: &ProxyIdentity) -> Outbound {
    // A domain goes to the first unit that claims it (a unit left with none is
    // dropped); clusters are merged by name.
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut out = Outbound::default();
    let mut clusters: BTreeMap<String, model::Cluster> = BTreeMap::new();
    for (service, port) in outbound_plan(mesh, who) {
        let mut u = outbound_unit(mesh, who, service, port);
        u.vhost.domains.retain(|d| claimed.insert(d.clone()));
        if u.vhost.domains.is_empty() {
            continue;
        }
        out.virtual_hosts.push(u.vhost);
        for c in u.clusters {
            clusters.entry(c.name.clone()).or_insert(c);
        }
        out.notes.extend(u.notes);
    }
    out.clusters = clusters.into_values().collect();
    out
}

/// One visible service port's share of a sidecar's outbound config: its virtual host
/// (with every domain it would claim) and the clusters its routes use. Units depend
/// only on the hosts in `deps`, so a control plane can keep them until one of those
/// changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePortUnit {
    pub vhost: model::VirtualHost,
    pub clusters: Vec<model::Cluster>,
    pub notes: Vec<Note>,
    /// Hosts whose Service, DestinationRule, VirtualService or endpoints this unit
    /// was built from.
    pub deps: BTreeSet<String>,
}

/// The service ports a sidecar routes to, in the order their virtual hosts go in
/// its outbound route table: visible services' HTTP ports.
pub fn outbound_plan<'a>(
    mesh: &'a Mesh,
    who: &ProxyIdentity,
) -> Vec<(&'a Service, &'a ServicePort)> {
    let egress = egress_hosts(mesh, who);
    mesh.services
        .iter()
        .filter(|s| visible(s, who, egress.as_deref()))
        .flat_map(|s| s.ports.iter().filter(|p| p.is_http()).map(move |p| (s, p)))
        .collect()
}

/// Compiles one service port's unit for the sidecar of `who`.
pub fn outbound_unit(
    mesh: &Mesh,
    who: &ProxyIdentity,
    service: &Service,
    port: &ServicePort,
) -> ServicePortUnit {
    let mut out = Collected::default();
    let scope = Scope {
        mesh,
        gateway: None,
        node_namespace: &who.namespace,
        node_labels: &who.labels,
        port: Some(port.number),
    };
    let default_port = default_http_port(service);
    let mut domains = Vec::new();
    // A captured request to a cluster IP carries the IP as its Host.
    let ips = service.addresses.iter().map(|ip| match ip {
        IpAddr::V4(_) => ip.to_string(),
        IpAddr::V6(_) => format!("[{ip}]"),
    });
    for alias in aliases(service, &who.namespace).into_iter().chain(ips) {
        domains.push(format!("{alias}:{}", port.number));
        if Some(port.number) == default_port {
            domains.push(alias);
        }
    }
    let routes = routes_for(&scope, service, port, &mut out);
    let mut deps: BTreeSet<String> = out.clusters.values().map(|c| c.service.clone()).collect();
    deps.insert(service.hostname.clone());
    ServicePortUnit {
        vhost: model::VirtualHost {
            name: format!("{}:{}", service.hostname, port.number),
            domains,
            routes,
        },
        clusters: out.clusters.into_values().collect(),
        notes: out.notes,
        deps,
    }
}

/// The part of a sidecar's config that is its own: the outbound listener (bound to
/// `outbound`, using the `outbound` route table, which [`sidecar_outbound`] fills) and
/// an inbound listener, route table and cluster per inbound port. Its route tables do
/// not include `outbound`, and its `security` is empty ([`crate::sidecar_security`]
/// compiles it).
pub fn sidecar_local(
    who: &ProxyIdentity,
    outbound: SocketAddr,
    inbound: &[Inbound],
    version: u64,
) -> model::ProxyConfig {
    let mut clusters: BTreeMap<String, model::Cluster> = BTreeMap::new();
    let bind_ip = who.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut listeners = vec![model::Listener {
        name: "outbound".into(),
        bind: Some(outbound),
        direction: model::Direction::Outbound,
        protocol: model::ListenerProtocol::Http,
        route_table: Some("outbound".into()),
        tcp_routes: vec![],
        tls: None,
        port: None,
        capture: None,
    }];
    let mut route_tables = Vec::new();
    let workload = who.workload();
    for inb in inbound {
        let cluster = format!("inbound|{}||", inb.port);
        let table = format!("inbound|{}", inb.port);
        listeners.push(model::Listener {
            name: format!("inbound|{}", inb.port),
            bind: Some(SocketAddr::new(
                if inb.listen.ip().is_unspecified() {
                    bind_ip
                } else {
                    inb.listen.ip()
                },
                inb.listen.port(),
            )),
            direction: model::Direction::Inbound,
            protocol: model::ListenerProtocol::Auto,
            route_table: Some(table.clone()),
            tcp_routes: vec![model::TcpRoute {
                name: cluster.clone(),
                sni: vec![],
                clusters: vec![model::WeightedCluster {
                    cluster: cluster.clone(),
                    weight: 100,
                    ..Default::default()
                }],
            }],
            tls: None,
            port: Some(inb.port),
            capture: None,
        });
        route_tables.push(model::RouteTable {
            name: table,
            virtual_hosts: vec![model::VirtualHost {
                name: "inbound".into(),
                domains: vec!["*".into()],
                routes: vec![model::Route {
                    name: "inbound".into(),
                    action: model::Action::Forward(model::Forward {
                        clusters: vec![model::WeightedCluster {
                            cluster: cluster.clone(),
                            weight: 100,
                            ..Default::default()
                        }],
                        rewrite: None,
                    }),
                    ..Default::default()
                }],
            }],
        });
        clusters.insert(
            cluster.clone(),
            model::Cluster {
                name: cluster,
                service: format!("{}.{}.{DOMAIN}", workload.app, who.namespace),
                endpoints: vec![model::Endpoint {
                    address: Some(inb.app),
                    weight: 1,
                    labels: BTreeMap::new(),
                    workload: workload.clone(),
                    // Sidecar to its own app: plaintext on the pod's loopback.
                    mtls: false,
                }],
                ..Default::default()
            },
        );
    }
    model::ProxyConfig {
        version,
        node: model::Node {
            id: format!("sidecar~{}.{}", who.name, who.namespace),
            role: model::Role::Sidecar,
            workload,
        },
        listeners,
        route_tables,
        clusters: clusters.into_values().collect(),
        security: model::Security::default(),
    }
}

/// The routes of the VirtualService for this service, or a plain forward.
fn routes_for(
    scope: &Scope<'_>,
    service: &Service,
    port: &ServicePort,
    out: &mut Collected,
) -> Vec<model::Route> {
    let candidates = scope.mesh.virtual_services_for(&service.hostname);
    let vs = candidates
        .iter()
        .filter_map(|i| scope.mesh.virtual_services.get(*i))
        .find(|(r, vs)| {
            let ns = r.meta.namespace_or_default();
            bound_here(ns, vs, None)
                && exported(&vs.export_to, ns, scope.node_namespace)
                && vs
                    .hosts
                    .iter()
                    .any(|h| host_matches(&fqdn(h, ns), &service.hostname))
        });
    if let Some((r, vs)) = vs {
        return http_routes(scope, r.meta.namespace_or_default(), &r.meta.name, vs, out);
    }
    let dest = trellis_api::networking::Destination {
        host: service.hostname.clone(),
        subset: String::new(),
        port: Some(trellis_api::networking::PortSelector {
            number: u32::from(port.number),
        }),
    };
    let cluster = destination(scope, &service.namespace, &dest, out);
    vec![model::Route {
        name: "default".into(),
        action: model::Action::Forward(model::Forward {
            clusters: vec![model::WeightedCluster {
                cluster,
                weight: 100,
                ..Default::default()
            }],
            rewrite: None,
        }),
        retry: Some(crate::route::default_retry()),
        ..Default::default()
    }]
}

/// The root namespace, whose namespace-wide Sidecar is the mesh-wide default.
use crate::security::ROOT_NAMESPACE;

/// The Sidecar resource that applies to `who`: one selecting its labels in its
/// namespace, else its namespace's default, else the root namespace's default.
fn sidecar_for<'a>(
    mesh: &'a Mesh,
    who: &ProxyIdentity,
) -> Option<&'a (trellis_api::Resource, trellis_api::networking::Sidecar)> {
    fn in_ns<'a>(
        mesh: &'a Mesh,
        ns: String,
    ) -> impl Iterator<Item = &'a (trellis_api::Resource, trellis_api::networking::Sidecar)> + 'a
    {
        mesh.sidecars
            .iter()
            .filter(move |(r, _)| r.meta.namespace_or_default() == ns)
    }
    in_ns(mesh, who.namespace.clone())
        .find(|(_, sc)| {
            sc.workload_selector.as_ref().is_some_and(|sel| {
                !sel.labels.is_empty()
                    && sel.labels.iter().all(|(k, v)| who.labels.get(k) == Some(v))
            })
        })
        .or_else(|| {
            in_ns(mesh, who.namespace.clone()).find(|(_, sc)| sc.workload_selector.is_none())
        })
        .or_else(|| {
            in_ns(mesh, ROOT_NAMESPACE.to_string()).find(|(_, sc)| sc.workload_selector.is_none())
        })
}

/// What captured connections of `who` to destinations the mesh does not know get:
/// its Sidecar's `outboundTrafficPolicy`, else the mesh's.
pub fn outbound_policy(mesh: &Mesh, who: &ProxyIdentity) -> OutboundPolicy {
    use trellis_api::networking::OutboundTrafficPolicyMode as Mode;
    match sidecar_for(mesh, who).and_then(|(_, sc)| sc.outbound_traffic_policy.as_ref()) {
        Some(p) => match p.mode.unwrap_or_default() {
            Mode::AllowAny => OutboundPolicy::AllowAny,
            Mode::RegistryOnly => OutboundPolicy::RegistryOnly,
        },
        None => mesh.outbound_policy,
    }
}

/// The egress hosts (`namespace/host`, namespace resolved) of the Sidecar that applies
/// to `who`. `None` when no Sidecar applies or it lists no egress (everything visible).
fn egress_hosts(mesh: &Mesh, who: &ProxyIdentity) -> Option<Vec<(String, String)>> {
    let (r, sc) = sidecar_for(mesh, who)?;
    if sc.egress.is_empty() {
        return None;
    }
    let own_ns = r.meta.namespace_or_default();
    Some(
        sc.egress
            .iter()
            .flat_map(|e| e.hosts.iter())
            .filter_map(|h| {
                let (ns, host) = h.split_once('/')?;
                let ns = if ns == "." {
                    own_ns.to_string()
                } else {
                    ns.to_string()
                };
                Some((ns, host.to_string()))
            })
            .collect(),
    )
}

/// The services `who` may reach (exported to it, named by its Sidecar's egress).
pub(crate) fn visible_services<'a>(
    mesh: &'a Mesh,
    who: &ProxyIdentity,
) -> impl Iterator<Item = &'a Service> + 'a {
    let egress = egress_hosts(mesh, who);
    let who = who.clone();
    mesh.services
        .iter()
        .filter(move |s| visible(s, &who, egress.as_deref()))
}

/// Whether `who` may reach `service`: exported to its namespace and, when a Sidecar
/// applies, named by one of its egress hosts (`~` names nothing).
fn visible(service: &Service, who: &ProxyIdentity, egress: Option<&[(String, String)]>) -> bool {
    if !exported(&service.export_to, &service.namespace, &who.namespace) {
        return false;
    }
    let Some(hosts) = egress else { return true };
    hosts.iter().any(|(ns, host)| {
        ns != "~"
            && (ns == "*" || *ns == service.namespace)
            && host_matches(host, &service.hostname)
    })
}

/// The names an app may use for a service: `reviews` (same namespace), `reviews.ns`,
/// `reviews.ns.svc`, the full name; ServiceEntry hosts as written.
pub(crate) fn aliases(service: &Service, caller_ns: &str) -> Vec<String> {
    let Some(short) = service
        .hostname
        .strip_suffix(&format!(".{}.{DOMAIN}", service.namespace))
    else {
        return vec![service.hostname.clone()];
    };
    let ns = &service.namespace;
    let mut names = Vec::new();
    if ns == caller_ns {
        names.push(short.to_string());
    }
    names.push(format!("{short}.{ns}"));
    names.push(format!("{short}.{ns}.svc"));
    names.push(service.hostname.clone());
    names
}

/// Requests without a port in Host go to port 80, or the service's first HTTP port.
fn default_http_port(service: &Service) -> Option<u16> {
    let http: Vec<u16> = service
        .ports
        .iter()
        .filter(|p| p.is_http())
        .map(|p| p.number)
        .collect();
    http.iter()
        .copied()
        .find(|p| *p == 80)
        .or(http.first().copied())
}
