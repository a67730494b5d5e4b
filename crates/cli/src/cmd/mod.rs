//! One module per subcommand; each returns the process exit code.

pub mod analyze;
pub mod control;
pub mod demo;
pub mod install;
pub mod kube_inject;
pub mod manifest;
pub mod proxy;
pub mod proxy_init;
pub mod proxy_lifecycle;
mod proxy_standalone;
pub mod up;
pub mod validate;
pub mod x;
