//! STUB: to be filled in with every field of Istio's ServiceEntry.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// ServiceEntry (stub).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Validate for ServiceEntry {
    fn validate(&self, _meta: &ObjectMeta, _c: &mut Checker) {}
}
