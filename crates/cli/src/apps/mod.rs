//! The sample workloads that ship inside `trellis`: an echo server, a small
//! bookstore (`bookinfo`) and httpbin's common endpoints, so a demo or a test needs
//! nothing but the binary (and `trellis up` runs Istio's sample images with them).
//!
//! They are ordinary HTTP servers that know nothing about the mesh; the one idea
//! to hold is that each answers with `x-trellis-service` and `x-trellis-version`,
//! so whoever sends traffic through the mesh can tell which workload served it.

pub mod bookinfo;
pub mod echo;
pub mod httpbin;

mod body;
mod grpc;
mod identity;
mod server;
mod upstream;
