//! `applicationUID.*`: application containers must not run as the proxy's user.

use serde_json::Value;
use trellis_api::Resource;

use super::control_plane::is_control_plane;
use super::workloads::{PROXY_CONTAINER, pods};
use crate::messages::INVALID_APPLICATION_UID;
use crate::{Analyzer, Context, Reporter};

/// The user ID the sidecar runs as; traffic from it bypasses interception.
const PROXY_UID: i64 = 1337;

/// Istio's `applicationUID.Analyzer`: Pods and Deployments whose application runs as UID 1337.
pub struct ApplicationUidAnalyzer;

impl Analyzer for ApplicationUidAnalyzer {
    fn name(&self) -> &'static str {
        "applicationUID.Analyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that application pods do not run as user ID 1337, which is reserved for the proxy"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for pod in pods(cx) {
            check(pod, &pod.raw["spec"], "spec", out);
        }
        for deploy in cx.of("apps", "Deployment") {
            check(
                deploy,
                &deploy.raw["spec"]["template"]["spec"],
                "spec.template.spec",
                out,
            );
        }
    }
}

/// Reports `r` once when its pod spec (at `base`) runs application code as UID 1337.
fn check(r: &Resource, pod_spec: &Value, base: &str, out: &mut Reporter) {
    if is_control_plane(&r.meta.labels) {
        return;
    }
    let runs_as_proxy = |ctx: &Value| ctx["runAsUser"].as_i64() == Some(PROXY_UID);
    let path = if runs_as_proxy(&pod_spec["securityContext"]) {
        Some(format!("{base}.securityContext.runAsUser"))
    } else {
        pod_spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, c)| {
                !matches!(c["name"].as_str(), Some(PROXY_CONTAINER | "istio-operator"))
                    && runs_as_proxy(&c["securityContext"])
            })
            .map(|(i, _)| format!("{base}.containers[{i}].securityContext.runAsUser"))
    };
    if let Some(path) = path {
        out.report(
            &INVALID_APPLICATION_UID,
            r,
            Some(&path),
            "the application runs as user ID 1337, which is reserved for the Istio proxy: its \
             traffic would bypass the sidecar; choose another runAsUser",
        );
    }
}
