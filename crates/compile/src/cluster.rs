//! Clusters from services and DestinationRules: which endpoints a (service, port,
//! subset) has, and the traffic policy that applies — subset policy over the
//! rule's, port-level settings over both, as Istio merges them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use trellis_api::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, Protocol, SimpleLb, TrafficPolicy,
};
use trellis_api::values::IntOrString;
use trellis_model as model;

use crate::mesh::{Mesh, Service, ServicePort, Workload, fqdn, host_matches};

/// Istio's name for an outbound cluster.
pub fn cluster_name(port: u16, subset: &str, hostname: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

/// The DestinationRule for `hostname`, preferring the caller's namespace, then the
/// service's, then any (Istio's lookup order, without exportTo).
pub fn destination_rule<'a>(
    mesh: &'a Mesh,
    hostname: &str,
    caller_ns: &str,
    service_ns: &str,
) -> Option<&'a DestinationRule> {
    let candidates = mesh.destination_rules_for(hostname);
    let matching = || {
        candidates
            .iter()
            .filter_map(|i| mesh.destination_rules.get(*i))
            .filter(move |(r, dr)| {
                let host = fqdn(&dr.host, r.meta.namespace_or_default());
                host_matches(&host, hostname)
            })
    };
    let in_ns = |ns: &str| {
        matching()
            .find(|(r, _)| r.meta.namespace_or_default() == ns)
            .map(|(_, dr)| dr)
    };
    in_ns(caller_ns)
        .or_else(|| in_ns(service_ns))
        .or_else(|| matching().next().map(|(_, dr)| dr))
}

/// Builds the cluster for one service port and subset.
pub fn build(
    mesh: &Mesh,
    service: &Service,
    port: &ServicePort,
    subset: &str,
    caller_ns: &str,
) -> model::Cluster {
    let dr = destination_rule(mesh, &service.hostname, caller_ns, &service.namespace);
    let empty = BTreeMap::new();
    let subset_spec = dr.and_then(|d| d.subsets.iter().find(|s| s.name == subset));
    let labels = subset_spec.map_or(&empty, |s| &s.labels);
    let policy = merged_policy(
        dr.and_then(|d| d.traffic_policy.as_ref()),
        subset_spec.and_then(|s| s.traffic_policy.as_ref()),
        port.number,
    );
    let endpoints: Vec<model::Endpoint> = mesh
        .endpoints_of(service, labels)
        .filter_map(|w| endpoint(w, port, &mesh.trust_domain))
        .collect();
    let mesh_tls = mesh_tls(
        policy.tls.as_ref(),
        &endpoints,
        &cluster_sni(port.number, subset, &service.hostname),
    );
    let protocol = match port.protocol {
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => model::UpstreamProtocol::Http2,
        Protocol::Http => model::UpstreamProtocol::Http1,
        p if p.is_tcp() => model::UpstreamProtocol::Tcp,
        _ => model::UpstreamProtocol::Auto,
    };
    model::Cluster {
        name: cluster_name(port.number, subset, &service.hostname),
        service: service.hostname.clone(),
        protocol,
        lb: load_balancer(policy.load_balancer.as_ref()),
        pool: pool(policy.connection_pool.as_ref()),
        outlier: policy.outlier_detection.as_ref().map(outlier),
        endpoints,
        tls: policy
            .tls
            .as_ref()
            .and_then(|t| upstream_tls(mesh, t, &service.hostname, caller_ns)),
        mesh_tls,
    }
}

/// Istio's SNI for mesh mTLS to a cluster: `outbound_.PORT_.SUBSET_.HOST`.
fn cluster_sni(port: u16, subset: &str, hostname: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{hostname}")
}

/// The mesh's mutual TLS for a cluster: forced by DestinationRule `ISTIO_MUTUAL`, off
/// with any other `tls` mode, else automatic (to the endpoints that have a sidecar;
/// none when no endpoint has one). The server must present one of the service
/// accounts of the cluster's endpoints (or the rule's `subjectAltNames`).
fn mesh_tls(
    tls: Option<&ClientTlsSettings>,
    endpoints: &[model::Endpoint],
    sni: &str,
) -> Option<model::MeshTls> {
    let mut identities: Vec<String> = endpoints
        .iter()
        .filter(|e| {
            e.mtls
                || matches!(
                    tls.map(ClientTlsSettings::mode),
                    Some(ClientTlsMode::IstioMutual)
                )
        })
        .map(|e| e.workload.principal.clone())
        .filter(|p| !p.is_empty())
        .collect();
    identities.sort();
    identities.dedup();
    let mode = match tls.map(|t| (t.mode(), t)) {
        Some((ClientTlsMode::IstioMutual, t)) => {
            if !t.subject_alt_names.is_empty() {
                identities = t.subject_alt_names.clone();
            }
            model::MeshTlsMode::Istio
        }
        // An explicit mode (DISABLE, SIMPLE, MUTUAL) leaves the mesh's TLS out.
        Some((_, t)) if t.mode.is_some() => return None,
        _ if endpoints.iter().any(|e| e.mtls) => model::MeshTlsMode::Auto,
        _ => return None,
    };
    Some(model::MeshTls {
        mode,
        identities,
        sni: sni.to_string(),
    })
}

/// TLS origination for SIMPLE and MUTUAL. DISABLE is plaintext; ISTIO_MUTUAL is the
/// mesh's own mTLS ([`mesh_tls`]). Certificates come from files or from the
/// `credentialName` Secret in the proxy's namespace (`tls.crt`, `tls.key`, `ca.crt`).
fn upstream_tls(
    mesh: &Mesh,
    tls: &ClientTlsSettings,
    host: &str,
    proxy_ns: &str,
) -> Option<model::UpstreamTls> {
    let mutual = match tls.mode() {
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
        ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
    };
    let mut out = model::UpstreamTls {
        sni: if tls.sni.is_empty() {
            host.to_string()
        } else {
            tls.sni.clone()
        },
        subject_alt_names: tls.subject_alt_names.clone(),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        ..Default::default()
    };
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let found: Result<(), String> = (|| {
        if !tls.credential_name.is_empty() {
            let (ns, name) = tls
                .credential_name
                .split_once('/')
                .unwrap_or((proxy_ns, tls.credential_name.as_str()));
            let secret = mesh
                .secret(ns, name)
                .ok_or_else(|| format!("Secret {ns}/{name} (credentialName) not found"))?;
            let get = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| secret.get(k))
                    .and_then(|b| String::from_utf8(b).ok())
            };
            out.ca_pem = get(&["ca.crt", "cacert"]);
            if mutual {
                out.client_cert_pem = Some(
                    get(&["tls.crt", "cert"])
                        .ok_or_else(|| format!("Secret {ns}/{name} has no tls.crt"))?,
                );
                out.client_key_pem = Some(
                    get(&["tls.key", "key"])
                        .ok_or_else(|| format!("Secret {ns}/{name} has no tls.key"))?,
                );
            }
            return Ok(());
        }
        if !tls.ca_certificates.is_empty() {
            out.ca_pem = Some(read(&tls.ca_certificates)?);
        }
        if mutual {
            if tls.client_certificate.is_empty() || tls.private_key.is_empty() {
                return Err(
                    "MUTUAL needs clientCertificate and privateKey, or credentialName".into(),
                );
            }
            out.client_cert_pem = Some(read(&tls.client_certificate)?);
            out.client_key_pem = Some(read(&tls.private_key)?);
        }
        Ok(())
    })();
    if let Err(problem) = found {
        out.problem = Some(problem);
    }
    Some(out)
}

fn endpoint(w: &Workload, port: &ServicePort, trust_domain: &str) -> Option<model::Endpoint> {
    let ip = w.address?;
    // A named target port is looked up on the workload; a WorkloadEntry may also map
    // the service port's name to its own port.
    let number = match &port.target {
        IntOrString::String(name) => w.ports.get(name).copied().unwrap_or(port.number),
        IntOrString::Int(n) if *n > 0 => w.ports.get(&port.name).copied().unwrap_or(*n as u16),
        _ => w.ports.get(&port.name).copied().unwrap_or(port.number),
    };
    Some(model::Endpoint {
        address: Some(SocketAddr::new(ip, number)),
        weight: 1,
        labels: w.labels.clone(),
        workload: model::Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            app: w.labels.get("app").cloned().unwrap_or_default(),
            version: w.labels.get("version").cloned().unwrap_or_default(),
            principal: if w.service_account.is_empty() {
                String::new()
            } else {
                format!(
                    "spiffe://{trust_domain}/ns/{}/sa/{}",
                    w.namespace, w.service_account
                )
            },
            labels: Default::default(),
        },
        mtls: w.sidecar,
    })
}

/// The policy in force: subset fields replace the rule's, port-level settings replace both.
fn merged_policy(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> TrafficPolicy {
    let mut out = top.cloned().unwrap_or_default();
    if let Some(s) = subset {
        if s.load_balancer.is_some() {
            out.load_balancer = s.load_balancer.clone();
        }
        if s.connection_pool.is_some() {
            out.connection_pool = s.connection_pool.clone();
        }
        if s.outlier_detection.is_some() {
            out.outlier_detection = s.outlier_detection.clone();
        }
        if s.tls.is_some() {
            out.tls = s.tls.clone();
        }
        if !s.port_level_settings.is_empty() {
            out.port_level_settings = s.port_level_settings.clone();
        }
    }
    let port_level = out
        .port_level_settings
        .iter()
        .find(|p| {
            p.port
                .as_ref()
                .is_some_and(|sel| sel.number == u32::from(port))
        })
        .cloned();
    if let Some(p) = port_level {
        if p.load_balancer.is_some() {
            out.load_balancer = p.load_balancer;
        }
        if p.connection_pool.is_some() {
            out.connection_pool = p.connection_pool;
        }
        if p.outlier_detection.is_some() {
            out.outlier_detection = p.outlier_detection;
        }
        if p.tls.is_some() {
            out.tls = p.tls;
        }
    }
    out
}

fn load_balancer(lb: Option<&LoadBalancerSettings>) -> model::LoadBalancer {
    let Some(lb) = lb else {
        return model::LoadBalancer::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            model::HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            model::HashKey::Cookie {
                name: c.name.clone(),
                path: (!c.path.is_empty()).then(|| c.path.clone()),
                ttl_secs: c.ttl.map(|t| t.get().as_secs()),
            }
        } else if let Some(q) = &ch.http_query_parameter_name {
            model::HashKey::QueryParameter(q.clone())
        } else {
            model::HashKey::SourceIp
        };
        let algorithm = if ch.maglev.is_some() {
            model::HashAlgorithm::Maglev
        } else {
            model::HashAlgorithm::RingHash
        };
        return model::LoadBalancer::ConsistentHash(model::HashPolicy { key, algorithm });
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => model::LoadBalancer::RoundRobin,
        Some(SimpleLb::Random) => model::LoadBalancer::Random,
        Some(SimpleLb::Passthrough) => model::LoadBalancer::Passthrough,
        // Istio's default (UNSPECIFIED) is least request.
        _ => model::LoadBalancer::LeastRequest,
    }
}

fn ms(d: Option<trellis_api::values::Duration>) -> u64 {
    d.map_or(0, |d| d.get().as_millis() as u64)
}

fn pool(p: Option<&ConnectionPoolSettings>) -> model::ConnectionPool {
    let mut out = model::ConnectionPool::default();
    let Some(p) = p else { return out };
    let positive = |n: i32| n.max(0) as u32;
    if let Some(tcp) = &p.tcp {
        out.max_connections = positive(tcp.max_connections);
        out.connect_timeout_ms = ms(tcp.connect_timeout);
        out.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| model::TcpKeepalive {
            probes: k.probes,
            time_ms: ms(k.time),
            interval_ms: ms(k.interval),
        });
    }
    if let Some(http) = &p.http {
        out.max_pending_requests = positive(http.http1_max_pending_requests);
        out.max_requests = positive(http.http2_max_requests);
        out.max_requests_per_connection = positive(http.max_requests_per_connection);
        out.max_retries = positive(http.max_retries);
        out.idle_timeout_ms = ms(http.idle_timeout);
        out.h2_upgrade = http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade);
    }
    out
}

/// Istio's defaults when `outlierDetection` is present: 5 consecutive 5xx, 10s interval,
/// 30s base ejection, at most 10% ejected.
fn outlier(o: &OutlierDetection) -> model::OutlierDetection {
    let consecutive_5xx = o
        .consecutive_5xx_errors
        .unwrap_or(if o.consecutive_errors > 0 {
            o.consecutive_errors as u32
        } else {
            5
        });
    model::OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
        interval_ms: o.interval.map_or(10_000, |d| d.get().as_millis() as u64),
        base_ejection_ms: o
            .base_ejection_time
            .map_or(30_000, |d| d.get().as_millis() as u64),
        max_ejection_percent: if o.max_ejection_percent > 0 {
            o.max_ejection_percent as u32
        } else {
            10
        },
        min_health_percent: o.min_health_percent.max(0) as u32,
    }
}
