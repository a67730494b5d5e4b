//! Capture mode: a sidecar whose app's traffic iptables redirects to it (`trellis
//! proxy init`). Two capture listeners take the redirected connections — outbound on
//! 15001, inbound on 15006 — and hand each to an unbound listener chosen by the
//! address the client meant to reach: a service's cluster IP and port outbound, the
//! workload port inbound. The listeners they hand to are the sidecar's usual ones
//! (the `outbound` HTTP route table, the `inbound|PORT` listeners) plus one TCP
//! listener per non-HTTP service port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_model as model;

use crate::mesh::{Mesh, OutboundPolicy, Service, ServicePort, exported, fqdn, host_matches};
use crate::route::{Collected, Scope, bound_here, destination};
use crate::sidecar::{Inbound, aliases, outbound_policy, visible_services};
use crate::{Note, ProxyIdentity};

/// Istio's ports: where redirected outbound and inbound connections arrive.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// Where the proxy answers the app's DNS queries (Istio's DNS proxy port).
pub const DNS_PORT: u16 = 15053;

/// Names of the capture listeners (Istio's, for familiarity).
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// The same for IPv6 (a socket of each family, so each reads its own original
/// destination).
pub const VIRTUAL_OUTBOUND_V6: &str = "virtualOutbound6";
pub const VIRTUAL_INBOUND_V6: &str = "virtualInbound6";

/// Where the capture listeners bind.
#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    /// Where the DNS server listens (UDP); the queries `trellis proxy init
    /// --redirect-dns` redirects arrive at 127.0.0.1.
    pub dns: Option<SocketAddr>,
    /// Also take IPv6 (`[::]` on the same ports), when the pod has it.
    pub ipv6: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        CaptureOptions {
            outbound: SocketAddr::new(any, OUTBOUND_CAPTURE_PORT),
            inbound: SocketAddr::new(any, INBOUND_CAPTURE_PORT),
            dns: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT)),
            ipv6: false,
        }
    }
}

/// The inbound ports of `who` when its flags name none: the target ports of the
/// services selecting its labels (numbers; a named target port is looked up in the
/// workload's named ports), each delivered to the app on 127.0.0.1.
pub fn inbound_ports(
    mesh: &Mesh,
    who: &ProxyIdentity,
    named_ports: &BTreeMap<String, u16>,
) -> Vec<Inbound> {
    let mut ports = BTreeSet::new();
    for s in &mesh.services {
        let Some(selector) = &s.selector else {
            continue;
        };
        if s.namespace != who.namespace
            || selector.is_empty()
            || !selector.iter().all(|(k, v)| who.labels.get(k) == Some(v))
        {
            continue;
        }
        for p in &s.ports {
            let target = match &p.target {
                trellis_api::values::IntOrString::Int(n) => u16::try_from(*n).ok(),
                trellis_api::values::IntOrString::String(name) => named_ports.get(name).copied(),
            };
            if let Some(t) = target.filter(|t| *t > 0) {
                ports.insert(t);
            }
        }
    }
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    ports
        .into_iter()
        .map(|port| Inbound {
            listen: SocketAddr::new(any, port),
            app: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            port,
        })
        .collect()
}

/// Turns a compiled sidecar config into capture mode: its outbound and inbound
/// listeners stop binding and are reached through the two capture listeners.
pub fn capture(
    mesh: &Mesh,
    who: &ProxyIdentity,
    config: &mut model::ProxyConfig,
    options: &CaptureOptions,
) -> Vec<Note> {
    let mut inbound_targets = Vec::new();
    for l in &mut config.listeners {
        match l.direction {
            model::Direction::Outbound => l.bind = None,
            model::Direction::Inbound => {
                l.bind = None;
                if let Some(port) = l.port {
                    inbound_targets.push(model::CaptureTarget {
                        ip: None,
                        port,
                        listener: l.name.clone(),
                    });
                }
            }
            model::Direction::Gateway => {}
        }
    }
    let (listeners, targets, collected) = outbound_targets(mesh, who);
    config.listeners.extend(listeners);
    let known: BTreeSet<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    config.clusters.extend(
        collected
            .clusters
            .into_values()
            .filter(|c| !known.contains(&c.name)),
    );
    config.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    config.listeners.push(capture_listener(
        VIRTUAL_OUTBOUND,
        options.outbound,
        model::Direction::Outbound,
        model::Capture {
            targets,
            passthrough: outbound_policy(mesh, who) == OutboundPolicy::AllowAny,
            dns: options.dns.map(|bind| model::Dns {
                bind,
                names: dns_names(mesh, who),
            }),
        },
    ));
    // Inbound ports the mesh does not know reach the app as they are (Istio's
    // InboundPassthroughCluster).
    config.listeners.push(capture_listener(
        VIRTUAL_INBOUND,
        options.inbound,
        model::Direction::Inbound,
        model::Capture {
            targets: inbound_targets,
            passthrough: true,
            dns: None,
        },
    ));
    if options.ipv6 {
        let any6 = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let v4: Vec<model::Listener> = config
            .listeners
            .iter()
            .filter(|l| l.name == VIRTUAL_OUTBOUND || l.name == VIRTUAL_INBOUND)
            .cloned()
            .collect();
        for mut l in v4 {
            l.name = if l.name == VIRTUAL_OUTBOUND {
                VIRTUAL_OUTBOUND_V6
            } else {
                VIRTUAL_INBOUND_V6
            }
            .into();
            l.bind = l.bind.map(|b| SocketAddr::new(any6, b.port()));
            if let Some(c) = l.capture.as_mut() {
                c.dns = None;
            }
            config.listeners.push(l);
        }
    }
    collected.notes
}

/// The names apps may look up for the services `who` sees (every alias: `reviews`
/// in its own namespace, `reviews.ns`, `reviews.ns.svc`, the full name; ServiceEntry
/// hosts as written), with their virtual IPs. The first service to claim a name
/// keeps it; wildcard hosts are not names.
fn dns_names(mesh: &Mesh, who: &ProxyIdentity) -> Vec<model::DnsName> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for service in visible_services(mesh, who) {
        if service.addresses.is_empty() {
            continue;
        }
        for name in aliases(service, &who.namespace) {
            let name = name.to_ascii_lowercase();
            if name.contains('*') || !seen.insert(name.clone()) {
                continue;
            }
            names.push(model::DnsName {
                name,
                addresses: service.addresses.clone(),
            });
        }
    }
    names
}

fn capture_listener(
    name: &str,
    bind: SocketAddr,
    direction: model::Direction,
    capture: model::Capture,
) -> model::Listener {
    model::Listener {
        name: name.into(),
        bind: Some(bind),
        direction,
        protocol: model::ListenerProtocol::Tcp,
        capture: Some(capture),
        ..Default::default()
    }
}

/// Every visible service address and port, and the listener serving it: HTTP ports
/// go to the `outbound` listener (routing by Host, which knows the cluster IPs as
/// hosts), other ports to a TCP listener of their own (sniffed when the port's
/// protocol is not named).
fn outbound_targets(
    mesh: &Mesh,
    who: &ProxyIdentity,
) -> (Vec<model::Listener>, Vec<model::CaptureTarget>, Collected) {
    let mut out = Collected::default();
    let mut listeners = Vec::new();
    let mut targets = Vec::new();
    let mut taken: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
    for service in visible_services(mesh, who) {
        if service.addresses.is_empty() {
            continue;
        }
        for port in &service.ports {
            let listener = if port.protocol.is_http() {
                "outbound".to_string()
            } else {
                let l = tcp_listener(mesh, who, service, port, &mut out);
                let name = l.name.clone();
                listeners.push(l);
                name
            };
            for ip in &service.addresses {
                // The first service claiming an address and port keeps it.
                if taken.insert((*ip, port.number)) {
                    targets.push(model::CaptureTarget {
                        ip: Some(*ip),
                        port: port.number,
                        listener: listener.clone(),
                    });
                }
            }
        }
    }
    (listeners, targets, out)
}

/// An unbound listener for one non-HTTP service port: its bytes to the service's
/// cluster; when the port does not name its protocol, HTTP is told by its first
/// bytes and routed by Host as on HTTP ports.
fn tcp_listener(
    mesh: &Mesh,
    who: &ProxyIdentity,
    service: &Service,
    port: &ServicePort,
    out: &mut Collected,
) -> model::Listener {
    let scope = Scope {
        mesh,
        gateway: None,
        node_namespace: &who.namespace,
        node_labels: &who.labels,
        port: Some(port.number),
    };
    let dest = trellis_api::networking::Destination {
        host: service.hostname.clone(),
        subset: String::new(),
        port: Some(trellis_api::networking::PortSelector {
            number: u32::from(port.number),
        }),
    };
    let cluster = destination(&scope, &service.namespace, &dest, out);
    // The VirtualService's `tcp` rules first, then the service itself.
    let mut tcp_routes = vs_tcp_routes(&scope, service, port.number, out);
    tcp_routes.push(model::TcpRoute {
        name: cluster.clone(),
        sni: vec![],
        clusters: vec![model::WeightedCluster {
            cluster,
            weight: 100,
            ..Default::default()
        }],
    });
    let sniffed = port.is_http();
    model::Listener {
        name: format!("outbound|{}|{}", port.number, service.hostname),
        bind: None,
        direction: model::Direction::Outbound,
        protocol: if sniffed {
            model::ListenerProtocol::Auto
        } else {
            model::ListenerProtocol::Tcp
        },
        route_table: sniffed.then(|| "outbound".to_string()),
        tcp_routes,
        ..Default::default()
    }
}

/// The `tcp` rules of the VirtualService for `service` that apply to this sidecar
/// and port (a rule's matches: port, source labels, source namespace), in order.
fn vs_tcp_routes(
    scope: &Scope<'_>,
    service: &Service,
    port: u16,
    out: &mut Collected,
) -> Vec<model::TcpRoute> {
    let mesh = scope.mesh;
    let found = mesh
        .virtual_services_for(&service.hostname)
        .iter()
        .filter_map(|i| mesh.virtual_services.get(*i))
        .find(|(r, vs)| {
            let ns = r.meta.namespace_or_default();
            bound_here(ns, vs, None)
                && exported(&vs.export_to, ns, scope.node_namespace)
                && vs
                    .hosts
                    .iter()
                    .any(|h| host_matches(&fqdn(h, ns), &service.hostname))
        });
    let Some((r, vs)) = found else {
        return Vec::new();
    };
    let ns = r.meta.namespace_or_default();
    let applies = |m: &trellis_api::networking::L4MatchAttributes| {
        (m.port == 0 || m.port == u32::from(port))
            && m.source_labels
                .iter()
                .all(|(k, v)| scope.node_labels.get(k) == Some(v))
            && (m.source_namespace.is_empty() || m.source_namespace == scope.node_namespace)
    };
    vs.tcp
        .iter()
        .filter(|rule| rule.match_.is_empty() || rule.match_.iter().any(applies))
        .map(|rule| model::TcpRoute {
            name: format!("{ns}/{}", r.meta.name),
            sni: vec![],
            clusters: rule
                .route
                .iter()
                .filter_map(|d| {
                    Some(model::WeightedCluster {
                        cluster: destination(scope, ns, d.destination.as_ref()?, out),
                        weight: if rule.route.len() == 1 {
                            100
                        } else {
                            d.weight.max(0) as u32
                        },
                        ..Default::default()
                    })
                })
                .collect(),
        })
        .collect()
}
