//! `deprecation.*`: deprecated Istio fields and removed custom resource types.

use serde_json::Value;

use crate::messages::DEPRECATED;
use crate::{Analyzer, Context, Reporter};

/// Istio custom resource types that no longer exist (group, kind).
const REMOVED_CRDS: &[(&str, &str)] = &[
    ("rbac.istio.io", "ClusterRbacConfig"),
    ("rbac.istio.io", "RbacConfig"),
    ("rbac.istio.io", "ServiceRole"),
    ("rbac.istio.io", "ServiceRoleBinding"),
];

/// Istio's `deprecation.DeprecationAnalyzer`.
pub struct DeprecationAnalyzer;

impl Analyzer for DeprecationAnalyzer {
    fn name(&self) -> &'static str {
        "deprecation.DeprecationAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks for deprecated Istio fields and removed Istio resource types"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for vs in cx.of("networking.istio.io", "VirtualService") {
            let routes = vs.raw["spec"]["http"].as_array().into_iter().flatten();
            for (i, route) in routes.enumerate() {
                let percent = &route["fault"]["delay"]["percent"];
                if percent.as_f64().is_some_and(|p| p > 0.0) {
                    out.report(
                        &DEPRECATED,
                        vs,
                        Some(&format!("spec.http[{i}].fault.delay.percent")),
                        format!(
                            "http[{i}].fault.delay.percent is deprecated: use \
                             `percentage: {{value: {percent}}}` instead"
                        ),
                    );
                }
            }
        }

        for sc in cx.of("networking.istio.io", "Sidecar") {
            if !matches!(
                sc.raw["spec"]["outboundTrafficPolicy"]["egressProxy"],
                Value::Null
            ) {
                out.report(
                    &DEPRECATED,
                    sc,
                    Some("spec.outboundTrafficPolicy.egressProxy"),
                    "outboundTrafficPolicy.egressProxy is deprecated and ignored: route \
                     egress traffic through an egress gateway with a VirtualService instead",
                );
            }
        }

        for crd in cx.of("apiextensions.k8s.io", "CustomResourceDefinition") {
            let group = crd.raw["spec"]["group"].as_str().unwrap_or("");
            let kind = crd.raw["spec"]["names"]["kind"].as_str().unwrap_or("");
            if REMOVED_CRDS.contains(&(group, kind)) {
                out.report(
                    &DEPRECATED,
                    crd,
                    Some("spec.names.kind"),
                    format!(
                        "custom resource type {kind}.{group} has been removed from Istio; delete \
                         this definition and migrate its resources to AuthorizationPolicy"
                    ),
                );
            }
        }
    }
}
