//! STUB: to be filled in with every field of Istio's Telemetry.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// Telemetry (stub).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Validate for Telemetry {
    fn validate(&self, _meta: &ObjectMeta, _c: &mut Checker) {}
}
