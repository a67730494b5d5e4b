//! DestinationRule analyzers: TLS origination without server verification, and hosts
//! or subsets that lead nowhere.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use trellis_api::Resource;

use super::hosts::ServiceHosts;
use super::json::{scalar_text, string_map, text, texts};
use super::names::{NETWORKING, full_name, ns_of};
use super::selectors::{Labels, selector_matches};
use super::workloads::pods;
use crate::messages::{
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS, NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL, UNKNOWN_DESTINATION_RULE_HOST,
};
use crate::{Analyzer, Context, Reporter};

/// `SIMPLE` or `MUTUAL` TLS without `caCertificates`: the server's certificate is not checked.
pub struct CaCertificateAnalyzer;

/// The TLS mode of a `tls:` block when it originates TLS and leaves the server
/// unverified; `None` when the block is fine.
fn unverified_mode(tls: &Value, has_workload_selector: bool) -> Option<&str> {
    let mode = text(&tls["mode"]);
    if mode != "SIMPLE" && mode != "MUTUAL" {
        return None;
    }
    if !text(&tls["caCertificates"]).is_empty() {
        return None;
    }
    // A credentialName bound to selected workloads carries its own CA (the secret's
    // ca.crt), so Istio accepts it there.
    if !text(&tls["credentialName"]).is_empty() && has_workload_selector {
        return None;
    }
    Some(mode)
}

impl Analyzer for CaCertificateAnalyzer {
    fn name(&self) -> &'static str {
        "destinationrule.CaCertificateAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that caCertificates is set when a DestinationRule originates SIMPLE or MUTUAL TLS"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for dr in cx.of(NETWORKING, "DestinationRule") {
            let spec = &dr.raw["spec"];
            let host = text(&spec["host"]);
            let selected = !spec["workloadSelector"].is_null();
            let policy = &spec["trafficPolicy"];
            if let Some(mode) = unverified_mode(&policy["tls"], selected) {
                out.report(
                    &NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                    dr,
                    Some("spec.trafficPolicy.tls.mode"),
                    format!(
                        "DestinationRule {} originates {mode} TLS to {host} without caCertificates, \
                         so the server's certificate is not verified; set \
                         trafficPolicy.tls.caCertificates (or a credentialName holding a CA)",
                        full_name(dr)
                    ),
                );
            }
            let ports = policy["portLevelSettings"].as_array().into_iter().flatten();
            for (i, port) in ports.enumerate() {
                if let Some(mode) = unverified_mode(&port["tls"], selected) {
                    let number = scalar_text(&port["port"]["number"]).unwrap_or_else(|| "?".into());
                    out.report(
                        &NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                        dr,
                        Some(&format!(
                            "spec.trafficPolicy.portLevelSettings[{i}].tls.mode"
                        )),
                        format!(
                            "DestinationRule {} originates {mode} TLS to {host} port {number} \
                             without caCertificates, so the server's certificate is not \
                             verified; set caCertificates in portLevelSettings[{i}].tls",
                            full_name(dr)
                        ),
                    );
                }
            }
        }
    }
}

/// DestinationRule hosts that match no service, and subsets that select no pod.
pub struct SubsetSelectPodAnalyzer;

/// Node labels that Istio copies onto the endpoints of pods scheduled there.
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// The pod's labels plus the topology labels of its node, as the endpoints Istio
/// builds for it carry them. Empty node label values are not copied.
fn endpoint_labels(pod: &Resource, nodes: &HashMap<&str, &Labels>) -> Labels {
    let mut labels = pod.meta.labels.clone();
    let node_name = text(&pod.raw["spec"]["nodeName"]);
    if node_name.is_empty() {
        return labels;
    }
    if let Some(node_labels) = nodes.get(node_name) {
        for key in TOPOLOGY_LABELS {
            if let Some(v) = node_labels.get(*key).filter(|v| !v.is_empty()) {
                labels.insert(key.to_string(), v.clone());
            }
        }
        labels.insert("kubernetes.io/hostname".into(), node_name.to_string());
    }
    labels
}

/// The labels a ServiceEntry's `workloadSelector` adds to every subset's selector
/// (none for a Kubernetes Service, whose endpoints its own selector picks).
fn workload_labels(target: &Resource) -> Labels {
    if target.kind == "ServiceEntry" {
        string_map(&target.raw["spec"]["workloadSelector"]["labels"])
    } else {
        Labels::new()
    }
}

impl Analyzer for SubsetSelectPodAnalyzer {
    fn name(&self) -> &'static str {
        "destinationrule.SubsetSelectPodAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that a DestinationRule's host is a known service and that each subset selects pods"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let services = ServiceHosts::new(cx);
        let nodes: HashMap<&str, &Labels> = cx
            .of("", "Node")
            .map(|n| (n.meta.name.as_str(), &n.meta.labels))
            .collect();
        let endpoints: Vec<Labels> = pods(cx).map(|p| endpoint_labels(p, &nodes)).collect();
        for dr in cx.of(NETWORKING, "DestinationRule") {
            let spec = &dr.raw["spec"];
            let host = text(&spec["host"]);
            let export_to = texts(&spec["exportTo"]);
            let Some(target) = services.lookup(ns_of(dr), &export_to, host) else {
                out.report(
                    &UNKNOWN_DESTINATION_RULE_HOST,
                    dr,
                    Some("spec.host"),
                    format!(
                        "host {host} matches no Service or ServiceEntry visible to namespace \
                         {:?}; check the name (short names resolve in the rule's namespace) \
                         or add the ServiceEntry",
                        ns_of(dr)
                    ),
                );
                continue;
            };
            // Subsets are keyed by name; a repeated name keeps the last definition.
            let mut subsets: BTreeMap<&str, (usize, &Value)> = BTreeMap::new();
            for (i, subset) in spec["subsets"].as_array().into_iter().flatten().enumerate() {
                subsets.insert(text(&subset["name"]), (i, subset));
            }
            for (name, (i, subset)) in subsets {
                let mut selector = workload_labels(target);
                selector.extend(string_map(&subset["labels"]));
                // Like Istio, a matching pod in any namespace will do.
                if endpoints.iter().any(|l| selector_matches(&selector, l)) {
                    continue;
                }
                out.report(
                    &DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                    dr,
                    Some(&format!("spec.subsets[{i}].labels")),
                    format!(
                        "subset {name:?} selects no pod, so traffic routed to it fails with \
                         503 (no healthy upstream); fix its labels or deploy the workload"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_name_counts_only_with_a_workload_selector() {
        let tls = json!({"mode": "SIMPLE", "credentialName": "c"});
        assert_eq!(unverified_mode(&tls, false), Some("SIMPLE"));
        assert_eq!(unverified_mode(&tls, true), None);
        let tls = json!({"mode": "MUTUAL", "caCertificates": "/ca.pem"});
        assert_eq!(unverified_mode(&tls, false), None);
        assert_eq!(
            unverified_mode(&json!({"mode": "ISTIO_MUTUAL"}), false),
            None
        );
        assert_eq!(unverified_mode(&Value::Null, false), None);
    }
}
