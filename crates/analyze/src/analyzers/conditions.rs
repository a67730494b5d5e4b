//! `conditions.*`: status conditions in which the control plane reports a problem.
//!
//! Only meaningful for resources exported from a cluster (with `status:`); files
//! written by hand have no status and so nothing to report.

use serde_json::Value;
use trellis_api::Resource;

use crate::messages::NEGATIVE_CONDITION_STATUS;
use crate::{Analyzer, Context, Reporter};

/// Which conditions say something is wrong when `False`, per (group, kind).
const NEGATIVE_WHEN_FALSE: &[(&str, &str, &[&str])] = &[
    ("", "Service", &["istio.io/WaypointBound"]),
    (
        "networking.istio.io",
        "ServiceEntry",
        &["istio.io/WaypointBound"],
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        &["ZtunnelAccepted", "WaypointAccepted"],
    ),
    (
        "gateway.networking.k8s.io",
        "Gateway",
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
    (
        "gateway.networking.k8s.io",
        "HTTPRoute",
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
    (
        "gateway.networking.k8s.io",
        "GRPCRoute",
        &["Accepted", "Programmed", "ResolvedRefs"],
    ),
];

/// Istio's `conditions.ConditionAnalyzer`.
pub struct ConditionAnalyzer;

impl Analyzer for ConditionAnalyzer {
    fn name(&self) -> &'static str {
        "conditions.ConditionAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks for status conditions that report a problem (waypoint binding, acceptance, programming)"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for (group, kind, types) in NEGATIVE_WHEN_FALSE {
            for r in cx.of(group, kind) {
                for (path, cond) in conditions(r) {
                    let ty = cond["type"].as_str().unwrap_or("");
                    let status = status_text(&cond["status"]);
                    let reason = cond["reason"].as_str().unwrap_or("");
                    let negative = (types.contains(&ty) && status == "False")
                        // Accepted, but only in part: some of its targets are invalid.
                        || (*kind == "AuthorizationPolicy"
                            && ty == "WaypointAccepted"
                            && reason == "PartiallyInvalid");
                    if !negative {
                        continue;
                    }
                    let message = cond["message"].as_str().unwrap_or("");
                    out.report(
                        &NEGATIVE_CONDITION_STATUS,
                        r,
                        Some(&path),
                        format!(
                            "status condition {ty} is {status} (reason {reason}): {message}; \
                             fix what the reason names and re-apply"
                        ),
                    );
                }
            }
        }
    }
}

fn status_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        _ => String::new(),
    }
}

/// Every condition of `r` with its field path: `status.conditions`, and for routes
/// the conditions of each parent in `status.parents`.
fn conditions(r: &Resource) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let status = &r.raw["status"];
    for (i, c) in status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push((format!("status.conditions[{i}]"), c));
    }
    if r.kind.ends_with("Route") {
        for (p, parent) in status["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let list = parent["conditions"].as_array().into_iter().flatten();
            for (i, c) in list.enumerate() {
                out.push((format!("status.parents[{p}].conditions[{i}]"), c));
            }
        }
    }
    out
}
