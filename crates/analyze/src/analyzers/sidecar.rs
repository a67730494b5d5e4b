//! Sidecar analyzers: which workloads each Sidecar resource applies to.

use std::collections::{BTreeMap, HashSet};

use trellis_api::Resource;

use super::json::string_map;
use super::names::{NETWORKING, name_list, ns_of};
use super::selectors::{selector_matches, selector_text};
use super::workloads::{namespace_in_ambient, namespaces, pod_in_ambient, pod_in_text, pods};
use crate::messages::{
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, INEFFECTIVE_POLICY,
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS, REFERENCED_RESOURCE_NOT_FOUND,
};
use crate::{Analyzer, Context, Reporter};

/// Per namespace: selectors that match no pod, pods selected by several Sidecars, several
/// Sidecars without a selector, and Sidecars that only apply to ambient workloads.
///
/// Istio once split the selector-less check into `sidecar.DefaultSelectorAnalyzer`; it
/// is part of this analyzer now, so there is no separate one.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "sidecar.SelectorAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that Sidecar workload selectors match pods, that no pod is selected by two \
         Sidecars, and that a namespace has at most one Sidecar without a selector"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let pods: Vec<&Resource> = pods(cx).collect();
        // pod index -> the Sidecars selecting it, in input order
        let mut selected: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
        // namespace -> Sidecars without a workload selector
        let mut defaults: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();

        for sc in cx.of(NETWORKING, "Sidecar") {
            let selector = string_map(&sc.raw["spec"]["workloadSelector"]["labels"]);
            if selector.is_empty() {
                defaults.entry(ns_of(sc)).or_default().push(sc);
                continue;
            }
            let mut found = false;
            for (i, pod) in pods.iter().enumerate() {
                if ns_of(pod) == ns_of(sc) && selector_matches(&selector, &pod.meta.labels) {
                    found = true;
                    selected.entry(i).or_default().push(sc);
                }
            }
            if !found {
                let first = selector.keys().next().cloned().unwrap_or_default();
                out.report(
                    &REFERENCED_RESOURCE_NOT_FOUND,
                    sc,
                    Some(&format!("spec.workloadSelector.labels.{first}")),
                    format!(
                        "workload selector {} matches no pod in namespace {:?}; the Sidecar \
                         applies to nothing (check the labels, and that the pods are in the \
                         Sidecar's namespace)",
                        selector_text(&selector),
                        ns_of(sc)
                    ),
                );
            }
        }

        let mut ineffective: HashSet<String> = HashSet::new();
        for (i, sidecars) in &selected {
            let pod = pods[*i];
            let ambient = pod_in_ambient(pod);
            if sidecars.len() == 1 && !ambient {
                continue;
            }
            for sc in sidecars {
                if ambient {
                    // An ambient pod has no sidecar proxy to configure.
                    if ineffective.insert(sc.key()) {
                        out.report(
                            &INEFFECTIVE_POLICY,
                            sc,
                            Some("spec.workloadSelector"),
                            format!(
                                "it selects {}, in ambient mode without a sidecar proxy, \
                                 so this Sidecar has no effect there",
                                pod_in_text(cx, pod)
                            ),
                        );
                    }
                    continue;
                }
                out.report(
                    &CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
                    sc,
                    Some("metadata.name"),
                    format!(
                        "Sidecars {} in namespace {:?} all select {}, and which one applies \
                         is undefined; make their workload selectors disjoint",
                        name_list(sidecars),
                        ns_of(pod),
                        pod_in_text(cx, pod)
                    ),
                );
            }
        }

        let namespaces = namespaces(cx);
        for (ns, sidecars) in &defaults {
            if namespaces.get(ns).is_some_and(|n| namespace_in_ambient(n)) {
                for sc in sidecars {
                    if ineffective.insert(sc.key()) {
                        out.report(
                            &INEFFECTIVE_POLICY,
                            sc,
                            Some("metadata.name"),
                            format!(
                                "namespace {ns:?} runs in ambient mode, without sidecar \
                                 proxies, so this Sidecar has no effect"
                            ),
                        );
                    }
                }
                continue;
            }
            if sidecars.len() > 1 {
                for sc in sidecars {
                    out.report(
                        &MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                        sc,
                        Some("metadata.name"),
                        format!(
                            "Sidecars {} in namespace {ns:?} have no workload selector, and which \
                             one applies is undefined; keep one and give the others a \
                             workloadSelector",
                            name_list(sidecars)
                        ),
                    );
                }
            }
        }
    }
}
