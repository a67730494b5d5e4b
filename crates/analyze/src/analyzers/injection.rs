//! `injection.*`: whether namespaces and pods get the sidecar they are meant to have.

use std::collections::BTreeSet;

use serde_json::Value;

use super::control_plane::istio_config_maps;
use super::json::scalar_text;
use super::names::ns_of;
use super::workloads::{
    DATAPLANE_MODE_LABEL, INJECT_KEY, INJECTION_LABEL, REVISION_LABEL, has_proxy, pod_in_text, pods,
};
use crate::messages::{
    NAMESPACE_INJECTION_ENABLED_BY_DEFAULT, NAMESPACE_MULTIPLE_INJECTION_LABELS,
    NAMESPACE_NOT_INJECTED, POD_MISSING_PROXY,
};
use crate::{Analyzer, Context, IGNORED_NAMESPACES, Reporter};

/// Istio's `injection.Analyzer`: namespaces without (or with conflicting) injection
/// labels, and pods of injected namespaces that run without the proxy.
pub struct InjectionAnalyzer;

impl Analyzer for InjectionAnalyzer {
    fn name(&self) -> &'static str {
        "injection.Analyzer"
    }

    fn description(&self) -> &'static str {
        "Checks namespace injection labels and that pods of injected namespaces have the proxy"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let istio_ns = cx.options().istio_namespace.as_str();
        let mut injected: BTreeSet<&str> = BTreeSet::new();

        for ns in cx.of("", "Namespace") {
            let name = ns.meta.name.as_str();
            if name == istio_ns || IGNORED_NAMESPACES.contains(&name) {
                continue;
            }
            let labels = &ns.meta.labels;
            let legacy = labels.get(INJECTION_LABEL).map(String::as_str);
            if legacy == Some("disabled") {
                continue;
            }
            let revision = labels.get(REVISION_LABEL);
            let ambient = labels
                .get(DATAPLANE_MODE_LABEL)
                .is_some_and(|m| m == "ambient");

            let mut set: Vec<String> = Vec::new();
            if let Some(v) = legacy {
                set.push(format!("{INJECTION_LABEL}={v}"));
            }
            if let Some(v) = revision {
                set.push(format!("{REVISION_LABEL}={v}"));
            }
            if ambient {
                set.push(format!("{DATAPLANE_MODE_LABEL}=ambient"));
            }
            if set.len() > 1 {
                out.report(
                    &NAMESPACE_MULTIPLE_INJECTION_LABELS,
                    ns,
                    Some("metadata.labels"),
                    format!(
                        "namespace {name} has more than one way of enrolling its pods in the \
                         mesh ({}); which one applies is undefined: keep only one",
                        set.join(", ")
                    ),
                );
                continue;
            }
            if ambient {
                continue;
            }
            match (legacy, revision) {
                (None, None) => {
                    if injection_enabled_by_default(cx, None) {
                        out.report(
                            &NAMESPACE_INJECTION_ENABLED_BY_DEFAULT,
                            ns,
                            Some("metadata.name"),
                            format!(
                                "namespace {name} has no injection label, and Istio is installed \
                                 with enableNamespacesByDefault, so its pods get the sidecar; label \
                                 it `{INJECTION_LABEL}=disabled` if they should not"
                            ),
                        );
                    } else {
                        out.report(
                            &NAMESPACE_NOT_INJECTED,
                            ns,
                            Some("metadata.name"),
                            format!(
                                "namespace {name} is not enabled for sidecar injection: run \
                                 `kubectl label namespace {name} {INJECTION_LABEL}=enabled` to \
                                 enable it, or label it `{INJECTION_LABEL}=disabled` to say it \
                                 needs none"
                            ),
                        );
                    }
                }
                // Any other value of the legacy label deliberately opts out.
                (Some(v), None) if v != "enabled" => {}
                _ => {
                    injected.insert(name);
                }
            }
        }

        for pod in pods(cx) {
            if !injected.contains(ns_of(pod)) {
                continue;
            }
            let opt_in = pod.raw["metadata"]["labels"]
                .get(INJECT_KEY)
                .or_else(|| pod.raw["metadata"]["annotations"].get(INJECT_KEY))
                .and_then(scalar_text);
            if opt_in.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
                continue;
            }
            let spec = &pod.raw["spec"];
            if spec["hostNetwork"] == Value::Bool(true) || has_proxy(spec) {
                continue;
            }
            out.report(
                &POD_MISSING_PROXY,
                pod,
                Some("spec.containers"),
                format!(
                    "no Istio proxy in {} although its namespace is injected; restart or \
                     redeploy the workload so the injector adds it",
                    pod_in_text(cx, pod)
                ),
            );
        }
    }
}

/// Whether the sidecar injector config (`istio-sidecar-injector[-<revision>]` in the
/// control plane namespace) sets `sidecarInjectorWebhook.enableNamespacesByDefault`.
fn injection_enabled_by_default(cx: &Context<'_>, revision: Option<&str>) -> bool {
    let name = match revision {
        None | Some("default") => "istio-sidecar-injector".to_string(),
        Some(rev) => format!("istio-sidecar-injector-{rev}"),
    };
    istio_config_maps(cx, &name)
        .filter_map(|c| c.raw["data"]["values"].as_str())
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .any(|values| values["sidecarInjectorWebhook"]["enableNamespacesByDefault"] == true)
}
