//! Deployment: replicas, the label selector and the Pod template, which the analyzers
//! and local mode treat as the Pods it will run. The Pod spec itself is `pod.rs`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{PodSpec, null_default};

/// A Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default, deserialize_with = "null_default")]
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec` of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Desired Pod count (1 when not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub selector: LabelSelector,
    #[serde(default, deserialize_with = "null_default")]
    pub template: PodTemplate,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, deserialize_with = "null_default")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<String>,
}

/// How a `matchExpressions` entry compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    #[default]
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// True when `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::meta::selector_matches(&self.match_labels, labels)
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// The Pod template of a workload controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: TemplateMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
}

/// The part of a template's metadata the mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::test_support::load_one;
    use crate::resource::Spec;

    #[test]
    fn deployment_template_and_pod_spec_are_read() {
        let Spec::Deployment(d) = load_one(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n    matchExpressions:\n    - key: tier\n      operator: NotIn\n      values: [db]\n  template:\n    metadata:\n      labels:\n        app: web\n      annotations:\n        sidecar.istio.io/inject: \"true\"\n    spec:\n      serviceAccountName: web-sa\n      securityContext:\n        runAsUser: 1000\n      initContainers:\n      - name: init\n        image: busybox\n      containers:\n      - name: web\n        image: nginx\n        command: [nginx]\n        args: [-g, daemon off;]\n        env:\n        - name: MODE\n          value: prod\n        - name: POD_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.podIP\n        ports:\n        - containerPort: 8080\n          name: http-web\n        securityContext:\n          runAsUser: 1337\n        resources: {}\n",
        ) else {
            panic!("not a Deployment")
        };
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(2));
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        assert!(spec.selector.matches(&labels));
        labels.insert("tier".to_string(), "db".to_string());
        assert!(!spec.selector.matches(&labels));
        let pod = &spec.template.spec;
        assert_eq!(pod.service_account(), "web-sa");
        assert_eq!(pod.named_port("http-web"), Some(8080));
        assert_eq!(pod.all_containers().count(), 2);
        let web = pod.container("web").expect("container");
        assert_eq!(web.env_value("MODE"), Some("prod"));
        assert!(web.env[1].value_from.is_some());
        assert_eq!(
            web.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(1337)
        );
        assert_eq!(
            spec.template
                .metadata
                .annotations
                .get("sidecar.istio.io/inject")
                .map(String::as_str),
            Some("true")
        );
    }
}
