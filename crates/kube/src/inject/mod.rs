//! Sidecar injection, as pure functions over the raw pod JSON (fields Trellis does
//! not type survive untouched): `decide.rs` says whether a pod gets a sidecar
//! (Istio's labels, annotations and precedence), `annotations.rs` reads Istio's
//! per-pod settings (a bad value is an error naming the annotation), `sidecar.rs`
//! adds the native sidecar, the capture init container and their volumes, and
//! `manifest.rs` does the same to the pod templates of workload kinds (kube-inject).
//! The webhook that calls this over HTTPS is `crate::webhook`'s; no I/O here.

mod annotations;
mod decide;
mod manifest;
pub mod probes;
mod sidecar;

pub use annotations::Overrides;
pub use decide::{Decision, Scope, Skip, decide};
pub use manifest::{Injected, inject_document};
pub use sidecar::{
    HEALTH_PORT, INBOUND_PORT, OUTBOUND_PORT, PROXY_CONTAINER, PROXY_UID, STATUS_ANNOTATION,
    inject_pod, workload_name,
};

/// The mesh's side of an injection: what every injected proxy runs and follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectSettings {
    /// The proxy's image (`{hub}/trellis:{tag}`), unless a pod names its own.
    pub image: String,
    /// The control plane's gRPC address as pods reach it (`istiod.istio-system.svc:15012`).
    pub control_plane: String,
    /// The mesh's trust domain (given to the proxy as `TRUST_DOMAIN`).
    pub trust_domain: String,
    /// The control-plane revision that injects (`istio.io/rev`; Istio's `default`).
    pub revision: String,
}

impl InjectSettings {
    /// For a control plane whose Service is `service` in `namespace`.
    pub fn for_control_plane(namespace: &str, service: &str, image: &str) -> InjectSettings {
        InjectSettings {
            image: image.into(),
            control_plane: format!("{service}.{namespace}.svc:15012"),
            trust_domain: "cluster.local".into(),
            revision: "default".into(),
        }
    }
}

/// Why a pod could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An Istio annotation with a value it cannot take.
    #[error("annotation `{annotation}`: {value:?} is not {expected}")]
    Annotation {
        annotation: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The object is not shaped like a pod (or a pod template) where it must be.
    #[error("{0}")]
    Shape(String),
}

/// The JSONPatch (RFC 6902) that turns `before` into `after`, as the webhook answers.
pub fn patch(before: &serde_json::Value, after: &serde_json::Value) -> json_patch::Patch {
    json_patch::diff(before, after)
}
