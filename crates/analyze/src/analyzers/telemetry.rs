//! `telemetry.*`: Telemetry resources that select nothing, overlap, or name providers
//! that do nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use trellis_api::Resource;

use super::control_plane::mesh_config;
use super::json::string_map;
use super::names::{full_name, name_list, ns_of};
use super::selectors::selector_text;
use super::workloads::{pod_in_text, pods_matching};
use crate::messages::{
    CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS, DEPRECATED, INVALID_TELEMETRY_PROVIDER,
    MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS, REFERENCED_RESOURCE_NOT_FOUND,
};
use crate::{Analyzer, Context, Reporter};

fn telemetries<'a>(cx: &'a Context<'_>) -> impl Iterator<Item = &'a Resource> + 'a {
    cx.of("telemetry.istio.io", "Telemetry")
}

/// Access logging entries that would log nowhere: no provider, and the mesh names no default.
pub struct ProviderAnalyzer;

impl Analyzer for ProviderAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.ProviderAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that Telemetry access logging names a provider when the mesh has no default one"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let mesh = mesh_config(cx).unwrap_or(Value::Null);
        let has_default = mesh["defaultProviders"]["accessLogging"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if has_default {
            return;
        }
        for t in telemetries(cx) {
            let entries = t.raw["spec"]["accessLogging"]
                .as_array()
                .into_iter()
                .flatten();
            for (i, entry) in entries.enumerate() {
                if entry["disabled"] == Value::Bool(true) {
                    continue;
                }
                let empty = entry["providers"].as_array().is_none_or(|p| p.is_empty());
                if empty {
                    out.report(
                        &INVALID_TELEMETRY_PROVIDER,
                        t,
                        Some(&format!("spec.accessLogging[{i}]")),
                        format!(
                            "accessLogging[{i}] of Telemetry {} names no provider and the mesh \
                             config sets no default access log provider, so it is ignored: add \
                             `providers: [{{name: envoy}}]` (or another extension provider)",
                            full_name(t)
                        ),
                    );
                }
            }
        }
    }
}

/// Telemetry selectors that match no pod, and pods chosen by more than one Telemetry.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.SelectorAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that Telemetry selectors match a pod and that no pod is selected by two Telemetries"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        // pod (namespace, name) -> how messages name it, and the Telemetries selecting it
        let mut selected: BTreeMap<(String, String), (String, Vec<&Resource>)> = BTreeMap::new();
        for t in telemetries(cx) {
            let selector = string_map(&t.raw["spec"]["selector"]["matchLabels"]);
            if selector.is_empty() {
                continue;
            }
            let mut found = false;
            for pod in pods_matching(cx, ns_of(t), &selector) {
                found = true;
                selected
                    .entry((ns_of(pod).to_string(), pod.meta.name.clone()))
                    .or_insert_with(|| (pod_in_text(cx, pod), Vec::new()))
                    .1
                    .push(t);
            }
            if !found {
                out.report(
                    &REFERENCED_RESOURCE_NOT_FOUND,
                    t,
                    Some("spec.selector.matchLabels"),
                    format!(
                        "the selector `{}` of Telemetry {} matches no pod in namespace {}; fix \
                         the labels or remove the Telemetry",
                        selector_text(&selector),
                        full_name(t),
                        ns_of(t)
                    ),
                );
            }
        }
        for ((ns, _), (pod, list)) in &selected {
            if list.len() < 2 {
                continue;
            }
            for t in list {
                out.report(
                    &CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
                    t,
                    Some("metadata.name"),
                    format!(
                        "Telemetries {} in namespace {ns} all select {pod}, and which one \
                         applies is undefined; make their selectors disjoint or merge them",
                        name_list(list)
                    ),
                );
            }
        }
    }
}

/// Namespaces with more than one Telemetry that applies to every workload.
pub struct DefaultSelectorAnalyzer;

impl Analyzer for DefaultSelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.DefaultSelectorAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that a namespace has at most one Telemetry without a workload selector"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for t in telemetries(cx) {
            let spec = &t.raw["spec"];
            let targeted = !spec["selector"].is_null()
                || !spec["targetRef"].is_null()
                || spec["targetRefs"].as_array().is_some_and(|a| !a.is_empty());
            if !targeted {
                by_ns.entry(ns_of(t)).or_default().push(t);
            }
        }
        for (ns, list) in &by_ns {
            if list.len() < 2 {
                continue;
            }
            for t in list {
                out.report(
                    &MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
                    t,
                    Some("metadata.name"),
                    format!(
                        "Telemetries {} in namespace {ns} have no workload selector, so each \
                         claims every workload and which one applies is undefined; keep one \
                         namespace-wide Telemetry and give the others a selector",
                        name_list(list)
                    ),
                );
            }
        }
    }
}

/// Tracing through a Lightstep provider of the mesh config, which Istio deprecates.
pub struct LightstepAnalyzer;

impl Analyzer for LightstepAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.LightstepAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks for Telemetry tracing through the deprecated Lightstep provider"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let Some(mesh) = mesh_config(cx) else {
            return;
        };
        let lightstep: BTreeSet<&str> = mesh["extensionProviders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| !p["lightstep"].is_null())
            .filter_map(|p| p["name"].as_str())
            .collect();
        if lightstep.is_empty() {
            return;
        }
        for t in telemetries(cx) {
            let tracing = t.raw["spec"]["tracing"].as_array().into_iter().flatten();
            for (i, entry) in tracing.enumerate() {
                let providers = entry["providers"].as_array().into_iter().flatten();
                for (j, p) in providers.enumerate() {
                    let Some(name) = p["name"].as_str().filter(|n| lightstep.contains(n)) else {
                        continue;
                    };
                    out.report(
                        &DEPRECATED,
                        t,
                        Some(&format!("spec.tracing[{i}].providers[{j}]")),
                        format!(
                            "tracing provider {name} is a Lightstep provider, which is \
                             deprecated: define an OpenTelemetry provider in the mesh config and \
                             trace through it instead"
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Message, Options, analyze};

    fn run(analyzer: &str, yaml: &str) -> Vec<Message> {
        let loaded = trellis_api::load_str("t.yaml", yaml);
        let options = Options {
            only: vec![analyzer.to_string()],
            ..Options::default()
        };
        analyze(&loaded.resources, &options).expect("known analyzer")
    }

    const MESH: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    defaultProviders:
      accessLogging: [envoy]
    extensionProviders:
    - name: lightstep
      lightstep: {service: lightstep.monitoring.svc.cluster.local, port: 443, accessToken: t}
---
";

    const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: lightstep}]
  accessLogging:
  - filter: {expression: 'response.code >= 400'}
";

    #[test]
    fn lightstep_is_found_through_the_mesh_config() {
        let got = run("telemetry.LightstepAnalyzer", &format!("{MESH}{TELEMETRY}"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].code, got[0].name.as_str()),
            ("IST0002", "mesh-default")
        );
        assert_eq!(got[0].line, Some(17), "the line of the provider");
        // Without a mesh config nothing names lightstep a Lightstep provider.
        assert!(run("telemetry.LightstepAnalyzer", TELEMETRY).is_empty());
    }

    #[test]
    fn a_default_access_log_provider_makes_empty_providers_fine() {
        assert!(run("telemetry.ProviderAnalyzer", &format!("{MESH}{TELEMETRY}")).is_empty());
        let got = run("telemetry.ProviderAnalyzer", TELEMETRY);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].code, "IST0157");
    }
}
