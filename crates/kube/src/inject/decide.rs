//! Whether a pod gets a sidecar, with Istio's precedence: a pod on the host network or
//! already injected never does; in a namespace labelled `istio-injection=enabled` (or
//! `istio.io/rev` naming this revision, unless `istio-injection` says otherwise) every
//! pod does unless it opts out with `sidecar.istio.io/inject` (the label wins over the
//! annotation); in an unlabelled namespace only a pod *labelled* `sidecar.istio.io/inject:
//! "true"` (or `istio.io/rev` naming this revision) does, since the webhook's selectors
//! only see labels. `kube-inject` ignores the namespace, as istioctl's does.

use std::collections::BTreeMap;

use serde_json::Value;

/// Istio's opt-in and opt-out key, as a pod label or annotation.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The namespace label that turns injection on (`enabled`) or off (anything else).
pub const NAMESPACE_LABEL: &str = "istio-injection";
/// The revision label, on a namespace or a pod.
pub const REVISION_LABEL: &str = "istio.io/rev";

/// Namespaces Istio never injects into.
const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// What the pod's namespace says, or that it is not asked.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The webhook: the pod's namespace and its labels.
    Namespace {
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    },
    /// `kube-inject`: injected unless the pod opts out.
    Manual,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(Skip),
}

/// Why a pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    HostNetwork,
    AlreadyInjected,
    /// `kube-system` or `kube-public`.
    SystemNamespace,
    /// `sidecar.istio.io/inject` is not true (label, else annotation).
    PodOptedOut,
    /// `istio-injection` is set to something other than `enabled`.
    NamespaceDisabled,
    /// The namespace (or the pod) names another revision.
    OtherRevision,
    /// Neither the namespace nor the pod's labels ask for a sidecar.
    NotSelected,
}

/// Decides for `pod` (a Pod, or a pod template: `metadata` and `spec`).
pub fn decide(pod: &Value, scope: Scope<'_>, revision: &str) -> Decision {
    let meta = &pod["metadata"];
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return Decision::Skip(Skip::HostNetwork);
    }
    if meta["annotations"]
        .get(super::STATUS_ANNOTATION)
        .is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty()))
    {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    let label = |key: &str| meta["labels"].get(key).and_then(Value::as_str);
    let annotation = |key: &str| meta["annotations"].get(key).and_then(Value::as_str);
    // The pod's own word: its label, else its annotation.
    let wish = label(INJECT)
        .filter(|v| !v.is_empty())
        .or(annotation(INJECT).filter(|v| !v.is_empty()))
        .map(truthy);
    if wish == Some(false) {
        return Decision::Skip(Skip::PodOptedOut);
    }
    let (namespace, labels) = match scope {
        Scope::Manual => return Decision::Inject,
        Scope::Namespace { name, labels } => (name, labels),
    };
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Decision::Skip(Skip::SystemNamespace);
    }
    match (
        labels.get(NAMESPACE_LABEL).map(String::as_str),
        labels.get(REVISION_LABEL),
    ) {
        (Some("enabled"), _) => Decision::Inject,
        (Some(_), _) => Decision::Skip(Skip::NamespaceDisabled),
        (None, Some(rev)) if rev == revision => Decision::Inject,
        (None, Some(_)) => Decision::Skip(Skip::OtherRevision),
        // An unlabelled namespace: the pod's labels alone select it.
        (None, None) => match label(REVISION_LABEL) {
            Some(rev) if rev == revision => Decision::Inject,
            Some(_) => Decision::Skip(Skip::OtherRevision),
            None if label(INJECT) == Some("true") => Decision::Inject,
            None => Decision::Skip(Skip::NotSelected),
        },
    }
}

/// Istio's reading of `sidecar.istio.io/inject`: `y`, `yes`, `true`, `on` (any case)
/// inject; any other value does not.
fn truthy(value: &str) -> bool {
    ["y", "yes", "true", "on"]
        .iter()
        .any(|t| value.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app"}]}})
    }

    fn in_namespace(pod: &Value, labels: &[(&str, &str)]) -> Decision {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        decide(
            pod,
            Scope::Namespace {
                name: "shop",
                labels: &labels,
            },
            "default",
        )
    }

    const ENABLED: &[(&str, &str)] = &[("istio-injection", "enabled")];
    const DISABLED: &[(&str, &str)] = &[("istio-injection", "disabled")];
    const NONE: &[(&str, &str)] = &[];

    #[test]
    fn the_namespace_label_injects_every_pod_that_does_not_opt_out() {
        let plain = pod(json!({"app": "a"}), json!({}));
        assert_eq!(in_namespace(&plain, ENABLED), Decision::Inject);
        assert_eq!(
            in_namespace(&plain, NONE),
            Decision::Skip(Skip::NotSelected)
        );
        assert_eq!(
            in_namespace(&plain, DISABLED),
            Decision::Skip(Skip::NamespaceDisabled)
        );
        for out in [
            pod(json!({INJECT: "false"}), json!({})),
            pod(json!({}), json!({INJECT: "false"})),
            pod(json!({}), json!({INJECT: "no"})),
        ] {
            assert_eq!(
                in_namespace(&out, ENABLED),
                Decision::Skip(Skip::PodOptedOut)
            );
        }
    }

    #[test]
    fn the_pod_label_wins_over_the_annotation() {
        let label_yes = pod(json!({INJECT: "true"}), json!({INJECT: "false"}));
        assert_eq!(in_namespace(&label_yes, ENABLED), Decision::Inject);
        let label_no = pod(json!({INJECT: "false"}), json!({INJECT: "true"}));
        assert_eq!(
            in_namespace(&label_no, ENABLED),
            Decision::Skip(Skip::PodOptedOut)
        );
    }

    #[test]
    fn disabled_namespace_wins_over_a_pod_opting_in() {
        let opt_in = pod(json!({INJECT: "true"}), json!({}));
        assert_eq!(
            in_namespace(&opt_in, DISABLED),
            Decision::Skip(Skip::NamespaceDisabled)
        );
        // istio-injection takes precedence over istio.io/rev.
        assert_eq!(
            in_namespace(
                &opt_in,
                &[("istio-injection", "disabled"), ("istio.io/rev", "default")]
            ),
            Decision::Skip(Skip::NamespaceDisabled)
        );
    }

    #[test]
    fn in_an_unlabelled_namespace_only_the_pod_label_opts_in() {
        assert_eq!(
            in_namespace(&pod(json!({INJECT: "true"}), json!({})), NONE),
            Decision::Inject
        );
        // The webhook's selectors see labels only: an annotation cannot opt in here.
        assert_eq!(
            in_namespace(&pod(json!({}), json!({INJECT: "true"})), NONE),
            Decision::Skip(Skip::NotSelected)
        );
        assert_eq!(
            in_namespace(&pod(json!({REVISION_LABEL: "default"}), json!({})), NONE),
            Decision::Inject
        );
        assert_eq!(
            in_namespace(&pod(json!({REVISION_LABEL: "canary"}), json!({})), NONE),
            Decision::Skip(Skip::OtherRevision)
        );
    }

    #[test]
    fn the_revision_label_selects_this_revision_only() {
        let plain = pod(json!({}), json!({}));
        assert_eq!(
            in_namespace(&plain, &[("istio.io/rev", "default")]),
            Decision::Inject
        );
        assert_eq!(
            in_namespace(&plain, &[("istio.io/rev", "canary")]),
            Decision::Skip(Skip::OtherRevision)
        );
    }

    #[test]
    fn host_network_system_namespaces_and_injected_pods_are_left_alone() {
        let mut host = pod(json!({}), json!({}));
        host["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            in_namespace(&host, ENABLED),
            Decision::Skip(Skip::HostNetwork)
        );
        assert_eq!(
            decide(&host, Scope::Manual, "default"),
            Decision::Skip(Skip::HostNetwork)
        );
        let injected = pod(json!({}), json!({super::super::STATUS_ANNOTATION: "{}"}));
        assert_eq!(
            in_namespace(&injected, ENABLED),
            Decision::Skip(Skip::AlreadyInjected)
        );
        let labels = BTreeMap::from([("istio-injection".to_string(), "enabled".to_string())]);
        let system = Scope::Namespace {
            name: "kube-system",
            labels: &labels,
        };
        assert_eq!(
            decide(&pod(json!({}), json!({})), system, "default"),
            Decision::Skip(Skip::SystemNamespace)
        );
    }

    #[test]
    fn manual_injection_ignores_the_namespace_but_honours_the_opt_out() {
        assert_eq!(
            decide(&pod(json!({}), json!({})), Scope::Manual, "default"),
            Decision::Inject
        );
        assert_eq!(
            decide(
                &pod(json!({}), json!({INJECT: "false"})),
                Scope::Manual,
                "default"
            ),
            Decision::Skip(Skip::PodOptedOut)
        );
    }
}
