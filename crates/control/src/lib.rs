//! The control plane: a config store (a watched directory and an API), a registry of
//! workloads, one compiled [`trellis_model::ProxyConfig`] per connected proxy, and the
//! `trellis.mesh.v1` push stream (versioned snapshots, ACK/NACK, per-proxy sync status).
//!
//! [`server::spawn`] runs it all on a thread of its own; [`client::follow`] is the
//! proxy's side of the stream. Compilation itself lives in `trellis_compile`.

pub mod api;
pub mod client;
mod dirty;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod plane;
pub mod resources;
pub mod security;
pub mod server;
/// Simulated proxies for the scale benchmarks.
#[cfg(any(test, feature = "testing"))]
pub mod simulated;
pub mod source;
pub mod store;
mod trim;
pub mod workloads;

/// The generated `trellis.mesh.v1` messages, client and server.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("trellis.mesh.v1");
}

/// The `tracing` target of what whoever runs the control plane needs to see: an edit
/// of the watched directory applied or refused, the last good configuration served
/// instead of a broken one, policies accepted but not enforced. `trellis
/// control-plane` shows it from `info` by default (other targets from `warn`).
pub const CONFIG_LOG: &str = "trellis_control::config";

pub use node::ProxySpec;
pub use plane::{ControlPlane, ProxyStatus};
pub use server::{Options, Running, StartError, spawn, spawn_with};
/// What capturing sidecars do with destinations the mesh does not know (MeshConfig).
pub use trellis_compile::OutboundPolicy;
