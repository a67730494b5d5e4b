//! Cluster mode: the control plane fed by a Kubernetes API server.

#[cfg(feature = "testing")]
pub mod testing;
