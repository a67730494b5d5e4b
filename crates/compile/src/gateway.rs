//! A gateway's config: a listener per Gateway server port, virtual hosts for the
//! server hosts, and the routes of the VirtualServices bound to those Gateways.
//! HTTPS servers terminate TLS with certificates from Secrets (`credentialName`, in
//! the gateway's namespace) or files (`serverCertificate`/`privateKey`), picked by SNI.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_api::networking::{Protocol, ServerTlsMode, ServerTlsSettings};
use trellis_model as model;

use crate::mesh::{Mesh, host_matches};
use crate::route::{Collected, Scope, bound_here, destination, http_routes, qualify};
use crate::{Note, ProxyIdentity};

/// What a port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    /// HTTP after TLS termination.
    Https,
    Tcp,
    /// TLS passed through, routed by SNI.
    Passthrough,
}

/// One Gateway server on a port.
struct ServerEntry {
    gateway: String,
    hosts: Vec<String>,
    https_redirect: bool,
}

/// The servers on one port.
struct PortServers {
    kind: Kind,
    servers: Vec<ServerEntry>,
    tls: Option<model::TlsServer>,
}

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
            let skip = |out: &mut Collected, why: String| {
                out.notes.push(Note {
                    resource: format!("Gateway {name}"),
                    message: format!("server on port {}: {why}; skipped", port.number),
                })
            };
            let hosts: Vec<String> = server
                .hosts
                .iter()
                .map(|h| {
                    h.split_once('/')
                        .map_or(h.as_str(), |(_, host)| host)
                        .to_string()
                })
                .collect();
            let https_redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
            let tls = server.tls.as_ref().filter(|_| !https_redirect);
            let (kind, certs) = match (protocol, tls) {
                (Protocol::Https | Protocol::Tls, None) => {
                    skip(&mut out, "a TLS server without a tls block".into());
                    continue;
                }
                (p, Some(t)) if p.is_tls() || p.is_http() => match t.mode.unwrap_or_default() {
                    ServerTlsMode::Passthrough if p.is_tls() => (Kind::Passthrough, None),
                    ServerTlsMode::Simple | ServerTlsMode::Mutual
                        if p == Protocol::Https || p.is_http() =>
                    {
                        match server_tls(mesh, who, t, &hosts) {
                            Ok(tls) => (Kind::Https, Some(tls)),
                            Err(why) => {
                                skip(&mut out, why);
                                continue;
                            }
                        }
                    }
                    mode => {
                        skip(
                            &mut out,
                            format!(
                                "TLS mode {mode:?} with protocol {} is not supported",
                                port.protocol
                            ),
                        );
                        continue;
                    }
                },
                (p, _) if p.is_http() => (Kind::Http, None),
                _ => (Kind::Tcp, None),
            };
            let number = port.number.min(65535) as u16;
            let entry = ports.entry(number).or_insert_with(|| PortServers {
                kind,
                servers: Vec::new(),
                tls: None,
            });
            if entry.kind != kind {
                skip(
                    &mut out,
                    format!(
                        "port {number} already serves {:?} for another server",
                        entry.kind
                    ),
                );
                continue;
            }
            if let Some(mut new) = certs {
                match &mut entry.tls {
                    None => entry.tls = Some(new),
                    Some(tls) if tls.mode == new.mode && tls.client_ca_pem == new.client_ca_pem => {
                        tls.certificates.append(&mut new.certificates)
                    }
                    Some(_) => {
                        skip(
                            &mut out,
                            "its TLS mode or client CA differs from another server on the port"
                                .into(),
                        );
                        continue;
                    }
                }
            }
            entry.servers.push(ServerEntry {
                gateway: name.clone(),
                hosts,
                https_redirect,
            });
        }
    }
    let bind_ip = who.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let (mut listeners, mut tables) = (Vec::new(), Vec::new());
    let (security, notes) = crate::security::gateway_security(mesh, who);
    for (port, entry) in ports {
        let bind = SocketAddr::new(bind_ip, *port_map.get(&port).unwrap_or(&port));
        let table = format!("http.{port}");
        let mut listener = model::Listener {
            name: format!("0.0.0.0_{port}"),
            bind: Some(bind),
            direction: model::Direction::Gateway,
            protocol: model::ListenerProtocol::Http,
            route_table: None,
            tcp_routes: vec![],
            tls: entry.tls,
            port: Some(port),
            capture: None,
        };
        if matches!(entry.kind, Kind::Http | Kind::Https) {
            let mut vhosts: Vec<model::VirtualHost> = Vec::new();
            for server in &entry.servers {
                http_vhosts(mesh, who, server, port, &mut vhosts, &mut out);
            }
            tables.push(model::RouteTable {
                name: table.clone(),
                virtual_hosts: vhosts,
            });
            listener.route_table = Some(table);
        } else {
            listener.protocol = model::ListenerProtocol::Tcp;
            for server in &entry.servers {
                listener.tcp_routes.extend(tcp_routes(
                    mesh,
                    who,
                    server,
                    port,
                    entry.kind == Kind::Passthrough,
                    &mut out,
                ));
            }
        }
        listeners.push(listener);
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
        security,
    };
    out.notes.extend(notes);
    (config, out.notes)
}

/// Adds the virtual hosts of the VirtualServices bound to `server`'s Gateway for its
/// hosts; an `httpsRedirect` server answers every request with a 301 to https instead.
fn http_vhosts(
    mesh: &Mesh,
    who: &ProxyIdentity,
    server: &ServerEntry,
    port: u16,
    vhosts: &mut Vec<model::VirtualHost>,
    out: &mut Collected,
) {
    let gw_name = &server.gateway;
    let scope = Scope {
        mesh,
        gateway: Some(gw_name),
        node_namespace: &who.namespace,
        node_labels: &who.labels,
        port: None,
    };
    let redirect = || {
        vec![model::Route {
            name: format!("{gw_name} https-redirect"),
            action: model::Action::Redirect(model::Redirect {
                scheme: Some("https".into()),
                status: 301,
                ..Default::default()
            }),
            ..Default::default()
        }]
    };
    let mut covered = false;
    for (r, vs) in &mesh.virtual_services {
        let ns = r.meta.namespace_or_default();
        if !bound_here(ns, vs, Some(gw_name)) {
            continue;
        }
        let domains = domains_for(
            vs.hosts.iter().filter(|h| {
                server
                    .hosts
                    .iter()
                    .any(|sh| host_matches(sh, h) || host_matches(h, sh))
            }),
            port,
        );
        if domains.is_empty() {
            continue;
        }
        covered = true;
        let routes = if server.https_redirect {
            redirect()
        } else {
            http_routes(&scope, ns, &r.meta.name, vs, out)
        };
        match vhosts.iter_mut().find(|v| v.domains == domains) {
            // Several VirtualServices for one host merge, in order.
            Some(v) if !server.https_redirect => v.routes.extend(routes),
            Some(_) => {}
            None => vhosts.push(model::VirtualHost {
                name: format!("{}:{port}", domains[0]),
                domains,
                routes,
            }),
        }
    }
    if server.https_redirect && !covered {
        // Redirect even when no VirtualService is bound yet, as Envoy's require_tls does.
        let domains = domains_for(server.hosts.iter(), port);
        if !domains.is_empty() && !vhosts.iter().any(|v| v.domains == domains) {
            vhosts.push(model::VirtualHost {
                name: format!("{}:{port}", domains[0]),
                domains,
                routes: redirect(),
            });
        }
    }
}

/// `host` and `host:port` for each host.
fn domains_for<'a>(hosts: impl Iterator<Item = &'a String>, port: u16) -> Vec<String> {
    hosts
        .flat_map(|h| [h.clone(), format!("{h}:{port}")])
        .collect()
}

/// The TCP routes (or, for TLS passthrough, the SNI-matched TLS routes) of the
/// VirtualServices bound to `server`'s Gateway.
fn tcp_routes(
    mesh: &Mesh,
    who: &ProxyIdentity,
    server: &ServerEntry,
    port: u16,
    passthrough: bool,
    out: &mut Collected,
) -> Vec<model::TcpRoute> {
    let gw_name = &server.gateway;
    let scope = Scope {
        mesh,
        gateway: Some(gw_name),
        node_namespace: &who.namespace,
        node_labels: &who.labels,
        port: Some(port),
    };
    let mut routes = Vec::new();
    for (r, vs) in &mesh.virtual_services {
        let ns = r.meta.namespace_or_default();
        if !vs.gateways.iter().any(|g| qualify(g, ns) == *gw_name) {
            continue;
        }
        // (port matches, SNI names, destinations) per rule.
        let rules: Vec<(
            bool,
            Vec<String>,
            &[trellis_api::networking::RouteDestination],
        )> = if passthrough {
            vs.tls
                .iter()
                .map(|rule| {
                    let matching: Vec<_> = rule
                        .match_
                        .iter()
                        .filter(|m| m.port == 0 || m.port == u32::from(port))
                        .collect();
                    let sni = matching
                        .iter()
                        .flat_map(|m| m.sni_hosts.iter().cloned())
                        .collect();
                    (
                        rule.match_.is_empty() || !matching.is_empty(),
                        sni,
                        rule.route.as_slice(),
                    )
                })
                .collect()
        } else {
            vs.tcp
                .iter()
                .map(|rule| {
                    let port_ok = rule.match_.is_empty()
                        || rule
                            .match_
                            .iter()
                            .any(|m| m.port == 0 || m.port == u32::from(port));
                    (port_ok, vec![], rule.route.as_slice())
                })
                .collect()
        };
        for (port_ok, sni, route) in rules {
            if !port_ok {
                continue;
            }
            let clusters = route
                .iter()
                .filter_map(|d| {
                    let dest = d.destination.as_ref()?;
                    Some(model::WeightedCluster {
                        cluster: destination(&scope, ns, dest, out),
                        weight: if route.len() == 1 {
                            100
                        } else {
                            d.weight.max(0) as u32
                        },
                        ..Default::default()
                    })
                })
                .collect();
            routes.push(model::TcpRoute {
                name: format!("{ns}/{}", r.meta.name),
                sni,
                clusters,
            });
        }
    }
    routes
}

/// The certificates (and, for MUTUAL, the client CA) of an HTTPS server, from its
/// Secret(s) in the gateway's namespace or from files. Errors say what is missing.
fn server_tls(
    mesh: &Mesh,
    who: &ProxyIdentity,
    tls: &ServerTlsSettings,
    hosts: &[String],
) -> Result<model::TlsServer, String> {
    let mutual = tls.mode == Some(ServerTlsMode::Mutual);
    let mut names: Vec<&String> = tls.credential_names.iter().collect();
    if !tls.credential_name.is_empty() {
        names.insert(0, &tls.credential_name);
    }
    let mut certificates = Vec::new();
    let mut client_ca = None;
    let sni_hosts: Vec<String> = hosts.iter().filter(|h| *h != "*").cloned().collect();
    if !names.is_empty() {
        for name in &names {
            let (ns, secret_name) = name
                .split_once('/')
                .unwrap_or((who.namespace.as_str(), name.as_str()));
            let secret = mesh
                .secret(ns, secret_name)
                .ok_or_else(|| format!("Secret {ns}/{secret_name} (credentialName) not found"))?;
            let get = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| secret.get(k))
                    .and_then(|b| String::from_utf8(b).ok())
            };
            let cert = get(&["tls.crt", "cert"])
                .ok_or_else(|| format!("Secret {ns}/{secret_name} has no tls.crt"))?;
            let key = get(&["tls.key", "key"])
                .ok_or_else(|| format!("Secret {ns}/{secret_name} has no tls.key"))?;
            check_pem(&cert, &key, &format!("Secret {ns}/{secret_name}"))?;
            if client_ca.is_none() {
                client_ca = get(&["ca.crt", "cacert"]);
            }
            certificates.push(model::TlsCertificate {
                sni_hosts: sni_hosts.clone(),
                cert_chain_pem: cert,
                private_key_pem: key,
            });
        }
        if mutual && client_ca.is_none() {
            let ca_name = if tls.ca_cert_credential_name.is_empty() {
                format!("{}-cacert", names[0])
            } else {
                tls.ca_cert_credential_name.clone()
            };
            let (ns, ca_name) = ca_name
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or((who.namespace.clone(), ca_name));
            client_ca = mesh
                .secret(&ns, &ca_name)
                .and_then(|s| s.get("ca.crt").or_else(|| s.get("cacert")))
                .and_then(|b| String::from_utf8(b).ok());
        }
    } else if !tls.server_certificate.is_empty() && !tls.private_key.is_empty() {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
        };
        let cert = read(&tls.server_certificate)?;
        let key = read(&tls.private_key)?;
        check_pem(&cert, &key, &tls.server_certificate)?;
        if mutual && !tls.ca_certificates.is_empty() {
            client_ca = Some(read(&tls.ca_certificates)?);
        }
        certificates.push(model::TlsCertificate {
            sni_hosts,
            cert_chain_pem: cert,
            private_key_pem: key,
        });
    } else {
        return Err("no credentialName nor serverCertificate/privateKey".into());
    }
    if mutual && client_ca.is_none() {
        return Err("MUTUAL TLS without a CA certificate (ca.crt, a <name>-cacert Secret, or caCertificates)".into());
    }
    Ok(model::TlsServer {
        mode: if mutual {
            model::TlsMode::Mutual
        } else {
            model::TlsMode::Simple
        },
        certificates,
        alpn: vec!["h2".into(), "http/1.1".into()],
        client_ca_pem: if mutual { client_ca } else { None },
    })
}

/// A cheap sanity check, so that a broken Secret skips one server rather than the
/// proxy refusing the whole config.
fn check_pem(cert: &str, key: &str, source: &str) -> Result<(), String> {
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{source}: the certificate is not PEM"));
    }
    if !key.contains("-----BEGIN") || !key.contains("PRIVATE KEY-----") {
        return Err(format!("{source}: the private key is not PEM"));
    }
    Ok(())
}
