//! Cluster mode: the control plane fed by a Kubernetes API server — watches feeding
//! the store (`source`), TokenReview as the proof of a pod's identity
//! (`token_review`), the validating admission webhook (`webhook`), analysis written
//! back as Istio resources' status (`status`), and reaching the API server as kubectl
//! does (`connect`); the CRDs (`crd`), what `trellis install` applies (`install`) and
//! whether a cluster is ready for it (`precheck`).

pub mod api_proxy;
pub mod ca_secret;
pub mod connect;
pub mod crd;
pub mod inject;
pub mod install;
pub mod leader;
pub mod mode;
pub mod precheck;
pub mod root_cert;
pub mod source;
pub mod status;
pub mod token_review;
pub mod webhook;

#[cfg(feature = "testing")]
pub mod testing;
