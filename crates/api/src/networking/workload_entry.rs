//! STUB: to be filled in with every field of Istio's WorkloadEntry.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// WorkloadEntry (stub).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Validate for WorkloadEntry {
    fn validate(&self, _meta: &ObjectMeta, _c: &mut Checker) {}
}
