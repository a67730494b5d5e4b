//! Cluster mode: the control plane fed by a Kubernetes API server.

pub mod crd;
pub mod source;

#[cfg(feature = "testing")]
pub mod testing;
