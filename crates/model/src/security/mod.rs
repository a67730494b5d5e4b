//! What a proxy needs to decide who may talk to its workload: the mutual-TLS mode per
//! inbound port (PeerAuthentication, resolved), the AuthorizationPolicies that apply
//! (in evaluation form) and the JWT rules (RequestAuthentication). No Istio shapes:
//! scope, precedence and inheritance were settled by the compiler.

mod authz;
mod jwt;
mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use authz::*;
pub use jwt::*;
pub use values::*;

/// Everything security-related for one proxy's workload; empty by default (mTLS
/// PERMISSIVE, no policies), so configs written before it still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    #[serde(default)]
    pub mtls: MtlsPolicy,
    /// Every AuthorizationPolicy that applies, in the order Istio lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthzPolicy>,
    /// Every JWT rule of every RequestAuthentication that applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// The inbound mutual-TLS mode, after inheritance (mesh → namespace → workload →
/// port); UNSET never survives compilation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MtlsPolicy {
    /// For every port not listed in `ports`.
    #[serde(default)]
    pub mode: MtlsMode,
    /// By workload (target) port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, MtlsMode>,
    /// The PeerAuthentications that decided (`namespace/name`), for showing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

/// How the inbound side treats plaintext and mutual TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Mutual TLS only.
    Strict,
    /// Both, told apart by the first bytes (Istio's default).
    #[default]
    Permissive,
    /// Plaintext only.
    Disable,
}

impl MtlsPolicy {
    /// The mode on workload port `port`.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Why a security section cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    #[error("JWT rule for issuer `{issuer}` ({policy}) reads the token from nowhere")]
    NoTokenLocation { policy: String, issuer: String },
    #[error("AuthorizationPolicy {policy}: {source}")]
    Template {
        policy: String,
        source: TemplateError,
    },
    #[error("AuthorizationPolicy {policy}: a request header condition names no header")]
    EmptyHeaderName { policy: String },
    #[error("AuthorizationPolicy {policy}: a claim condition names no claim")]
    EmptyClaim { policy: String },
}

impl Security {
    /// True when nothing is configured (no policy of any kind, default mTLS).
    pub fn is_empty(&self) -> bool {
        *self == Security::default()
    }

    /// Checks what the type cannot: path templates parse, header and claim names are
    /// set, every JWT rule reads its token from somewhere.
    pub fn check(&self) -> Result<(), SecurityError> {
        for rule in &self.jwt_rules {
            if rule.has_no_location() {
                return Err(SecurityError::NoTokenLocation {
                    policy: rule.policy.clone(),
                    issuer: rule.issuer.clone(),
                });
            }
        }
        for p in &self.authorization {
            for rule in &p.rules {
                let paths = rule
                    .to
                    .iter()
                    .flat_map(|op| op.paths.iter().chain(&op.not_paths));
                for path in paths {
                    if let PathPattern::Template { template } = path {
                        parse_template(template).map_err(|source| SecurityError::Template {
                            policy: p.name.clone(),
                            source,
                        })?;
                    }
                }
                for c in &rule.when {
                    match c {
                        Condition::RequestHeader { name, .. } if name.is_empty() => {
                            return Err(SecurityError::EmptyHeaderName {
                                policy: p.name.clone(),
                            });
                        }
                        Condition::RequestClaim { claim, .. }
                            if claim.is_empty() || claim.iter().any(String::is_empty) =>
                        {
                            return Err(SecurityError::EmptyClaim {
                                policy: p.name.clone(),
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The `jwksUri`s whose documents the control plane should fetch.
    pub fn jwks_uris(&self) -> impl Iterator<Item = &str> {
        self.jwt_rules.iter().filter_map(|r| match &r.jwks {
            Jwks::Remote { uri, .. } => Some(uri.as_str()),
            Jwks::Inline { .. } => None,
        })
    }

    /// Records the outcome of fetching `uri` in every rule that names it.
    pub fn set_jwks(&mut self, uri: &str, outcome: Result<String, String>) {
        for rule in &mut self.jwt_rules {
            if let Jwks::Remote { uri: u, state } = &mut rule.jwks
                && u == uri
            {
                *state = match &outcome {
                    Ok(keys) => JwksFetch::Fetched { keys: keys.clone() },
                    Err(error) => JwksFetch::Failed {
                        error: error.clone(),
                    },
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_config_reads_with_empty_security() {
        let s: Security = serde_json::from_str("{}").expect("empty");
        assert!(s.is_empty());
        assert_eq!(s.mtls.mode, MtlsMode::Permissive);
    }

    #[test]
    fn port_modes_override_the_default() {
        let mtls = MtlsPolicy {
            mode: MtlsMode::Strict,
            ports: BTreeMap::from([(8080, MtlsMode::Disable)]),
            from: vec![],
        };
        assert_eq!(mtls.mode_for(8080), MtlsMode::Disable);
        assert_eq!(mtls.mode_for(9090), MtlsMode::Strict);
        let json = serde_json::to_string(&mtls).expect("json");
        assert_eq!(json, r#"{"mode":"STRICT","ports":{"8080":"DISABLE"}}"#);
        assert_eq!(
            serde_json::from_str::<MtlsPolicy>(&json).expect("back"),
            mtls
        );
    }

    #[test]
    fn a_fetched_key_set_replaces_pending() {
        let mut s = Security {
            jwt_rules: vec![JwtRule {
                policy: "ns/ra".into(),
                issuer: "iss".into(),
                audiences: vec![],
                jwks: Jwks::Remote {
                    uri: "https://keys/jwks".into(),
                    state: JwksFetch::Pending,
                },
                from_headers: vec![],
                from_params: vec!["access_token".into()],
                from_cookies: vec![],
                output_payload_to_header: None,
                forward_original_token: false,
                output_claim_to_headers: vec![],
                space_delimited_claims: vec![],
                require_token: false,
            }],
            ..Default::default()
        };
        assert!(matches!(
            s.jwt_rules[0].jwks.keys(),
            Err(JwksUnavailable::NotFetched(_))
        ));
        assert_eq!(s.jwks_uris().collect::<Vec<_>>(), ["https://keys/jwks"]);
        s.set_jwks("https://keys/jwks", Ok("{\"keys\":[]}".into()));
        assert_eq!(s.jwt_rules[0].jwks.keys(), Ok("{\"keys\":[]}"));
        s.set_jwks("https://keys/jwks", Err("503".into()));
        assert!(s.jwt_rules[0].jwks.keys().is_err());
        assert!(s.check().is_ok());
        s.jwt_rules[0].from_params.clear();
        assert!(s.check().is_err());
    }
}
