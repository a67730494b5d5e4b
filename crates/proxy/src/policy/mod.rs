//! The policy engine: a config's [`Security`] compiled once into a request-time form
//! ([`CompiledSecurity`]: authorization tiers, JWT keys, the mTLS modes) and evaluated
//! per request or connection: `http/authz.rs` calls [`CompiledJwt::authenticate`] then
//! [`authorize`], and `tcp.rs` calls [`authorize`]; this module does no I/O.
//!
//! Order on a request, as Istio's filter chain runs it: JWT (401 on an invalid token,
//! header edits on a valid one) → [`authorize`] with the verified identity (403
//! `RBAC: access denied` on [`Verdict::Deny`]). A TCP connection is only authorized.

mod attributes;
mod authz;
mod jwt;
mod matcher;
mod rules;

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod jwt_tests;

pub use attributes::{HttpAttributes, JwtIdentity, RequestAttributes, spiffe_parts};
pub use authz::{CompiledAuthz, Decision, Verdict, authorize};
pub use jwt::{CompiledJwt, HeaderEdits, JwtError, JwtOutcome};

use trellis_model::Security;
use trellis_model::security::{MtlsPolicy, TemplateError};

/// Why a config's security cannot be compiled (the config is refused).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{policy}: {source}")]
    Template {
        policy: String,
        source: TemplateError,
    },
    #[error("{policy}: `{name}` is not a valid header name")]
    HeaderName { policy: String, name: String },
}

/// A config's security, compiled for requests (keep one per config, beside the
/// routes).
#[derive(Debug, Default)]
pub struct CompiledSecurity {
    pub authz: CompiledAuthz,
    pub jwt: CompiledJwt,
    /// The inbound mTLS mode per workload port, as compiled.
    pub mtls: MtlsPolicy,
}

impl CompiledSecurity {
    pub fn compile(security: &Security) -> Result<Self, PolicyError> {
        Ok(CompiledSecurity {
            authz: CompiledAuthz::compile(&security.authorization)?,
            jwt: CompiledJwt::compile(&security.jwt_rules)?,
            mtls: security.mtls.clone(),
        })
    }
}
