//! Local mode: a mesh of ordinary processes on one machine, no privileges. Every
//! Deployment replica runs as a child process on its own loopback address with an
//! in-process sidecar in front of it; an ingress gateway serves a host port.

mod control;
pub mod images;
pub mod plan;
mod run;

pub use run::{LocalMesh, Options};
