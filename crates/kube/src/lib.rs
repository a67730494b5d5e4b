//! Cluster mode: the control plane fed by a Kubernetes API server (`source`), the
//! validating admission webhook (`webhook`) and analysis written back as Istio
//! resources' status (`status`).

pub mod source;
pub mod status;
pub mod webhook;

#[cfg(feature = "testing")]
pub mod testing;
