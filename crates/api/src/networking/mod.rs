//! networking.istio.io: Gateway, VirtualService, DestinationRule, ServiceEntry,
//! WorkloadEntry and Sidecar (served as v1alpha3, v1beta1 and v1, one schema).

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload_entry;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
pub use workload_entry::*;
