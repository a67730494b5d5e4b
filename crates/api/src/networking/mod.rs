//! networking.istio.io: Gateway, VirtualService, DestinationRule, ServiceEntry,
//! WorkloadEntry and Sidecar (served as v1alpha3, v1beta1 and v1, one schema).

mod common;
mod destination_rule;
mod gateway;
mod host;
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
