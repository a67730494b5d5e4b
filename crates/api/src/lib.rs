//! What users write: Istio's configuration API (networking, security, telemetry) and
//! the Kubernetes subset the mesh reads, loaded from YAML or JSON with the position of
//! every field, and validated with Istio's rules.
//!
//! Start at [`load_str`]: text in, typed [`Resource`]s and [`Diagnostic`]s out.
//! Nothing here does I/O; callers hand in bytes.

pub mod check;
pub mod kube;
pub mod meta;
pub mod networking;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod values;
pub mod yaml;

pub use check::Severity;
pub use resource::{Diagnostic, Loaded, Resource, Source, Spec, load_bytes, load_str};
