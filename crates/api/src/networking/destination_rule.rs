//! STUB: to be filled in with every field of Istio's DestinationRule.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// DestinationRule (stub).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Validate for DestinationRule {
    fn validate(&self, _meta: &ObjectMeta, _c: &mut Checker) {}
}
