//! Service: the selector that picks its Pods, its ports (by number or name, with the
//! Pod-side target), its type and cluster IPs. It does not resolve endpoints; that is
//! `compile`'s work, joining Services to Pods.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Protocol, null_default};
use crate::values::IntOrString;

/// A Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default, deserialize_with = "null_default")]
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Pods with all these labels are the Service's endpoints; empty selects none
    /// (endpoints are then managed by hand).
    #[serde(default, deserialize_with = "null_default")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<ServicePort>,
    /// `None` (the text) makes the Service headless.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(
        default,
        rename = "clusterIPs",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster_ips: Vec<String>,
    /// The DNS name an ExternalName Service aliases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

/// How a Service is exposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the Service has several ports; Istio also reads the protocol
    /// from a `http-`/`grpc-`/... prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    /// The Pod port (number or container port name); defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The application protocol (`http`, `grpc`, `kubernetes.io/h2c`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

impl ServiceSpec {
    /// The type, ClusterIP when not written.
    pub fn service_type(&self) -> ServiceType {
        self.service_type.unwrap_or_default()
    }

    /// True for a headless Service (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

impl Service {
    /// The port named `name`.
    pub fn port_by_name(&self, name: &str) -> Option<&ServicePort> {
        self.spec
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
    }

    /// The port with service port number `number`.
    pub fn port_by_number(&self, number: i32) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == number)
    }

    /// The port a reference designates: a number, or a name.
    pub fn find_port(&self, port: &IntOrString) -> Option<&ServicePort> {
        match port {
            IntOrString::Int(n) => i32::try_from(*n).ok().and_then(|n| self.port_by_number(n)),
            IntOrString::String(s) => match s.parse::<i32>() {
                Ok(n) => self.port_by_number(n),
                Err(_) => self.port_by_name(s),
            },
        }
    }
}

impl ServicePort {
    /// The protocol, TCP when not written.
    pub fn protocol(&self) -> Protocol {
        self.protocol.clone().unwrap_or_default()
    }

    /// The Pod-side port: `targetPort` if written, else the service port.
    pub fn target(&self) -> IntOrString {
        self.target_port
            .clone()
            .unwrap_or(IntOrString::Int(i64::from(self.port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::test_support::load_one;
    use crate::resource::{Spec, load_str};

    #[test]
    fn service_ports_are_found_by_name_or_number() {
        let Spec::Service(svc) = load_one(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http-web\n    nodePort: 30080\n  - name: grpc\n    port: 9090\n    protocol: TCP\n    appProtocol: grpc\n  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.1]\nstatus:\n  loadBalancer: {}\n",
        ) else {
            panic!("not a Service")
        };
        assert_eq!(svc.spec.service_type(), ServiceType::NodePort);
        assert_eq!(svc.port_by_name("grpc").map(|p| p.port), Some(9090));
        assert_eq!(
            svc.find_port(&IntOrString::Int(80))
                .and_then(|p| p.name.as_deref()),
            Some("http")
        );
        assert_eq!(
            svc.find_port(&IntOrString::String("9090".into()))
                .map(|p| p.port),
            Some(9090)
        );
        assert_eq!(
            svc.port_by_number(9090).map(ServicePort::target),
            Some(IntOrString::Int(9090))
        );
        assert!(svc.port_by_name("nope").is_none());
    }

    #[test]
    fn unknown_kubernetes_fields_are_accepted_but_typed_fields_are_checked() {
        load_one(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  sessionAffinity: None\n  ports:\n  - port: 80\n",
        );
        let loaded = load_str(
            "k.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: eighty\n",
        );
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        assert_eq!(
            loaded.diagnostics[0].path.as_deref(),
            Some("spec.ports[0].port")
        );
        let loaded = load_str(
            "k.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: ClusterIp\n",
        );
        assert!(
            loaded.diagnostics[0]
                .message
                .contains("did you mean `ClusterIP`?"),
            "{:?}",
            loaded.diagnostics
        );
    }
}
