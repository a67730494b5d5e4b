//! Object metadata shared by every resource (`metadata:`), and label selectors.
//!
//! Only the fields the mesh reads are typed; the rest of Kubernetes' ObjectMeta is
//! accepted (it is written by the API server, not by users) but kept out of the way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata:` of any object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Everything else the API server keeps (uid, resourceVersion, ownerReferences, ...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ObjectMeta {
    /// The namespace, or `default` when none is written (as `kubectl apply` would).
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A plain `matchLabels` selector (Istio's WorkloadSelector).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every label of the selector is on the workload.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        selector_matches(&self.match_labels, labels)
    }
}

/// Kubernetes equality-selector semantics: every `key: value` of `selector` is among
/// `labels`, so an empty selector matches everything.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `targetRef` / `targetRefs`: a reference to a Kubernetes Gateway API object or Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
