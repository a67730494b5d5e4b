//! Security enforced through real proxies with real certificates: a mesh CA made per
//! test, backend sidecars compiled from the YAML users write, clients presenting
//! certificates of various identities (or none) over real TLS on loopback.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod authz_rules;
mod authz_seed;
mod authz_tcp_jwt;
mod mtls;
mod no_keys;
