//! Namespace: typed only so that it loads; what the mesh reads of it is its labels
//! (`istio-injection`, ...), which live on the resource's metadata, not here.

use serde::{Deserialize, Serialize};

/// A Namespace. Its labels (on the resource's metadata) are what the mesh reads,
/// such as `istio-injection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}
