//! VirtualService HTTP and TCP rules as proxy routes: matches that do not apply to
//! this proxy (gateways, source labels, another port) are dropped at compile time;
//! destinations become cluster names; Istio's defaults (retries) are filled in.

use std::collections::BTreeMap;

use trellis_api::networking::{
    Destination, HeaderOperations, HttpMatchRequest, HttpRoute, StringMatch, VirtualService,
};
use trellis_model as model;

use crate::Note;
use crate::cluster::{build, cluster_name};
use crate::mesh::{Mesh, fqdn};

/// What a rule is compiled for.
pub struct Scope<'a> {
    pub mesh: &'a Mesh,
    /// `namespace/name` of the gateway, or `None` for sidecars (the `mesh` gateway).
    pub gateway: Option<&'a str>,
    pub node_namespace: &'a str,
    pub node_labels: &'a BTreeMap<String, String>,
    /// For sidecars: the service port this virtual host serves.
    pub port: Option<u16>,
}

/// Clusters referenced by compiled routes, and notes for the user.
#[derive(Default)]
pub struct Collected {
    pub clusters: BTreeMap<String, model::Cluster>,
    pub notes: Vec<Note>,
}

/// True when `vs` applies to the scope's gateway (or to sidecars).
pub fn bound_here(vs_namespace: &str, vs: &VirtualService, gateway: Option<&str>) -> bool {
    match gateway {
        None => vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"),
        Some(gw) => vs.gateways.iter().any(|g| qualify(g, vs_namespace) == gw),
    }
}

/// `name` in `namespace` → `namespace/name`; `ns/name` stays.
pub fn qualify(gateway: &str, namespace: &str) -> String {
    if gateway.contains('/') {
        gateway.to_string()
    } else {
        format!("{namespace}/{gateway}")
    }
}

/// Compiles the HTTP rules of one VirtualService.
pub fn http_routes(
    scope: &Scope<'_>,
    vs_ns: &str,
    vs_name: &str,
    vs: &VirtualService,
    out: &mut Collected,
) -> Vec<model::Route> {
    vs.http
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            http_route(scope, vs_ns, &format!("{vs_ns}/{vs_name}[{i}]"), rule, out)
        })
        .collect()
}

fn http_route(
    scope: &Scope<'_>,
    vs_ns: &str,
    name: &str,
    rule: &HttpRoute,
    out: &mut Collected,
) -> Option<model::Route> {
    let matches: Vec<model::RouteMatch> = rule
        .match_
        .iter()
        .filter(|m| applies(scope, vs_ns, m))
        .map(|m| route_match(scope, m))
        .collect();
    if !rule.match_.is_empty() && matches.is_empty() {
        return None;
    }
    let action = if let Some(r) = &rule.redirect {
        model::Action::Redirect(model::Redirect {
            uri: (!r.uri.is_empty()).then(|| r.uri.clone()),
            authority: (!r.authority.is_empty()).then(|| r.authority.clone()),
            scheme: (!r.scheme.is_empty()).then(|| r.scheme.clone()),
            port: r.port.map(|p| p.min(65535) as u16),
            status: if r.redirect_code > 0 {
                r.redirect_code as u16
            } else {
                301
            },
        })
    } else if let Some(d) = &rule.direct_response {
        model::Action::DirectResponse {
            status: d.status.min(999) as u16,
            body: d.body.as_ref().and_then(|b| b.string.clone()),
        }
    } else if rule.delegate.is_some() {
        out.notes.push(Note {
            resource: format!("VirtualService {name}"),
            message: "delegate routes are not carried out yet; rule skipped".into(),
        });
        return None;
    } else {
        let single = rule.route.len() == 1;
        let clusters = rule
            .route
            .iter()
            .filter_map(|d| {
                let dest = d.destination.as_ref()?;
                let headers = d.headers.as_ref();
                Some(model::WeightedCluster {
                    cluster: destination(scope, vs_ns, dest, out),
                    weight: if single && d.weight == 0 {
                        100
                    } else {
                        d.weight.max(0) as u32
                    },
                    request_headers: header_ops(headers.and_then(|h| h.request.as_ref())),
                    response_headers: header_ops(headers.and_then(|h| h.response.as_ref())),
                })
            })
            .collect();
        let rewrite = rule.rewrite.as_ref().map(|r| model::Rewrite {
            uri: (!r.uri.is_empty()).then(|| r.uri.clone()),
            uri_regex: r
                .uri_regex_rewrite
                .as_ref()
                .map(|x| (x.match_.clone(), x.rewrite.clone())),
            authority: (!r.authority.is_empty()).then(|| r.authority.clone()),
        });
        model::Action::Forward(model::Forward { clusters, rewrite })
    };
    let mut mirrors = Vec::new();
    if let Some(m) = &rule.mirror {
        let percent = rule
            .mirror_percentage
            .map(|p| p.value)
            .or(rule.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(model::Mirror {
            cluster: destination(scope, vs_ns, m, out),
            percent,
        });
    }
    for m in &rule.mirrors {
        if let Some(d) = &m.destination {
            mirrors.push(model::Mirror {
                cluster: destination(scope, vs_ns, d, out),
                percent: m.percentage.map_or(100.0, |p| p.value),
            });
        }
    }
    let headers = rule.headers.as_ref();
    Some(model::Route {
        name: name.to_string(),
        matches,
        action,
        timeout_ms: rule.timeout.map(|t| t.get().as_millis() as u64),
        retry: Some(retry(rule)),
        fault: rule.fault.as_ref().map(fault),
        mirrors,
        request_headers: header_ops(headers.and_then(|h| h.request.as_ref())),
        response_headers: header_ops(headers.and_then(|h| h.response.as_ref())),
        cors: rule.cors_policy.as_ref().map(|c| model::CorsPolicy {
            allow_origins: c
                .allow_origins
                .iter()
                .filter_map(string_match)
                .chain(
                    c.allow_origin
                        .iter()
                        .map(|o| model::StringMatch::Exact(o.clone())),
                )
                .collect(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_secs: c.max_age.map(|d| d.get().as_secs()),
            allow_credentials: c.allow_credentials,
        }),
    })
}

/// Whether a match block can ever apply to this proxy.
fn applies(scope: &Scope<'_>, vs_ns: &str, m: &HttpMatchRequest) -> bool {
    let gateway_ok = match scope.gateway {
        None => m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"),
        Some(gw) => m.gateways.is_empty() || m.gateways.iter().any(|g| qualify(g, vs_ns) == gw),
    };
    let labels_ok = m
        .source_labels
        .iter()
        .all(|(k, v)| scope.node_labels.get(k) == Some(v));
    let ns_ok = m.source_namespace.is_empty() || m.source_namespace == scope.node_namespace;
    let port_ok = match scope.port {
        Some(p) => m.port == 0 || m.port == u32::from(p),
        None => true,
    };
    gateway_ok && labels_ok && ns_ok && port_ok
}

fn route_match(scope: &Scope<'_>, m: &HttpMatchRequest) -> model::RouteMatch {
    let header = |(name, sm): (&String, &StringMatch), invert: bool| model::HeaderMatch {
        name: name.clone(),
        value: string_match(sm).filter(
            |v| !matches!(v, model::StringMatch::Exact(e) if e.is_empty() && sm.exact.is_none()),
        ),
        invert,
    };
    model::RouteMatch {
        uri: m.uri.as_ref().and_then(string_match),
        scheme: m.scheme.as_ref().and_then(string_match),
        method: m.method.as_ref().and_then(string_match),
        authority: m.authority.as_ref().and_then(string_match),
        headers: m
            .headers
            .iter()
            .map(|h| header(h, false))
            .chain(m.without_headers.iter().map(|h| header(h, true)))
            .collect(),
        query_params: m.query_params.iter().map(|h| header(h, false)).collect(),
        ignore_uri_case: m.ignore_uri_case,
        // Sidecars filtered by port already; gateways match the listener's port.
        port: if scope.port.is_none() && m.port > 0 {
            Some(m.port.min(65535) as u16)
        } else {
            None
        },
        source_labels: BTreeMap::new(),
        source_namespace: None,
    }
}

fn string_match(m: &StringMatch) -> Option<model::StringMatch> {
    if let Some(e) = &m.exact {
        Some(model::StringMatch::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(model::StringMatch::Prefix(p.clone()))
    } else {
        m.regex
            .as_ref()
            .map(|r| model::StringMatch::Regex(r.clone()))
    }
}

/// The cluster for a destination, building it on first reference.
pub fn destination(
    scope: &Scope<'_>,
    vs_ns: &str,
    dest: &Destination,
    out: &mut Collected,
) -> String {
    let hostname = fqdn(&dest.host, vs_ns);
    let service = scope.mesh.service(&hostname);
    let port = dest
        .port
        .as_ref()
        .map(|p| p.number.min(65535) as u16)
        .filter(|p| *p > 0);
    let Some(service) = service else {
        let port = port.or(scope.port).unwrap_or(80);
        let name = cluster_name(port, &dest.subset, &hostname);
        out.notes.push(Note {
            resource: format!("host {hostname}"),
            message: "no Service or ServiceEntry defines this host; requests to it get 503 (UH)"
                .into(),
        });
        out.clusters
            .entry(name.clone())
            .or_insert_with(|| model::Cluster {
                name: name.clone(),
                service: hostname,
                ..Default::default()
            });
        return name;
    };
    let chosen = match port {
        Some(p) => service.ports.iter().find(|sp| sp.number == p),
        None if service.ports.len() == 1 => service.ports.first(),
        None => scope
            .port
            .and_then(|p| service.ports.iter().find(|sp| sp.number == p))
            .or(service.ports.first()),
    };
    let Some(chosen) = chosen else {
        let p = port.unwrap_or(80);
        let name = cluster_name(p, &dest.subset, &hostname);
        out.clusters
            .entry(name.clone())
            .or_insert_with(|| model::Cluster {
                name: name.clone(),
                service: hostname,
                ..Default::default()
            });
        return name;
    };
    let name = cluster_name(chosen.number, &dest.subset, &hostname);
    if !out.clusters.contains_key(&name) {
        out.clusters.insert(
            name.clone(),
            build(
                scope.mesh,
                service,
                chosen,
                &dest.subset,
                scope.node_namespace,
            ),
        );
    }
    name
}

/// Istio's retry policy where a rule names none: two attempts on connection trouble
/// and 503 (the mesh config's default `retryOn`).
pub(crate) fn default_retry() -> model::RetryPolicy {
    model::RetryPolicy {
        attempts: 2,
        per_try_timeout_ms: None,
        retry_on: DEFAULT_RETRY_ON.map(String::from).to_vec(),
        retriable_status_codes: vec![503],
    }
}

const DEFAULT_RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
];

/// The rule's retry policy: its own `retries`, with Istio's defaults for what it omits.
fn retry(rule: &HttpRoute) -> model::RetryPolicy {
    let Some(r) = &rule.retries else {
        return default_retry();
    };
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    for part in r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match part.parse::<u16>() {
            Ok(code) => codes.push(code),
            Err(_) => retry_on.push(part.to_string()),
        }
    }
    if !codes.is_empty() && !retry_on.iter().any(|c| c == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".into());
    }
    if r.retry_on.is_empty() {
        let default = default_retry();
        retry_on = default.retry_on;
        codes.extend(default.retriable_status_codes);
    }
    model::RetryPolicy {
        attempts: r.attempts.max(0) as u32,
        per_try_timeout_ms: r.per_try_timeout.map(|d| d.get().as_millis() as u64),
        retry_on,
        retriable_status_codes: codes,
    }
}

fn fault(f: &trellis_api::networking::HttpFaultInjection) -> model::Fault {
    model::Fault {
        delay: f.delay.as_ref().and_then(|d| {
            let delay = d.fixed_delay.or(d.exponential_delay)?;
            let percent = d.percentage.map(|p| p.value).unwrap_or(if d.percent > 0 {
                f64::from(d.percent)
            } else {
                100.0
            });
            Some(model::FaultDelay {
                percent,
                delay_ms: delay.get().as_millis() as u64,
            })
        }),
        abort: f.abort.as_ref().map(|a| model::FaultAbort {
            percent: a.percentage.map_or(100.0, |p| p.value),
            http_status: a.http_status.map(|s| s.clamp(0, 999) as u16),
            grpc_status: a.grpc_status.as_deref().map(grpc_code),
        }),
    }
}

/// gRPC status names to codes.
fn grpc_code(name: &str) -> u32 {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse().unwrap_or_else(|_| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .unwrap_or(2) as u32
    })
}

fn header_ops(ops: Option<&HeaderOperations>) -> model::HeaderOps {
    let Some(ops) = ops else {
        return model::HeaderOps::default();
    };
    model::HeaderOps {
        set: ops
            .set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        add: ops
            .add
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        remove: ops.remove.clone(),
    }
}
