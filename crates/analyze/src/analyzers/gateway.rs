//! Checks of networking.istio.io Gateways: the workload and Service behind them, their
//! TLS credentials, and conflicts between Gateways that share a workload.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use trellis_api::Resource;

use super::certs::{check_certificate, now, secret_certificate};
use super::json::{items, number, string_map, text, texts};
use super::names::{NETWORKING, full_name, join_name, ns_of, short_or_full};
use super::selectors::{Labels, gateway_selector, parse_selector, selector_matches, selector_text};
use super::workloads::{pods, pods_selected, services};
use crate::messages::{
    CONFLICTING_GATEWAYS, GATEWAY_DUPLICATE_CERTIFICATE, GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
    INVALID_GATEWAY_CREDENTIAL, REFERENCED_RESOURCE_NOT_FOUND,
};
use crate::{Analyzer, Context, Reporter};

fn gateways<'c>(cx: &'c Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of(NETWORKING, "Gateway")
}

fn servers(gw: &Resource) -> &[Value] {
    items(&gw.raw["spec"]["servers"])
}

fn describe_selector(selector: &Labels) -> String {
    if selector.is_empty() {
        "an empty selector".to_string()
    } else {
        format!("selector `{}`", selector_text(selector))
    }
}

/// Reports a Gateway whose selector matches no Pod.
fn report_no_workload(out: &mut Reporter, gw: &Resource, selector: &Labels) {
    out.report(
        &REFERENCED_RESOURCE_NOT_FOUND,
        gw,
        Some("spec.selector"),
        format!(
            "no gateway Pod matches {}; check the labels of your gateway deployment \
             (the default ingress gateway is `istio: ingressgateway`)",
            describe_selector(selector)
        ),
    );
}

/// `gateway.IngressGatewayPortAnalyzer`: each server port of a Gateway must be offered
/// by a Service in front of the gateway Pods it selects.
pub struct IngressGatewayPortAnalyzer;

impl Analyzer for IngressGatewayPortAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.IngressGatewayPortAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks a gateway's ports against the gateway's Kubernetes service ports"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let mut services_by_ns: HashMap<&str, Vec<&Resource>> = HashMap::new();
        for svc in services(cx) {
            services_by_ns.entry(ns_of(svc)).or_default().push(svc);
        }
        for gw in gateways(cx) {
            let selector = gateway_selector(gw);
            let mut matched = 0;
            let mut ports = BTreeSet::new();
            for pod in pods_selected(cx, &selector) {
                matched += 1;
                for svc in services_by_ns.get(ns_of(pod)).into_iter().flatten() {
                    let svc_selector = string_map(&svc.raw["spec"]["selector"]);
                    if !selector_matches(&svc_selector, &pod.meta.labels) {
                        continue;
                    }
                    for port in items(&svc.raw["spec"]["ports"]) {
                        // Kubernetes defaults a Service port's protocol to TCP.
                        let protocol = port["protocol"].as_str().unwrap_or("TCP");
                        if protocol != "TCP" {
                            continue;
                        }
                        ports.insert(number(&port["port"]));
                        let target = number(&port["targetPort"]);
                        if target != 0 {
                            ports.insert(target);
                        }
                    }
                }
            }
            if matched == 0 {
                report_no_workload(out, gw, &selector);
                continue;
            }
            for (i, server) in servers(gw).iter().enumerate() {
                let port = &server["port"];
                if port.is_null() {
                    continue;
                }
                let n = number(&port["number"]);
                if !ports.contains(&n) {
                    out.report(
                        &GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                        gw,
                        Some(&format!("spec.servers[{i}].port.number")),
                        format!(
                            "the gateway listens on port {n}, but no Service in front of the \
                             Pods matching {} exposes it (as `port` or `targetPort`); add the \
                             port to the gateway's Service or the traffic cannot reach it",
                            describe_selector(&selector)
                        ),
                    );
                }
            }
        }
    }
}

/// One server's hosts and bind address, as recorded for conflict detection.
struct ServerHosts {
    hosts: Vec<String>,
    bind: String,
}

/// `gateway.ConflictingGatewayAnalyzer`: two Gateways on the same workload must not
/// declare the same host on the same port.
pub struct ConflictingGatewayAnalyzer;

impl Analyzer for ConflictingGatewayAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.ConflictingGatewayAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks a gateway's selector, port number and hosts"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        // (selector, port) -> gateway -> servers on that port
        let mut by_key: BTreeMap<(String, u64), BTreeMap<String, Vec<ServerHosts>>> =
            BTreeMap::new();
        for gw in gateways(cx) {
            let selector = selector_text(&gateway_selector(gw));
            for server in servers(gw) {
                let port = number(&server["port"]["number"]);
                by_key
                    .entry((selector.clone(), port))
                    .or_default()
                    .entry(full_name(gw))
                    .or_default()
                    .push(ServerHosts {
                        hosts: texts(&server["hosts"]),
                        bind: text(&server["bind"]).to_string(),
                    });
            }
        }
        for gw in gateways(cx) {
            let name = full_name(gw);
            let selector = gateway_selector(gw);
            let sel = selector_text(&selector);
            // Selectors that pick the same workload: equal, or one contained in the
            // other with a Pod matched by both.
            let mut same_workload = Vec::new();
            let selectors: BTreeSet<&String> = by_key.keys().map(|(s, _)| s).collect();
            for other in selectors {
                let hit = *other == sel
                    || ((other.contains(sel.as_str()) || sel.contains(other.as_str()))
                        && pods(cx).any(|p| {
                            selector_matches(&selector, &p.meta.labels)
                                && selector_matches(&parse_selector(other), &p.meta.labels)
                        }));
                if hit {
                    same_workload.push(other.clone());
                }
            }
            if !sel.is_empty() && same_workload.is_empty() {
                if servers(gw).is_empty() {
                    out.report(
                        &REFERENCED_RESOURCE_NOT_FOUND,
                        gw,
                        Some("spec.selector"),
                        format!(
                            "no Gateway server is bound to {}: this Gateway declares no \
                             servers; add `servers:` or delete the Gateway",
                            describe_selector(&selector)
                        ),
                    );
                } else {
                    report_no_workload(out, gw, &selector);
                }
                continue;
            }
            for (i, server) in servers(gw).iter().enumerate() {
                let port = number(&server["port"]["number"]);
                let hosts = texts(&server["hosts"]);
                let bind = text(&server["bind"]);
                let mut conflicts = BTreeSet::new();
                for other_sel in &same_workload {
                    let Some(others) = by_key.get(&(other_sel.clone(), port)) else {
                        continue;
                    };
                    for (other, their_servers) in others {
                        if *other == name {
                            continue;
                        }
                        // The last server recorded for a gateway on a key wins, as in Istio.
                        let Some(theirs) = their_servers.last() else {
                            continue;
                        };
                        if hosts
                            .iter()
                            .any(|h| theirs.hosts.contains(h) && theirs.bind == bind)
                        {
                            conflicts.insert(other.clone());
                        }
                    }
                }
                if !conflicts.is_empty() {
                    out.report(
                        &CONFLICTING_GATEWAYS,
                        gw,
                        Some(&format!("spec.servers[{i}]")),
                        format!(
                            "port {port} with hosts {} is also declared by {} on the same \
                             gateway workload ({}); only one of them takes effect, so merge \
                             the servers into one Gateway or use different hosts or ports",
                            hosts.join(", "),
                            conflicts.into_iter().collect::<Vec<_>>().join(", "),
                            describe_selector(&selector)
                        ),
                    );
                }
            }
        }
    }
}

/// `gateway.SecretAnalyzer`: the `credentialName` of a TLS server must name a Secret in
/// the namespace of the gateway workload, holding a valid certificate.
pub struct SecretAnalyzer;

impl Analyzer for SecretAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.SecretAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks a gateway's referenced secrets for correctness"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let now = now();
        for gw in gateways(cx) {
            let selector = gateway_selector(gw);
            // The credential is read where the gateway runs, not where the Gateway is.
            let workload_ns = pods_selected(cx, &selector).next().map(ns_of).unwrap_or("");
            if workload_ns.is_empty() {
                report_no_workload(out, gw, &selector);
                continue;
            }
            for (i, server) in servers(gw).iter().enumerate() {
                let credential = text(&server["tls"]["credentialName"]);
                if credential.is_empty() {
                    continue;
                }
                let path = format!("spec.servers[{i}].tls.credentialName");
                let (secret_ns, secret_name) = short_or_full(workload_ns, credential);
                let Some(secret) = cx.find("", "Secret", &secret_ns, &secret_name) else {
                    out.report(
                        &REFERENCED_RESOURCE_NOT_FOUND,
                        gw,
                        Some(&path),
                        format!(
                            "credentialName `{credential}`: no Secret {} exists; the gateway \
                             workload runs in namespace `{workload_ns}`, so create the Secret \
                             there",
                            join_name(&secret_ns, &secret_name)
                        ),
                    );
                    continue;
                };
                let problem = match secret_certificate(secret) {
                    Err(e) => Some(e.to_string()),
                    Ok(cert) => check_certificate(&cert, now).err().map(str::to_string),
                };
                if let Some(problem) = problem {
                    out.report(
                        &INVALID_GATEWAY_CREDENTIAL,
                        gw,
                        Some(&path),
                        format!(
                            "credentialName `{credential}` names Secret {} that the gateway \
                             cannot serve: {problem}; put a current PEM certificate and its \
                             key in it",
                            full_name(secret)
                        ),
                    );
                }
            }
        }
    }
}

/// `gateway.CertificateAnalyzer`: Gateways on the same workload should not serve the
/// same certificate (HTTP/2 connection reuse then sends requests to the wrong server).
pub struct CertificateAnalyzer;

/// True when two server `tls:` blocks name the same certificate.
fn same_certificate(a: &Value, b: &Value) -> bool {
    let (ca, cb) = (text(&a["credentialName"]), text(&b["credentialName"]));
    if !ca.is_empty() && !cb.is_empty() {
        return ca == cb;
    }
    if ca.is_empty() && cb.is_empty() {
        let (sa, sb) = (text(&a["serverCertificate"]), text(&b["serverCertificate"]));
        let (ka, kb) = (text(&a["privateKey"]), text(&b["privateKey"]));
        return !sa.is_empty() && sa == sb && !ka.is_empty() && ka == kb;
    }
    false
}

impl Analyzer for CertificateAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.CertificateAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks a gateway certificate"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for gw in gateways(cx) {
            let name = full_name(gw);
            let selector = gateway_selector(gw);
            // Gateways whose selector includes all of this one's labels.
            let peers = gateways(cx).filter(|other| {
                full_name(other) != name && selector_matches(&selector, &gateway_selector(other))
            });
            for other in peers {
                for mine in servers(gw) {
                    for theirs in servers(other) {
                        let (ta, tb) = (&mine["tls"], &theirs["tls"]);
                        if ta.is_null() || tb.is_null() || !same_certificate(ta, tb) {
                            continue;
                        }
                        out.report(
                            &GATEWAY_DUPLICATE_CERTIFICATE,
                            gw,
                            Some("metadata.name"),
                            format!(
                                "this Gateway and {} serve the same certificate on the same \
                                 gateway workload; HTTP/2 clients may reuse a connection across \
                                 their hosts and get 404s, so give each Gateway its own \
                                 certificate",
                                full_name(other)
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_compare_by_credential_or_files() {
        let cred = |c: &str| serde_json::json!({"credentialName": c});
        assert!(same_certificate(&cred("a"), &cred("a")));
        assert!(!same_certificate(&cred("a"), &cred("b")));
        let files = |c: &str, k: &str| serde_json::json!({"serverCertificate": c, "privateKey": k});
        assert!(same_certificate(&files("c", "k"), &files("c", "k")));
        assert!(!same_certificate(&files("c", "k"), &files("c", "other")));
        assert!(!same_certificate(&files("c", ""), &files("c", "")));
        assert!(!same_certificate(&cred("a"), &files("c", "k")));
    }
}
