//! The `MutatingWebhookConfiguration` that sends pod creations to the injection
//! webhook, under Istio's names (`istio-sidecar-injector`, and its four webhooks), so
//! a cluster's tooling and a user's `kubectl get mutatingwebhookconfiguration` read
//! as they would with Istio.
//!
//! Why `failurePolicy: Fail` is safe here: every webhook's namespace and object
//! selectors match only pods that asked for a sidecar (a namespace labelled
//! `istio-injection=enabled` or `istio.io/rev=REV`, or, in an unlabelled namespace, a
//! pod labelled `sidecar.istio.io/inject=true` or `istio.io/rev=REV`). With the
//! webhook down, those pods are refused — better than starting them outside the mesh
//! unnoticed — and every other pod never reaches the webhook, so it is never blocked.
//! `reinvocationPolicy: Never` (Istio's): injection is idempotent anyway (an injected
//! pod carries `sidecar.istio.io/status` and is left alone).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::configuration::{ConfigurationOptions, client_config, failure_policy};
use super::inject::INJECT_PATH;

/// The configuration's name (Istio's, for the default revision).
pub const INJECTOR_CONFIGURATION: &str = "istio-sidecar-injector";

/// A selector requirement: `key OPERATOR values`.
fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

/// The configuration for `revision` (Istio's `default` unless canaries are run),
/// calling the webhook as `options` say ([`ConfigurationOptions::name`] is kept; give
/// it [`INJECTOR_CONFIGURATION`]).
pub fn mutating_webhook_configuration(
    options: &ConfigurationOptions,
    revision: &str,
) -> MutatingWebhookConfiguration {
    const INJECT: &str = "sidecar.istio.io/inject";
    const NAMESPACE: &str = "istio-injection";
    const REV: &str = "istio.io/rev";
    let not_opted_out = || requirement(INJECT, "NotIn", &["false"]);
    // (name, namespace selector, object selector): together they select exactly the
    // pods `crate::inject::decide` may inject.
    let hooks = [
        (
            "rev.namespace.sidecar-injector.istio.io",
            vec![
                requirement(REV, "In", &[revision]),
                requirement(NAMESPACE, "DoesNotExist", &[]),
            ],
            vec![not_opted_out()],
        ),
        (
            "rev.object.sidecar-injector.istio.io",
            vec![
                requirement(REV, "DoesNotExist", &[]),
                requirement(NAMESPACE, "DoesNotExist", &[]),
            ],
            vec![not_opted_out(), requirement(REV, "In", &[revision])],
        ),
        (
            "namespace.sidecar-injector.istio.io",
            vec![requirement(NAMESPACE, "In", &["enabled"])],
            vec![not_opted_out()],
        ),
        (
            "object.sidecar-injector.istio.io",
            vec![
                requirement(NAMESPACE, "DoesNotExist", &[]),
                requirement(REV, "DoesNotExist", &[]),
            ],
            vec![
                requirement(INJECT, "In", &["true"]),
                requirement(REV, "DoesNotExist", &[]),
            ],
        ),
    ];
    let client_config = client_config(options, INJECT_PATH);
    let webhooks = hooks
        .into_iter()
        .map(|(name, namespaces, objects)| MutatingWebhook {
            name: name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: client_config.clone(),
            failure_policy: Some(failure_policy(options.failure_policy)),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(selector(namespaces)),
            object_selector: Some(selector(objects)),
            reinvocation_policy: Some("Never".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(options.timeout_seconds),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("*".into()),
            }]),
            ..MutatingWebhook::default()
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(options.name.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "trellis".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "sidecar-injector".to_string(),
                ),
                ("istio.io/rev".to_string(), revision.to_string()),
                // Istio's name, Trellis's object: precheck must not take it for Istio's.
                (
                    crate::install::MANAGED_BY.0.to_string(),
                    crate::install::MANAGED_BY.1.to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        webhooks: Some(webhooks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn istios_four_webhooks_call_inject_only_for_opted_in_pods() {
        let options = ConfigurationOptions {
            name: INJECTOR_CONFIGURATION.into(),
            ..ConfigurationOptions::in_cluster("istio-system", "istiod")
        };
        let v = serde_json::to_value(mutating_webhook_configuration(&options, "default"))
            .expect("JSON");
        assert_eq!(v["metadata"]["name"], "istio-sidecar-injector");
        let hooks = v["webhooks"].as_array().expect("webhooks");
        assert_eq!(hooks.len(), 4);
        for hook in hooks {
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["reinvocationPolicy"], "Never");
            assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
            assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
            assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
            // No webhook matches a namespace without either label unless the pod
            // itself opts in by label.
            let namespace = hook["namespaceSelector"]["matchExpressions"].to_string();
            let object = hook["objectSelector"]["matchExpressions"].to_string();
            assert!(
                namespace.contains("\"In\"") || object.contains("\"In\""),
                "{hook}"
            );
        }
        let by_name = |n: &str| {
            hooks
                .iter()
                .find(|h| h["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(
            by_name("namespace.sidecar-injector.istio.io")["namespaceSelector"],
            json!({"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]})
        );
        assert_eq!(
            by_name("object.sidecar-injector.istio.io")["objectSelector"]["matchExpressions"][0],
            json!({"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]})
        );
    }
}
