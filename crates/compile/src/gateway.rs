//! A gateway's config: a listener per Gateway server port, virtual hosts for the
//! server hosts, and the routes of the VirtualServices bound to those Gateways.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_api::networking::Protocol;
use trellis_model as model;

use crate::mesh::{Mesh, host_matches};
use crate::route::{Collected, Scope, bound_here, destination, http_routes, qualify};
use crate::{Note, ProxyIdentity};

/// The servers on one port: whether they speak HTTP, and each Gateway's hosts there.
type PortServers = (bool, Vec<(String, Vec<String>)>);

/// Compiles the config of a gateway proxy labelled like `who`; `port_map` moves
/// privileged ports (80 → 8080) for unprivileged local runs.
pub fn gateway(
    mesh: &Mesh,
    who: &ProxyIdentity,
    port_map: &BTreeMap<u16, u16>,
    version: u64,
) -> (model::ProxyConfig, Vec<Note>) {
    let mut out = Collected::default();
    let mut ports: BTreeMap<u16, PortServers> = BTreeMap::new();
    for (r, gw) in &mesh.gateways {
        if gw.selector.is_empty()
            || !gw
                .selector
                .iter()
                .all(|(k, v)| who.labels.get(k) == Some(v))
        {
            continue;
        }
        let name = format!("{}/{}", r.meta.namespace_or_default(), r.meta.name);
        for server in &gw.servers {
            let Some(port) = &server.port else { continue };
            let protocol = Protocol::parse(&port.protocol);
            let tls_terminated = server.tls.as_ref().is_some_and(|t| !t.https_redirect);
            if protocol.is_tls() || tls_terminated {
                out.notes.push(Note {
                    resource: format!("Gateway {name}"),
                    message: format!("server on port {} uses TLS, which the gateway does not terminate yet; skipped", port.number),
                });
                continue;
            }
            let hosts = server
                .hosts
                .iter()
                .map(|h| {
                    h.split_once('/')
                        .map_or(h.as_str(), |(_, host)| host)
                        .to_string()
                })
                .collect();
            let entry = ports
                .entry(port.number.min(65535) as u16)
                .or_insert((protocol.is_http(), Vec::new()));
            entry.1.push((name.clone(), hosts));
        }
    }
    let bind_ip = who.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let (mut listeners, mut tables) = (Vec::new(), Vec::new());
    for (port, (http, servers)) in &ports {
        let bind = SocketAddr::new(bind_ip, *port_map.get(port).unwrap_or(port));
        let table = format!("http.{port}");
        if *http {
            let mut vhosts: Vec<model::VirtualHost> = Vec::new();
            for (gw_name, hosts) in servers {
                let scope = Scope {
                    mesh,
                    gateway: Some(gw_name),
                    node_namespace: &who.namespace,
                    node_labels: &who.labels,
                    port: None,
                };
                for (r, vs) in &mesh.virtual_services {
                    let ns = r.meta.namespace_or_default();
                    if !bound_here(ns, vs, Some(gw_name)) {
                        continue;
                    }
                    let domains: Vec<String> = vs
                        .hosts
                        .iter()
                        .filter(|h| {
                            hosts
                                .iter()
                                .any(|sh| host_matches(sh, h) || host_matches(h, sh))
                        })
                        .flat_map(|h| [h.clone(), format!("{h}:{port}")])
                        .collect();
                    if domains.is_empty() {
                        continue;
                    }
                    let routes = http_routes(&scope, ns, &r.meta.name, vs, &mut out);
                    match vhosts.iter_mut().find(|v| v.domains == domains) {
                        // Several VirtualServices for one host merge, in order.
                        Some(v) => v.routes.extend(routes),
                        None => vhosts.push(model::VirtualHost {
                            name: format!("{}:{port}", domains[0]),
                            domains,
                            routes,
                        }),
                    }
                }
            }
            tables.push(model::RouteTable {
                name: table.clone(),
                virtual_hosts: vhosts,
            });
            listeners.push(model::Listener {
                name: format!("0.0.0.0_{port}"),
                bind: Some(bind),
                direction: model::Direction::Gateway,
                protocol: model::ListenerProtocol::Http,
                route_table: Some(table),
                tcp_routes: vec![],
            });
        } else {
            let mut tcp_routes = Vec::new();
            for (gw_name, _) in servers {
                let scope = Scope {
                    mesh,
                    gateway: Some(gw_name),
                    node_namespace: &who.namespace,
                    node_labels: &who.labels,
                    port: Some(*port),
                };
                for (r, vs) in &mesh.virtual_services {
                    let ns = r.meta.namespace_or_default();
                    if !vs.gateways.iter().any(|g| qualify(g, ns) == *gw_name) {
                        continue;
                    }
                    for rule in &vs.tcp {
                        let port_ok = rule.match_.is_empty()
                            || rule
                                .match_
                                .iter()
                                .any(|m| m.port == 0 || m.port == u32::from(*port));
                        if !port_ok {
                            continue;
                        }
                        let clusters = rule
                            .route
                            .iter()
                            .filter_map(|d| {
                                let dest = d.destination.as_ref()?;
                                Some(model::WeightedCluster {
                                    cluster: destination(&scope, ns, dest, &mut out),
                                    weight: if rule.route.len() == 1 {
                                        100
                                    } else {
                                        d.weight.max(0) as u32
                                    },
                                    ..Default::default()
                                })
                            })
                            .collect();
                        tcp_routes.push(model::TcpRoute {
                            name: format!("{ns}/{}", r.meta.name),
                            sni: vec![],
                            clusters,
                        });
                    }
                }
            }
            listeners.push(model::Listener {
                name: format!("0.0.0.0_{port}"),
                bind: Some(bind),
                direction: model::Direction::Gateway,
                protocol: model::ListenerProtocol::Tcp,
                route_table: None,
                tcp_routes,
            });
        }
    }
    let config = model::ProxyConfig {
        version,
        node: model::Node {
            id: format!("router~{}.{}", who.name, who.namespace),
            role: model::Role::Gateway,
            workload: who.workload(),
        },
        listeners,
        route_tables: tables,
        clusters: out.clusters.into_values().collect(),
    };
    (config, out.notes)
}
