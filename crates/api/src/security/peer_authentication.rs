//! STUB: to be filled in with every field of Istio's PeerAuthentication.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// PeerAuthentication (stub).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Validate for PeerAuthentication {
    fn validate(&self, _meta: &ObjectMeta, _c: &mut Checker) {}
}
