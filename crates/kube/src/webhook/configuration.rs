//! The `ValidatingWebhookConfiguration` that sends the API server's Istio writes to
//! the webhook: Istio's webhook name (`validation.istio.io`), so kubectl's refusals
//! read as Istio users know them; the kinds Trellis validates on CREATE and UPDATE;
//! `failurePolicy: Fail`. The caBundle is filled by [`super::keep_ca_bundle`].
//!
//! Why Fail: Istio's `istiod-default-validator` ends up `Fail` too (its chart starts
//! it `Ignore` and istiod switches it once the webhook answers). With the webhook
//! down, creating or changing an Istio resource is refused rather than let through
//! unchecked (the control plane would skip an invalid object anyway, silently);
//! deleting always works, since DELETE is not in the rules and never reaches it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The webhook's name inside the configuration (Istio's).
pub const WEBHOOK_NAME: &str = "validation.istio.io";

/// The path the webhook serves.
pub const PATH: &str = "/validate";

/// The configuration's name for a control plane in `namespace`.
pub fn configuration_name(namespace: &str) -> String {
    format!("trellis-validator-{namespace}")
}

/// How the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookClient {
    /// In the cluster: a Service (port 443 unless given), path [`PATH`].
    Service {
        namespace: String,
        name: String,
        port: Option<i32>,
    },
    /// Out of the cluster (and in tests): `https://HOST:PORT/validate`.
    Url(String),
}

/// What a `ValidatingWebhookConfiguration` fails as when the webhook cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The write is refused (the default, see the module's note).
    Fail,
    /// The write goes through unchecked.
    Ignore,
}

/// What the configuration says.
#[derive(Debug, Clone)]
pub struct ConfigurationOptions {
    /// The object's name ([`configuration_name`]).
    pub name: String,
    pub client: WebhookClient,
    /// The roots the API server verifies the webhook with (PEM); `None` leaves it
    /// for [`super::keep_ca_bundle`].
    pub ca_bundle: Option<String>,
    pub failure_policy: FailurePolicy,
    /// How long the API server waits for an answer (1 to 30 s).
    pub timeout_seconds: i32,
}

impl ConfigurationOptions {
    /// In the cluster, for a control plane whose Service is `service` in `namespace`.
    pub fn in_cluster(namespace: &str, service: &str) -> ConfigurationOptions {
        ConfigurationOptions {
            name: configuration_name(namespace),
            client: WebhookClient::Service {
                namespace: namespace.into(),
                name: service.into(),
                port: None,
            },
            ca_bundle: None,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 10,
        }
    }

    /// Reached at `url` (out of the cluster, tests).
    pub fn at_url(name: &str, url: &str) -> ConfigurationOptions {
        ConfigurationOptions {
            name: name.into(),
            client: WebhookClient::Url(url.into()),
            ca_bundle: None,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 10,
        }
    }
}

/// The Istio kinds Trellis validates, as `(group, plural)`.
pub fn validated_resources() -> Vec<(String, String)> {
    crate::source::watched()
        .into_iter()
        .filter(|k| k.custom)
        .map(|k| (k.resource.group, k.resource.plural))
        .collect()
}

/// How `options` reach the webhook: its Service at `path`, or its URL as given.
pub(super) fn client_config(options: &ConfigurationOptions, path: &str) -> WebhookClientConfig {
    let client_config = match &options.client {
        WebhookClient::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.into()),
                port: Some(port.unwrap_or(443)),
            }),
            ..WebhookClientConfig::default()
        },
        WebhookClient::Url(url) => WebhookClientConfig {
            url: Some(url.clone()),
            ..WebhookClientConfig::default()
        },
    };
    WebhookClientConfig {
        ca_bundle: options
            .ca_bundle
            .as_ref()
            .map(|pem| ByteString(pem.as_bytes().to_vec())),
        ..client_config
    }
}

/// `Fail` or `Ignore`, as the API takes it.
pub(super) fn failure_policy(policy: FailurePolicy) -> String {
    match policy {
        FailurePolicy::Fail => "Fail",
        FailurePolicy::Ignore => "Ignore",
    }
    .into()
}

/// The configuration object (create it, or server-side apply it, as it is).
pub fn validating_webhook_configuration(
    options: &ConfigurationOptions,
) -> ValidatingWebhookConfiguration {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, plural) in validated_resources() {
        by_group.entry(group).or_default().push(plural);
    }
    let rules = by_group
        .into_iter()
        .map(|(group, resources)| RuleWithOperations {
            api_groups: Some(vec![group]),
            api_versions: Some(vec!["*".into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            // Plain names only: `virtualservices/status` is not sent here.
            resources: Some(resources),
            scope: Some("*".into()),
        })
        .collect();
    let client_config = client_config(options, PATH);
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(options.name.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "trellis".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "validation".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some(failure_policy(options.failure_policy)),
            match_policy: Some("Equivalent".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(options.timeout_seconds),
            rules: Some(rules),
            ..ValidatingWebhook::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_configuration_calls_the_service_on_creates_and_updates() {
        let c = validating_webhook_configuration(&ConfigurationOptions::in_cluster(
            "istio-system",
            "trellis-control-plane",
        ));
        assert_eq!(
            c.metadata.name.as_deref(),
            Some("trellis-validator-istio-system")
        );
        let v = serde_json::to_value(&c).expect("JSON");
        let hook = &v["webhooks"][0];
        assert_eq!(hook["name"], "validation.istio.io");
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(
            hook["clientConfig"]["service"],
            serde_json::json!({"namespace": "istio-system", "name": "trellis-control-plane",
                "path": "/validate", "port": 443})
        );
        assert!(hook["clientConfig"].get("caBundle").is_none());
        let rules = hook["rules"].as_array().expect("rules");
        let networking = rules
            .iter()
            .find(|r| r["apiGroups"][0] == "networking.istio.io")
            .expect("networking rules");
        assert_eq!(
            networking["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        let resources = networking["resources"].as_array().expect("resources");
        assert!(resources.contains(&"virtualservices".into()));
        assert!(
            !resources
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains('/')))
        );
        assert!(rules.iter().any(
            |r| r["apiGroups"][0] == "telemetry.istio.io" && r["resources"][0] == "telemetries"
        ));
    }

    #[test]
    fn url_configuration_carries_the_bundle_base64() {
        let mut options = ConfigurationOptions::at_url("t", "https://127.0.0.1:9443/validate");
        options.ca_bundle = Some("PEM".into());
        let v = serde_json::to_value(validating_webhook_configuration(&options)).expect("JSON");
        assert_eq!(
            v["webhooks"][0]["clientConfig"],
            serde_json::json!({"url": "https://127.0.0.1:9443/validate", "caBundle": "UEVN"})
        );
    }
}
