//! Checks of policies next to Kubernetes Gateway API gateways.

use super::json::{items, string_map};
use super::names::ns_of;
use super::selectors::selector_matches;
use super::workloads::{pod_in_text, pods};
use crate::messages::INEFFECTIVE_SELECTOR;
use crate::{Analyzer, Context, Reporter};

/// The label Istio puts on the Pods it deploys for a Kubernetes Gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The policy kinds that can select workloads, as `(group, kind)`.
const POLICY_KINDS: &[(&str, &str)] = &[
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
    ("telemetry.istio.io", "Telemetry"),
    ("extensions.istio.io", "WasmPlugin"),
];

/// `k8sgateway.SelectorAnalyzer`: a policy that selects the Pods of a Kubernetes Gateway
/// with `selector` has no effect on them; it must use `targetRef`.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "k8sgateway.SelectorAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Check that selectors are effective for Kubernetes gateway"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let gateway_pods: Vec<_> = pods(cx)
            .filter(|p| p.meta.labels.contains_key(GATEWAY_NAME_LABEL))
            .collect();
        for (group, kind) in POLICY_KINDS {
            for policy in cx.of(group, kind) {
                let spec = &policy.raw["spec"];
                if !spec["targetRef"].is_null() || !items(&spec["targetRefs"]).is_empty() {
                    continue;
                }
                if spec["selector"].is_null() {
                    continue;
                }
                let selector = string_map(&spec["selector"]["matchLabels"]);
                for pod in gateway_pods.iter().filter(|p| ns_of(p) == ns_of(policy)) {
                    if !selector_matches(&selector, &pod.meta.labels) {
                        continue;
                    }
                    let gateway = &pod.meta.labels[GATEWAY_NAME_LABEL];
                    out.report(
                        &INEFFECTIVE_SELECTOR,
                        policy,
                        Some("spec.selector"),
                        format!(
                            "the selector matches {} of Kubernetes Gateway `{gateway}`, \
                             where selectors have no effect; use `targetRefs: [{{kind: \
                             Gateway, group: gateway.networking.k8s.io, name: {gateway}}}]` \
                             instead",
                            pod_in_text(cx, pod)
                        ),
                    );
                }
            }
        }
    }
}
