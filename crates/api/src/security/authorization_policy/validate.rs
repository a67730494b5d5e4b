//! Istio's validation of an AuthorizationPolicy: how it attaches, what each action
//! requires (CUSTOM a provider, DENY rules), and every rule's `from`, `to` and `when`
//! entries. Findings go to the [`Checker`] at the field they concern.

use super::conditions::check_condition;
use super::spec::{Action, AuthorizationPolicy, Operation, Rule, Source};
use super::values::{check_path_template, check_port_text, check_service_account, parse_go_bool};
use crate::check::{Checker, Validate, rules};
use crate::meta::ObjectMeta;

/// What Trellis says of every CUSTOM policy: the external authorizer cannot be asked,
/// so the proxy fails closed.
pub const CUSTOM_NOT_SUPPORTED: &str =
    "CUSTOM: no extension provider is supported yet; matching requests are denied";

impl AuthorizationPolicy {
    fn check_dry_run(&self, meta: &ObjectMeta, c: &mut Checker) {
        let Some(value) = meta.annotations.get(crate::security::DRY_RUN_ANNOTATION) else {
            return;
        };
        match self.action {
            Action::Allow | Action::Deny => {
                if parse_go_bool(value).is_none() {
                    c.error(format!(
                        "annotation `{}` has an invalid value `{value}` (use \"true\" or \"false\")",
                        crate::security::DRY_RUN_ANNOTATION
                    ));
                }
            }
            other => c.error(format!(
                "annotation `{}` only supports action ALLOW or DENY, found {other}",
                crate::security::DRY_RUN_ANNOTATION
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
                c.error(e.to_string());
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
            Err(e) => c.error(e.to_string()),
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
                c.error(e.to_string());
            }
        });
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        crate::security::check_attachment(
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
                c.warn(CUSTOM_NOT_SUPPORTED);
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
