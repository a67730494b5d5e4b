//! AuthorizationPolicies in evaluation form: for the proxy's workload, each policy's
//! action and rules, with every value typed (patterns, CIDR blocks, ports) and every
//! `when` key resolved to the attribute it reads. A rule matches when any `from`, any
//! `to` and every `when` match; an empty list matches everything.

use serde::{Deserialize, Serialize};

use super::values::{Cidr, PathPattern, RequestPrincipalPattern, ServiceAccount, StringPattern};

/// One AuthorizationPolicy that applies to this proxy's workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzPolicy {
    /// `namespace/name`, as reported when the policy decides.
    pub name: String,
    pub action: AuthzAction,
    /// The extension provider a CUSTOM policy names (none is supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `istio.io/dry-run`: evaluated and reported, never enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// An ALLOW policy with no rules matches nothing (and so denies everything).
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

/// What a policy's match means, in Istio's evaluation order: CUSTOM, DENY, ALLOW;
/// AUDIT only records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    Audit,
    /// Delegated to an external authorizer; without one, a match is denied.
    Custom,
}

/// One rule: any `from`, any `to`, every `when` (empty lists match everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Who sends the request. Every non-empty field must hold: a list when any value
/// matches, a `not_*` list when none does (an absent attribute matches no value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Peer identities without `spiffe://` (`cluster.local/ns/default/sa/web`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringPattern>,
    /// JWT `iss/sub`; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<RequestPrincipalPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<RequestPrincipalPattern>,
    /// The peer identity's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringPattern>,
    /// The peer identity's namespace and service account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccount>,
    /// The peer identity's trust domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<StringPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<StringPattern>,
    /// The directly connected peer's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<Cidr>,
    /// The original client's address (X-Forwarded-For at a gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<Cidr>,
}

/// What the request does. Fields as in [`Source`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// `:authority`, case-insensitive, with or without `:port`; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<StringPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<StringPattern>,
    /// The destination (workload) port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    /// HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<StringPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<StringPattern>,
    /// The path without its query string; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<PathPattern>,
}

/// The values of one condition: any of `values`, none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Values<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

/// A `when` condition, by the attribute its key reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "key", rename_all = "camelCase")]
pub enum Condition {
    /// `source.ip`: the directly connected peer.
    SourceIp(Values<Cidr>),
    /// `remote.ip`: the original client.
    RemoteIp(Values<Cidr>),
    /// `destination.ip`.
    DestinationIp(Values<Cidr>),
    /// `destination.port`.
    DestinationPort(Values<u16>),
    /// `source.namespace`.
    SourceNamespace(Values<StringPattern>),
    /// `source.principal`.
    SourcePrincipal(Values<StringPattern>),
    /// `connection.sni`.
    ConnectionSni(Values<StringPattern>),
    /// `request.headers[name]` (name lowercased); HTTP only.
    RequestHeader {
        name: String,
        #[serde(flatten)]
        values: Values<StringPattern>,
    },
    /// `request.auth.principal`; HTTP only.
    RequestPrincipal(Values<RequestPrincipalPattern>),
    /// `request.auth.audiences`; HTTP only.
    RequestAudiences(Values<StringPattern>),
    /// `request.auth.presenter`; HTTP only.
    RequestPresenter(Values<StringPattern>),
    /// `request.auth.claims[a][b]`: the claim path; HTTP only. A string claim, or a
    /// list of strings any of which matches.
    RequestClaim {
        claim: Vec<String>,
        #[serde(flatten)]
        values: Values<StringPattern>,
    },
    /// A key Trellis cannot evaluate (`experimental.envoy.filters.*`): an ALLOW rule
    /// with it never matches; in other actions it is left out, widening the rule.
    Unsupported { attribute: String },
}

impl Condition {
    /// True for conditions only HTTP requests can satisfy.
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            Condition::RequestHeader { .. }
                | Condition::RequestPrincipal(_)
                | Condition::RequestAudiences(_)
                | Condition::RequestPresenter(_)
                | Condition::RequestClaim { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_and_write_by_key() {
        let c = Condition::RequestHeader {
            name: "x-user".into(),
            values: Values {
                values: vec![StringPattern::Exact("alice".into())],
                not_values: vec![],
            },
        };
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(
            json,
            r#"{"key":"requestHeader","name":"x-user","values":[{"exact":"alice"}]}"#
        );
        assert_eq!(serde_json::from_str::<Condition>(&json).expect("back"), c);
        let ip: Condition =
            serde_json::from_str(r#"{"key":"sourceIp","notValues":["10.0.0.0/8"]}"#).expect("ip");
        assert!(matches!(ip, Condition::SourceIp(v) if v.not_values.len() == 1));
    }
}
