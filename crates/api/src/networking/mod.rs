//! networking.istio.io: Gateway, VirtualService, DestinationRule, ServiceEntry,
//! WorkloadEntry and Sidecar (served as v1alpha3, v1beta1 and v1, one schema).

mod common;
mod destination_rule;
mod fault;
mod gateway;
pub mod host;
mod http_policy;
mod http_route;
mod load_balancer;
mod pool;
mod service_entry;
mod sidecar;
mod tls;
mod unreachable;
mod virtual_service;
mod workload_entry;

pub use common::*;
pub use destination_rule::*;
pub use fault::*;
pub use gateway::*;
pub use http_policy::*;
pub use http_route::*;
pub use load_balancer::*;
pub use pool::*;
pub use service_entry::*;
pub use sidecar::*;
pub use tls::*;
pub use virtual_service::*;
pub use workload_entry::*;

/// Loads one networking resource written as `spec` YAML (indented two spaces) and
/// returns its findings as `path: message`, errors only unless `warnings` is set.
#[cfg(test)]
pub(crate) fn findings(kind: &str, name: &str, spec: &str, warnings: bool) -> Vec<String> {
    use crate::{Resource, Severity, load_str};
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}"
    );
    let loaded = load_str("test.yaml", &text);
    let mut out: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    out.extend(
        loaded
            .resources
            .iter()
            .flat_map(Resource::validate)
            .filter(|d| warnings || d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.path.unwrap_or_default(), d.message)),
    );
    out
}
