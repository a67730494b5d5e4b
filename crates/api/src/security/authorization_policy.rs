//! AuthorizationPolicy: who may do what to the selected workloads. Rules match on
//! the source (`from`), the operation (`to`) and extra conditions (`when`); the
//! action says what a match means (allow, deny, audit, or ask an external
//! authorizer).

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate, rules};
use crate::meta::{ObjectMeta, PolicyTargetReference, WorkloadSelector};

/// `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// The workloads the policy applies to (absent: every workload in scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Attaches the policy to one Gateway, Service or ServiceEntry instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Attaches the policy to several resources instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The rules; absent and empty differ: an ALLOW policy without rules allows nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    /// What a matching request gets (ALLOW when absent).
    #[serde(default)]
    pub action: Action,
    /// The external authorizer a CUSTOM policy delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What an AuthorizationPolicy does with a request its rules match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Let it through (and deny what no ALLOW policy matches, once one exists).
    #[default]
    Allow,
    /// Reject it.
    Deny,
    /// Record it for auditing; no effect on the decision.
    Audit,
    /// Ask the external authorizer named by `provider`.
    Custom,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        })
    }
}

/// The extension provider (declared in mesh config) a CUSTOM policy uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// One rule: it matches when any `from`, any `to` and every `when` match
/// (an absent field matches everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// One entry of `from`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// Where a request comes from. Every set field must match; each list matches if
/// any item matches, and a `not*` list matches if none does. Values may use a
/// `*` prefix or suffix wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from mutual TLS (`cluster.local/ns/default/sa/web`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities from a JWT (`issuer/subject`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer, from its mutual-TLS identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts of the peer, as `namespace/name` or a bare name (policy's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Addresses of the directly connected peer (IPs or CIDR blocks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Addresses of the original client (X-Forwarded-For or PROXY protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// One entry of `to`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// What the request does. Lists match as in [`Source`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Host (`:authority`) values; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as decimal text (`"8080"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (or gRPC: always POST); HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Request paths; `*` prefix/suffix or `{*}`/`{**}` path templates; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An extra condition on a request attribute (`request.headers[x-user]`, `source.ip`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Source {
    /// `(field name, values)` for every list, in declaration order.
    pub fn lists(&self) -> [(&'static str, &[String]); 14] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }

    /// True when nothing is set (such a source would match everything, which is
    /// almost certainly a mistake).
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, v)| v.is_empty())
    }

    /// True when some field can be evaluated on a plain TCP connection.
    pub fn has_tcp_fields(&self) -> bool {
        !(self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.ip_blocks.is_empty()
            && self.not_ip_blocks.is_empty()
            && self.remote_ip_blocks.is_empty()
            && self.not_remote_ip_blocks.is_empty())
    }
}

impl Operation {
    /// `(field name, values)` for every list, in declaration order.
    pub fn lists(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, v)| v.is_empty())
    }

    /// True when some field can be evaluated on a plain TCP connection (ports).
    pub fn has_tcp_fields(&self) -> bool {
        !(self.ports.is_empty() && self.not_ports.is_empty())
    }
}

/// The condition keys Istio evaluates, with how their values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttributeKind {
    /// Values are IPs or CIDR blocks.
    Ip,
    /// Values are port numbers.
    Port,
    /// Any non-empty text.
    Text,
}

/// Exact condition keys.
const EXACT_ATTRIBUTES: &[(&str, AttributeKind)] = &[
    ("source.ip", AttributeKind::Ip),
    ("remote.ip", AttributeKind::Ip),
    ("source.namespace", AttributeKind::Text),
    ("source.principal", AttributeKind::Text),
    ("source.serviceAccount", AttributeKind::Text),
    ("source.trustDomain", AttributeKind::Text),
    ("request.auth.principal", AttributeKind::Text),
    ("request.auth.audiences", AttributeKind::Text),
    ("request.auth.presenter", AttributeKind::Text),
    ("destination.ip", AttributeKind::Ip),
    ("destination.port", AttributeKind::Port),
    ("connection.sni", AttributeKind::Text),
];

/// Condition keys written as `prefix[name]`.
const MAP_ATTRIBUTES: &[&str] = &[
    "request.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
];

/// Every condition key, for suggestions.
pub fn known_condition_keys() -> impl Iterator<Item = &'static str> {
    EXACT_ATTRIBUTES.iter().map(|(k, _)| *k).chain([
        "request.headers[]",
        "request.auth.claims[]",
        "experimental.envoy.filters.",
    ])
}

/// Checks a condition key and says how its values are to be checked.
fn check_attribute(key: &str) -> Result<AttributeKind, String> {
    if let Some((_, kind)) = EXACT_ATTRIBUTES.iter().find(|(k, _)| *k == key) {
        return Ok(*kind);
    }
    if let Some(prefix) = MAP_ATTRIBUTES.iter().find(|p| key.starts_with(*p)) {
        let open = key.find('[');
        let ok = key.ends_with(']') && open.is_some_and(|o| o > 0 && o < key.len() - 2);
        return if ok {
            Ok(AttributeKind::Text)
        } else {
            Err(format!(
                "bad key ({key}): should have format {}[name]",
                prefix.trim_end_matches('.')
            ))
        };
    }
    match key {
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace of the policy"
        )),
        k if k.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => {
            let hint = match rules::nearest(key, known_condition_keys()) {
                Some(n) => format!(" (did you mean `{n}`?)"),
                None => String::new(),
            };
            Err(format!("unknown attribute: {key}{hint}"))
        }
    }
}

/// An operation port: decimal digits, at most 65535.
pub fn check_port_text(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad port ({port}): ports are decimal numbers written as text, not port names"
        ));
    }
    match port.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(format!("bad port ({port}): must be at most 65535")),
    }
}

/// Template forms Envoy does not support once a path uses `{*}` or `{**}`: named
/// variables, empty braces, and bare `*`/`**` segments.
static UNSUPPORTED_TEMPLATE: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"/\{\w+=\*\*?\}|\{\w*\}|/\*\*?|\*\*?/").ok());

/// A path template (`{*}`, `{**}`) must use only the forms Envoy supports.
fn check_path_template(path: &str) -> Result<(), String> {
    if !(path.contains("{*}") || path.contains("{**}")) {
        return Ok(());
    }
    if UNSUPPORTED_TEMPLATE
        .as_ref()
        .is_some_and(|re| re.is_match(path))
    {
        return Err(format!(
            "invalid or unsupported path template `{path}`: use only `{{*}}` and `{{**}}` as whole segments"
        ));
    }
    Ok(())
}

/// A service account reference: `name` or `namespace/name`, no wildcards.
fn check_service_account(sa: &str) -> Result<(), String> {
    if sa.is_empty() {
        return Err("empty value not allowed".into());
    }
    if sa.len() > 320 {
        return Err(format!(
            "service account `{sa}` is longer than 320 characters"
        ));
    }
    if sa.contains('*') {
        return Err(format!(
            "service account `{sa}`: wildcards are not supported"
        ));
    }
    let parts: Vec<&str> = sa.split('/').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "service account `{sa}` must be `name` or `namespace/name`"
        ));
    }
    Ok(())
}

/// Go's `strconv.ParseBool` spellings, which is what the dry-run annotation accepts.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl AuthorizationPolicy {
    /// True when the policy is marked as a dry run (`istio.io/dry-run: "true"`).
    pub fn is_dry_run(meta: &ObjectMeta) -> bool {
        meta.annotations
            .get(super::DRY_RUN_ANNOTATION)
            .and_then(|v| parse_go_bool(v))
            .unwrap_or(false)
    }

    fn check_dry_run(&self, meta: &ObjectMeta, c: &mut Checker) {
        let Some(value) = meta.annotations.get(super::DRY_RUN_ANNOTATION) else {
            return;
        };
        match self.action {
            Action::Allow | Action::Deny => {
                if parse_go_bool(value).is_none() {
                    c.error(format!(
                        "annotation `{}` has an invalid value `{value}` (use \"true\" or \"false\")",
                        super::DRY_RUN_ANNOTATION
                    ));
                }
            }
            other => c.error(format!(
                "annotation `{}` only supports action ALLOW or DENY, found {other}",
                super::DRY_RUN_ANNOTATION
            )),
        }
    }

    /// CUSTOM delegates to an external authorizer, which cannot see identities
    /// established by the proxy; those fields are refused.
    fn check_custom(&self, rules: &[Rule], c: &mut Checker) {
        c.each("rules", rules, |c, _, rule| {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(src) = &from.source else { continue };
                c.at(&format!("from[{j}].source"), |c| {
                    for (name, values) in [
                        ("namespaces", &src.namespaces),
                        ("notNamespaces", &src.not_namespaces),
                        ("serviceAccounts", &src.service_accounts),
                        ("notServiceAccounts", &src.not_service_accounts),
                        ("principals", &src.principals),
                        ("notPrincipals", &src.not_principals),
                        ("requestPrincipals", &src.request_principals),
                        ("notRequestPrincipals", &src.not_request_principals),
                    ] {
                        if !values.is_empty() {
                            let mut cap = name.chars();
                            let title: String = cap
                                .next()
                                .map(|f| f.to_ascii_uppercase())
                                .into_iter()
                                .chain(cap)
                                .collect();
                            c.error_at(
                                name,
                                format!(
                                    "From.{title} is currently not supported with CUSTOM action"
                                ),
                            );
                        }
                    }
                });
            }
            c.each("when", &rule.when, |c, _, cond| {
                let key = cond.key.as_str();
                if matches!(
                    key,
                    "source.namespace" | "source.serviceAccount" | "source.principal"
                ) || key.starts_with("request.auth.")
                {
                    c.error_at(
                        "key",
                        format!("{key} is currently not supported with CUSTOM action"),
                    );
                }
            });
        });
    }
}

/// Reports an error at `field[i]` for every empty value in `values`.
fn no_empty_values(field: &str, values: &[String], c: &mut Checker) {
    c.each(field, values, |c, _, v| {
        if v.is_empty() {
            c.error(format!("empty value not allowed, found in {field}"));
        }
    });
}

fn check_source(src: &Source, rule_index: usize, c: &mut Checker) {
    if src.is_empty() {
        c.error(format!(
            "`from.source` must not be empty, found at rule {rule_index}: set at least one of principals, namespaces, serviceAccounts, ipBlocks, ..."
        ));
        return;
    }
    let identity = src.principals.len()
        + src.not_principals.len()
        + src.namespaces.len()
        + src.not_namespaces.len();
    if identity > 0 && src.service_accounts.len() + src.not_service_accounts.len() > 0 {
        c.error(format!(
            "cannot set serviceAccounts with namespaces or principals, found at rule {rule_index}; use separate `from` entries"
        ));
    }
    for (field, values) in [
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
    ] {
        c.each(field, values, |c, _, v| {
            if v.is_empty() {
                c.error(format!("empty value not allowed, found in {field}"));
            } else if rules::ip_or_cidr(v).is_err() {
                c.error(if v.contains('/') {
                    format!("bad CIDR range ({v}): expected an address and a prefix length, such as 10.0.0.0/16")
                } else {
                    format!("bad IP address ({v}): expected an IPv4 or IPv6 address, or a CIDR block")
                });
            }
        });
    }
    for (field, values) in [
        ("serviceAccounts", &src.service_accounts),
        ("notServiceAccounts", &src.not_service_accounts),
    ] {
        if values.len() > 16 {
            c.error_at(
                field,
                format!("at most 16 {field} are allowed, found {}", values.len()),
            );
        }
        c.each(field, values, |c, _, v| {
            if let Err(e) = check_service_account(v) {
                c.error(e);
            }
        });
    }
    for (field, values) in [
        ("principals", &src.principals),
        ("notPrincipals", &src.not_principals),
        ("requestPrincipals", &src.request_principals),
        ("notRequestPrincipals", &src.not_request_principals),
        ("namespaces", &src.namespaces),
        ("notNamespaces", &src.not_namespaces),
        ("trustDomains", &src.trust_domains),
        ("notTrustDomains", &src.not_trust_domains),
    ] {
        no_empty_values(field, values, c);
    }
}

fn check_operation(op: &Operation, rule_index: usize, c: &mut Checker) {
    if op.is_empty() {
        c.error(format!(
            "`to.operation` must not be empty, found at rule {rule_index}: set at least one of hosts, ports, methods, paths or their not* forms"
        ));
        return;
    }
    for (field, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        c.each(field, values, |c, _, v| match check_port_text(v) {
            Err(e) => c.error(e),
            Ok(0) => c.warn(format!("port 0 in {field} never matches any traffic")),
            Ok(_) => {}
        });
    }
    for (field, values) in [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
    ] {
        no_empty_values(field, values, c);
    }
    for (field, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        c.each(field, values, |c, _, v| {
            if v.is_empty() {
                c.error(format!("empty value not allowed, found in {field}"));
            } else if let Err(e) = check_path_template(v) {
                c.error(e);
            }
        });
    }
}

fn check_condition(cond: &Condition, c: &mut Checker) {
    let key = cond.key.as_str();
    if key.is_empty() {
        c.error_at("key", "`key` must not be empty");
        return;
    }
    if cond.values.is_empty() && cond.not_values.is_empty() {
        c.error(format!(
            "at least one of `values` or `notValues` must be set for key {key}"
        ));
        return;
    }
    let kind = match check_attribute(key) {
        Ok(kind) => kind,
        Err(e) => {
            c.error_at("key", e);
            return;
        }
    };
    for (field, values) in [("values", &cond.values), ("notValues", &cond.not_values)] {
        c.each(field, values, |c, _, v| {
            if v.is_empty() {
                c.error(format!("empty value not allowed for key {key}"));
                return;
            }
            let result = match kind {
                AttributeKind::Ip => rules::ip_or_cidr(v),
                AttributeKind::Port => check_port_text(v).map(|_| ()),
                AttributeKind::Text => Ok(()),
            };
            if let Err(e) = result {
                c.error(format!("invalid value for key {key}: {e}"));
            }
        });
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        super::check_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            c,
        );
        self.check_dry_run(meta, c);

        let has_rules = self.rules.as_ref().is_some_and(|r| !r.is_empty());
        let never = "is meaningless as it will never be triggered; add an empty rule `{}` to match every request";
        match self.action {
            Action::Custom => {
                if !has_rules {
                    c.error(format!("CUSTOM action without `rules` {never}"));
                }
                match &self.provider {
                    None => c.error(
                        "`provider.name` must not be empty: a CUSTOM policy needs the extension provider to call",
                    ),
                    Some(p) if p.name.is_empty() => {
                        c.error_at("provider.name", "`provider.name` must not be empty")
                    }
                    Some(_) => {}
                }
                if let Some(rules) = &self.rules {
                    self.check_custom(rules, c);
                }
            }
            Action::Deny if !has_rules => {
                c.error(format!("DENY action without `rules` {never}"));
            }
            Action::Audit if !has_rules => {
                c.warn(format!("AUDIT action without `rules` {never}"));
            }
            _ => {}
        }
        if self.provider.is_some() && self.action != Action::Custom {
            c.error_at(
                "provider",
                format!(
                    "`provider` must not be with non CUSTOM action, found {}",
                    self.action
                ),
            );
        }

        let Some(rules) = &self.rules else { return };
        if rules.len() > 512 {
            c.error_at(
                "rules",
                format!("at most 512 rules are allowed, found {}", rules.len()),
            );
        }
        c.each("rules", rules, |c, i, rule| {
            let mut http_only_from = false;
            let mut http_only_to = false;
            if let Some(from) = &rule.from {
                if from.is_empty() {
                    c.error_at("from", format!("`from` must not be empty, found at rule {i}"));
                }
                if from.len() > 512 {
                    c.error_at(
                        "from",
                        format!("at most 512 `from` entries are allowed, found {}", from.len()),
                    );
                }
                let mut any_tcp = false;
                c.each("from", from, |c, _, f| match &f.source {
                    None => c.error(format!(
                        "`from.source` must not be nil, found at rule {i}: each `from` entry needs a `source`"
                    )),
                    Some(src) => {
                        any_tcp |= src.has_tcp_fields();
                        c.at("source", |c| check_source(src, i, c));
                    }
                });
                http_only_from = !from.is_empty() && !any_tcp;
            }
            if let Some(to) = &rule.to {
                if to.is_empty() {
                    c.error_at("to", format!("`to` must not be empty, found at rule {i}"));
                }
                let mut any_tcp = false;
                c.each("to", to, |c, _, t| match &t.operation {
                    None => c.error(format!(
                        "`to.operation` must not be nil, found at rule {i}: each `to` entry needs an `operation`"
                    )),
                    Some(op) => {
                        any_tcp |= op.has_tcp_fields();
                        c.at("operation", |c| check_operation(op, i, c));
                    }
                });
                http_only_to = !to.is_empty() && !any_tcp;
            }
            c.each("when", &rule.when, |c, _, cond| check_condition(cond, c));

            let has_to = rule.to.as_ref().is_some_and(|t| !t.is_empty());
            if self.action == Action::Deny && ((http_only_from && !has_to) || http_only_to) {
                c.warn(
                    "this DENY rule uses only HTTP attributes, so it will deny all traffic to TCP ports in its scope; name the ports explicitly",
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::security::test_support::{assert_clean, assert_error, errors, warnings};

    fn ap(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: shop\nspec:\n{spec}"
        )
    }

    fn rule_from(source: &str) -> String {
        ap(&format!("  rules:\n  - from:\n    - source:\n{source}"))
    }

    fn rule_to(operation: &str) -> String {
        ap(&format!("  rules:\n  - to:\n    - operation:\n{operation}"))
    }

    fn rule_when(condition: &str) -> String {
        ap(&format!("  rules:\n  - when:\n    - {condition}\n"))
    }

    #[test]
    fn allow_nothing_and_allow_all_are_valid() {
        assert_clean(&ap("  {}\n"));
        assert_clean(&ap("  rules:\n  - {}\n"));
    }

    #[test]
    fn custom_action_requires_provider() {
        assert_error(
            &ap("  action: CUSTOM\n  rules:\n  - {}\n"),
            "`provider.name` must not be empty",
        );
        assert_error(
            &ap("  action: CUSTOM\n  provider: {}\n  rules:\n  - {}\n"),
            "`provider.name` must not be empty",
        );
        assert_clean(&ap(
            "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - {}\n",
        ));
    }

    #[test]
    fn provider_requires_custom_action() {
        assert_error(
            &ap("  provider:\n    name: ext\n  rules:\n  - {}\n"),
            "`provider` must not be with non CUSTOM action, found ALLOW",
        );
    }

    #[test]
    fn deny_and_custom_need_rules() {
        assert_error(&ap("  action: DENY\n"), "DENY action without `rules`");
        assert_error(
            &ap("  action: CUSTOM\n  provider:\n    name: ext\n"),
            "CUSTOM action without `rules`",
        );
        let audit = ap("  action: AUDIT\n");
        assert_clean(&audit);
        assert_eq!(warnings(&audit).len(), 1);
    }

    #[test]
    fn custom_action_refuses_identity_fields() {
        assert_error(
            &ap(
                "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - from:\n    - source:\n        principals: [a]\n",
            ),
            "From.Principals is currently not supported with CUSTOM action",
        );
        assert_error(
            &ap(
                "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - when:\n    - key: request.auth.claims[iss]\n      values: [x]\n",
            ),
            "request.auth.claims[iss] is currently not supported with CUSTOM action",
        );
    }

    #[test]
    fn unknown_action_suggests_the_nearest() {
        assert_error(&ap("  action: DENNY\n"), "did you mean `DENY`?");
    }

    #[test]
    fn empty_from_source_and_operation_are_rejected() {
        assert_error(
            &ap("  rules:\n  - from: []\n"),
            "`from` must not be empty, found at rule 0",
        );
        assert_error(
            &ap("  rules:\n  - from:\n    - {}\n"),
            "`from.source` must not be nil",
        );
        assert_error(
            &ap("  rules:\n  - from:\n    - source: {}\n"),
            "`from.source` must not be empty",
        );
        assert_error(&ap("  rules:\n  - to: []\n"), "`to` must not be empty");
        assert_error(
            &ap("  rules:\n  - to:\n    - {}\n"),
            "`to.operation` must not be nil",
        );
        assert_error(
            &ap("  rules:\n  - to:\n    - operation: {}\n"),
            "`to.operation` must not be empty",
        );
    }

    #[test]
    fn ip_blocks_must_be_ips_or_cidrs() {
        assert_error(
            &rule_from("        ipBlocks: [10.20.0.0/33]\n"),
            "bad CIDR range (10.20.0.0/33)",
        );
        assert_error(
            &rule_from("        notRemoteIpBlocks: [not-an-ip]\n"),
            "bad IP address (not-an-ip)",
        );
        assert_clean(&rule_from(
            "        ipBlocks: [1.2.3.4, 5.6.0.0/16, \"2001:db8::/32\"]\n",
        ));
    }

    #[test]
    fn ports_must_be_numeric() {
        let errs = errors(&rule_to("        ports: [https]\n"));
        assert!(
            errs.iter()
                .any(|e| e.contains("bad port (https)") && e.contains("ports[0]")),
            "{errs:?}"
        );
        assert_error(
            &rule_to("        notPorts: [\"70000\"]\n"),
            "bad port (70000)",
        );
        assert_clean(&rule_to("        ports: [\"8080\"]\n"));
    }

    #[test]
    fn empty_values_are_rejected() {
        assert_error(
            &rule_from("        principals: [\"\"]\n"),
            "empty value not allowed, found in principals",
        );
        assert_error(
            &rule_from("        namespaces: [\"\"]\n"),
            "empty value not allowed, found in namespaces",
        );
        assert_error(
            &rule_to("        methods: [\"\"]\n"),
            "empty value not allowed, found in methods",
        );
    }

    #[test]
    fn service_accounts_exclude_principals_and_namespaces() {
        assert_error(
            &rule_from("        serviceAccounts: [shop/checkout]\n        namespaces: [shop]\n"),
            "cannot set serviceAccounts with namespaces or principals",
        );
        assert_error(
            &rule_from("        notServiceAccounts: [a]\n        principals: [b]\n"),
            "cannot set serviceAccounts with namespaces or principals",
        );
        assert_error(
            &rule_from("        serviceAccounts: [a/b/c]\n"),
            "`namespace/name`",
        );
        assert_clean(&rule_from("        serviceAccounts: [shop/checkout, sa]\n"));
    }

    #[test]
    fn path_templates_are_limited() {
        assert_clean(&rule_to("        paths: [\"/a/{*}\", \"/{**}/b\"]\n"));
        assert_error(
            &rule_to("        paths: [\"/a/{*}/{name}\"]\n"),
            "unsupported path template",
        );
        assert_error(
            &rule_to("        paths: [\"/{*}/*/b\"]\n"),
            "unsupported path template",
        );
    }

    #[test]
    fn condition_needs_values() {
        assert_error(
            &rule_when("key: request.headers[x-tenant]"),
            "at least one of `values` or `notValues` must be set for key request.headers[x-tenant]",
        );
    }

    #[test]
    fn condition_keys_must_be_known() {
        assert_error(
            &rule_when("key: request.body\n      values: [x]"),
            "unknown attribute: request.body",
        );
        assert_error(
            &rule_when("key: source.principle\n      values: [x]"),
            "did you mean `source.principal`?",
        );
        assert_error(
            &rule_when("key: destination.namespace\n      values: [x]"),
            "replaced by the metadata.namespace",
        );
        assert_error(
            &rule_when("key: destination.labels[app]\n      values: [x]"),
            "replaced by the workload selector",
        );
        assert_error(
            &rule_when("key: request.headers\n      values: [x]"),
            "should have format request.headers[name]",
        );
        assert_error(
            &rule_when("key: \"\"\n      values: [x]"),
            "`key` must not be empty",
        );
    }

    #[test]
    fn condition_values_follow_the_key() {
        assert_error(
            &rule_when("key: source.ip\n      values: [10.0.0.0/40]"),
            "invalid value for key source.ip",
        );
        assert_error(
            &rule_when("key: destination.port\n      notValues: [http]"),
            "invalid value for key destination.port",
        );
        for key in [
            "request.headers[:method]",
            "request.auth.claims[nested1][nested2]",
            "experimental.envoy.filters.a.b[c]",
            "source.trustDomain",
            "connection.sni",
        ] {
            assert_clean(&rule_when(&format!("key: \"{key}\"\n      values: [x]")));
        }
    }

    #[test]
    fn selector_and_target_ref_are_exclusive() {
        assert_error(
            &ap(
                "  selector:\n    matchLabels:\n      app: cart\n  targetRef:\n    group: gateway.networking.k8s.io\n    kind: Gateway\n    name: edge\n  rules:\n  - {}\n",
            ),
            "only one of `selector`, `targetRef` or `targetRefs` can be set",
        );
    }

    #[test]
    fn target_ref_kind_and_namespace_are_checked() {
        assert_error(
            &ap("  targetRef:\n    group: apps\n    kind: Deployment\n    name: cart\n"),
            "targetRef must be to one of",
        );
        assert_error(
            &ap(
                "  targetRef:\n    group: \"\"\n    kind: Service\n    name: cart\n    namespace: billing\n",
            ),
            "targetRef namespace must not be set",
        );
        assert_error(
            &ap("  targetRefs:\n  - group: \"\"\n    kind: Service\n"),
            "targetRef name must be set",
        );
        assert_clean(&ap(
            "  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: cart\n  - group: gateway.networking.k8s.io\n    kind: GatewayClass\n    name: waypoint\n",
        ));
    }

    #[test]
    fn dry_run_needs_allow_or_deny_and_a_boolean() {
        let with = |value: &str, action: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: \"{value}\"\nspec:\n  action: {action}\n  provider:\n    name: ext\n  rules:\n  - {{}}\n"
            )
        };
        assert_error(
            &with("true", "CUSTOM"),
            "only supports action ALLOW or DENY",
        );
        let allow = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: \"maybe\"\nspec:\n  rules:\n  - {}\n";
        assert_error(allow, "invalid value `maybe`");
    }

    #[test]
    fn deny_with_only_http_fields_warns_about_tcp() {
        let doc =
            ap("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n");
        assert_clean(&doc);
        assert!(warnings(&doc).iter().any(|w| w.contains("TCP ports")));
        let with_port = ap(
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n        ports: [\"80\"]\n",
        );
        assert!(warnings(&with_port).is_empty());
    }

    #[test]
    fn errors_point_at_the_field() {
        let errs = errors(&rule_from("        ipBlocks: [1.2.3.4, bad]\n"));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.rules[0].from[0].source.ipBlocks[1]:")),
            "{errs:?}"
        );
    }
}
