//! security.istio.io: PeerAuthentication, AuthorizationPolicy and RequestAuthentication
//! (served as v1beta1 and v1, one schema).
//!
//! This module also holds the checks every policy kind shares (Telemetry uses them
//! too): how a policy attaches to workloads, through a label `selector` or through
//! `targetRef`/`targetRefs`.

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;

use crate::check::Checker;
use crate::meta::{ObjectMeta, PolicyTargetReference, WorkloadSelector};

/// The annotation that turns an AuthorizationPolicy into a dry run.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// The kinds a `targetRef` may name, as `(group, kind)`; the core group is written `""`.
/// A classic `networking.istio.io` Gateway reaches the gateway workloads it selects
/// (as recent Istio attaches policies to it).
pub const TARGET_REF_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Gateway"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Checks how a policy attaches: at most one of `selector`, `targetRef` and
/// `targetRefs`, and each of them well formed. `c` is at `spec`.
pub(crate) fn check_attachment(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    c: &mut Checker,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        let mut written = Vec::new();
        if selector.is_some() {
            written.push("`selector`");
        }
        if target_ref.is_some() {
            written.push("`targetRef`");
        }
        if !target_refs.is_empty() {
            written.push("`targetRefs`");
        }
        c.error(format!(
            "only one of `selector`, `targetRef` or `targetRefs` can be set, found {}",
            written.join(" and ")
        ));
    }
    if let Some(selector) = selector {
        c.at("selector", |c| check_selector(selector, c));
    }
    if let Some(target_ref) = target_ref {
        c.at("targetRef", |c| check_target_ref(target_ref, c));
    }
    if target_refs.len() > 16 {
        c.error_at(
            "targetRefs",
            format!(
                "at most 16 targetRefs are allowed, found {}",
                target_refs.len()
            ),
        );
    }
    c.each("targetRefs", target_refs, |c, _, r| check_target_ref(r, c));
}

/// A workload selector: label keys not empty, no `*` in keys or values, and a
/// warning when it selects nothing in particular. `c` is at the selector.
pub(crate) fn check_selector(selector: &WorkloadSelector, c: &mut Checker) {
    if selector.match_labels.is_empty() {
        c.warn(
            "workload selector has no labels, so the policy applies to every workload in the namespace",
        );
        return;
    }
    c.at("matchLabels", |c| {
        for (key, value) in &selector.match_labels {
            c.at(key, |c| {
                if key.is_empty() {
                    c.error(format!(
                        "empty key is not supported in selector (`{key}={value}`)"
                    ));
                }
                if key.contains('*') || value.contains('*') {
                    c.error(format!(
                        "wildcard is not supported in selector (`{key}={value}`); labels match literally"
                    ));
                }
                if value.len() > 63 {
                    c.error(format!(
                        "label value for `{key}` is {} characters long; at most 63 are allowed",
                        value.len()
                    ));
                }
            });
        }
    });
}

/// One `targetRef`: a name, no namespace, and a kind policies may attach to.
/// `c` is at the reference.
pub(crate) fn check_target_ref(r: &PolicyTargetReference, c: &mut Checker) {
    if r.name.is_empty() {
        c.error_at("name", "targetRef name must be set");
    }
    if let Some(ns) = &r.namespace
        && !ns.is_empty()
    {
        c.error_at(
            "namespace",
            format!(
                "targetRef namespace must not be set (found `{ns}`): cross namespace referencing is not supported"
            ),
        );
    }
    let group = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    if !TARGET_REF_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == r.kind)
    {
        let valid = TARGET_REF_KINDS
            .iter()
            .map(|(g, k)| {
                if g.is_empty() {
                    format!("core/{k}")
                } else {
                    format!("{g}/{k}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let hint =
            match crate::check::rules::nearest(&r.kind, TARGET_REF_KINDS.iter().map(|(_, k)| *k)) {
                Some(k) if k != r.kind => format!(" (did you mean `{k}`?)"),
                _ => String::new(),
            };
        let message = format!(
            "targetRef must be to one of {valid} but was `{}/{}`{hint}",
            r.group, r.kind
        );
        if r.kind.is_empty() {
            c.error_at("kind", message);
        } else {
            c.error(message);
        }
    }
}

/// Only AuthorizationPolicy understands the dry-run annotation; anywhere else it is
/// refused rather than silently ignored. `c` is at `spec`.
pub(crate) fn refuse_dry_run(kind: &str, meta: &ObjectMeta, c: &mut Checker) {
    if meta.annotations.contains_key(DRY_RUN_ANNOTATION) {
        c.error(format!(
            "annotation `{DRY_RUN_ANNOTATION}` is only supported on AuthorizationPolicy, not {kind}; remove it"
        ));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::check::Severity;
    use crate::resource::{Diagnostic, load_str};

    /// Loads one YAML document and returns everything found (load and validation).
    pub fn diagnose(yaml: &str) -> Vec<Diagnostic> {
        let loaded = load_str("t.yaml", yaml);
        let mut out = loaded.diagnostics;
        for r in &loaded.resources {
            out.extend(r.validate());
        }
        out
    }

    /// The error messages (with paths) found in one YAML document.
    pub fn errors(yaml: &str) -> Vec<String> {
        diagnose(yaml)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.path.unwrap_or_default(), d.message))
            .collect()
    }

    /// The warning messages (with paths) found in one YAML document.
    pub fn warnings(yaml: &str) -> Vec<String> {
        diagnose(yaml)
            .into_iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(|d| format!("{}: {}", d.path.unwrap_or_default(), d.message))
            .collect()
    }

    /// Asserts that some error contains `needle`.
    #[track_caller]
    pub fn assert_error(yaml: &str, needle: &str) {
        let errors = errors(yaml);
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected an error containing {needle:?}, got {errors:#?}"
        );
    }

    /// Asserts that there are no errors.
    #[track_caller]
    pub fn assert_clean(yaml: &str) {
        let errors = errors(yaml);
        assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
    }
}
