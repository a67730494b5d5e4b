//! The translation from what users write (Istio resources, Services, workloads) to what
//! a proxy runs (a [`trellis_model::ProxyConfig`]): pure functions, no sockets.
//!
//! [`Mesh`] indexes the resources once; [`sidecar`] and [`gateway`] compile the config
//! of one proxy from it, keeping only what that proxy needs; [`security()`] selects the
//! security policies that apply to its workload.

mod capture;
mod cluster;
mod endpoint_slices;
mod gateway;
mod mesh;
mod route;
mod security;
mod sidecar;

pub use capture::{
    CaptureOptions, DNS_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, VIRTUAL_INBOUND,
    VIRTUAL_INBOUND_V6, VIRTUAL_OUTBOUND, VIRTUAL_OUTBOUND_V6, capture, inbound_ports,
};
pub use gateway::gateway;
pub use mesh::{Mesh, OutboundPolicy, Service, ServicePort, Workload, fqdn};
pub use security::{
    CUSTOM_NOT_SUPPORTED, PolicyTarget, ROOT_NAMESPACE, gateway_security, security,
    sidecar_security,
};
pub use sidecar::{
    Inbound, Outbound, ServicePortUnit, outbound_depends_on_labels, outbound_plan, outbound_policy,
    outbound_unit, sidecar, sidecar_local, sidecar_outbound,
};

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who the proxy being compiled for is.
#[derive(Debug, Clone, Default)]
pub struct ProxyIdentity {
    /// Workload (deployment) name.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Address the proxy's listeners bind to.
    pub bind_ip: Option<IpAddr>,
}

impl ProxyIdentity {
    /// The model's view of this workload, for metric labels.
    pub fn workload(&self) -> trellis_model::Workload {
        trellis_model::Workload {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            app: self.labels.get("app").cloned().unwrap_or_default(),
            version: self.labels.get("version").cloned().unwrap_or_default(),
            principal: if self.service_account.is_empty() {
                String::new()
            } else {
                format!(
                    "spiffe://cluster.local/ns/{}/sa/{}",
                    self.namespace, self.service_account
                )
            },
            labels: self.labels.clone(),
        }
    }
}

/// Something compiled with a caveat the user should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Kind namespace/name` of the resource concerned.
    pub resource: String,
    pub message: String,
}
