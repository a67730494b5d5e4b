//! EndpointSlice (discovery.k8s.io/v1): the addresses behind a Service, by the
//! `kubernetes.io/service-name` label. The mesh reads it only for Services without
//! a selector (their endpoints are written by hand or by another controller);
//! selected Services get their endpoints from the Pods themselves, labels and all.

use serde::{Deserialize, Serialize};

use super::{Protocol, null_default};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on slices Kubernetes makes from a Service's selector.
pub const SELECTOR_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// An EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports every endpoint of the slice serves; a port's name is the Service
    /// port's name.
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<SlicePort>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<SliceConditions>,
}

/// An endpoint's conditions; unknown readiness counts as ready, as Kubernetes says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// One port of a slice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl SliceEndpoint {
    /// Whether it takes traffic: ready, or with no readiness said.
    pub fn is_ready(&self) -> bool {
        self.conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::kube::test_support::load_one;
    use crate::resource::Spec;

    #[test]
    fn endpoint_slice_loads_with_readiness() {
        let Spec::EndpointSlice(slice) = load_one(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  labels:\n    kubernetes.io/service-name: db\naddressType: IPv4\nendpoints:\n- addresses: [10.1.0.5]\n  conditions: {ready: true}\n  nodeName: n1\n- addresses: [10.1.0.6]\n  conditions: {ready: false}\n- addresses: [10.1.0.7]\nports:\n- name: tcp-db\n  port: 5432\n  protocol: TCP\n",
        ) else {
            panic!("not an EndpointSlice")
        };
        assert_eq!(slice.address_type, "IPv4");
        let ready: Vec<bool> = slice.endpoints.iter().map(|e| e.is_ready()).collect();
        assert_eq!(ready, [true, false, true]);
        assert_eq!(slice.ports[0].name.as_deref(), Some("tcp-db"));
        assert_eq!(slice.ports[0].port, Some(5432));
    }
}
