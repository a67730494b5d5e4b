//! AuthorizationPolicies for one workload: those in the root namespace and in the
//! workload's own that attach to it, in Istio's order, typed for evaluation. A value
//! that cannot be read fails closed as Istio does: it drops its whole rule from an
//! ALLOW policy (less is allowed) and only itself from the others (more is denied).

use trellis_api::Resource;
use trellis_api::security::{
    Action, AuthorizationPolicy, Condition as WrittenCondition, Operation as WrittenOperation,
    Rule, Source as WrittenSource,
};
use trellis_model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, Operation, Source, Values,
};

use super::values::{self, Key};
use super::{Attachment, PolicyTarget, attaches, lookup_namespaces, name_of};
use crate::Note;
use crate::mesh::Mesh;

/// What Trellis says of every CUSTOM policy, wherever it is loaded, validated or
/// compiled (the text is the API crate's, which validation reports).
pub use trellis_api::security::CUSTOM_NOT_SUPPORTED;

/// The policies that apply to `target`: the root namespace's first, then its own,
/// each oldest first.
pub(super) fn policies(
    mesh: &Mesh,
    target: &PolicyTarget<'_>,
    classic: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Vec<AuthzPolicy> {
    let mut out = Vec::new();
    for ns in lookup_namespaces(target) {
        for (r, ap) in &mesh.authorization_policies {
            if r.meta.namespace_or_default() != ns {
                continue;
            }
            let a = Attachment::new(
                ap.selector.as_ref(),
                ap.target_ref.as_ref(),
                &ap.target_refs,
            );
            if attaches(&a, ns, target, classic) {
                out.push(policy(r, ap, notes));
            }
        }
    }
    out
}

/// One policy in evaluation form.
fn policy(r: &Resource, ap: &AuthorizationPolicy, notes: &mut Vec<Note>) -> AuthzPolicy {
    let action = match ap.action {
        Action::Allow => AuthzAction::Allow,
        Action::Deny => AuthzAction::Deny,
        Action::Audit => AuthzAction::Audit,
        Action::Custom => AuthzAction::Custom,
    };
    let mut cx = Cx {
        action,
        resource: format!("AuthorizationPolicy {}", name_of(r)),
        namespace: r.meta.namespace_or_default().to_string(),
        notes,
        broken: false,
    };
    if action == AuthzAction::Custom {
        cx.note(CUSTOM_NOT_SUPPORTED.to_string());
    }
    let rules = ap
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, rule)| cx.rule(i, rule))
        .collect();
    AuthzPolicy {
        name: name_of(r),
        action,
        provider: ap.provider.as_ref().map(|p| p.name.clone()),
        dry_run: AuthorizationPolicy::is_dry_run(&r.meta),
        rules,
    }
}

/// The policy being converted, and whether the current rule lost something.
struct Cx<'a> {
    action: AuthzAction,
    resource: String,
    /// The policy's namespace, for service accounts written without one.
    namespace: String,
    notes: &'a mut Vec<Note>,
    broken: bool,
}

impl Cx<'_> {
    fn note(&mut self, message: String) {
        self.notes.push(Note {
            resource: self.resource.clone(),
            message,
        });
    }

    /// Something in a rule cannot be read: an ALLOW rule is dropped, otherwise only
    /// that thing is.
    fn unreadable(&mut self, what: String) {
        if self.action == AuthzAction::Allow {
            self.broken = true;
            self.note(format!(
                "{what}; the ALLOW rule is left out (it allows nothing)"
            ));
        } else {
            self.note(format!("{what}; left out, which widens the rule"));
        }
    }

    fn rule(&mut self, index: usize, rule: &Rule) -> Option<AuthzRule> {
        self.broken = false;
        let mut out = AuthzRule::default();
        for from in rule.from.iter().flatten() {
            match &from.source {
                Some(s) => out.from.push(self.source(s)),
                None => self.unreadable(format!("rule {index}: a `from` entry has no source")),
            }
        }
        for to in rule.to.iter().flatten() {
            match &to.operation {
                Some(o) => out.to.push(self.operation(o)),
                None => self.unreadable(format!("rule {index}: a `to` entry has no operation")),
            }
        }
        for c in &rule.when {
            if let Some(c) = self.condition(c) {
                out.when.push(c);
            }
        }
        (!self.broken).then_some(out)
    }

    /// Reads each value with `read`, keeping those that can be read.
    fn list<T>(
        &mut self,
        field: &str,
        items: &[String],
        read: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match read(item) {
                Ok(v) => out.push(v),
                Err(e) => self.unreadable(format!("{field}: {e}")),
            }
        }
        out
    }

    fn source(&mut self, s: &WrittenSource) -> Source {
        let policy_ns = self.namespace.clone();
        let pattern = |t: &str| Ok(values::pattern(t));
        let principal = |t: &str| Ok(values::request_principal(t));
        let sa = |t: &str| values::service_account(t, &policy_ns);
        Source {
            principals: self.list("principals", &s.principals, pattern),
            not_principals: self.list("notPrincipals", &s.not_principals, pattern),
            request_principals: self.list("requestPrincipals", &s.request_principals, principal),
            not_request_principals: self.list(
                "notRequestPrincipals",
                &s.not_request_principals,
                principal,
            ),
            namespaces: self.list("namespaces", &s.namespaces, pattern),
            not_namespaces: self.list("notNamespaces", &s.not_namespaces, pattern),
            service_accounts: self.list("serviceAccounts", &s.service_accounts, sa),
            not_service_accounts: self.list("notServiceAccounts", &s.not_service_accounts, sa),
            trust_domains: self.list("trustDomains", &s.trust_domains, pattern),
            not_trust_domains: self.list("notTrustDomains", &s.not_trust_domains, pattern),
            ip_blocks: self.list("ipBlocks", &s.ip_blocks, values::cidr),
            not_ip_blocks: self.list("notIpBlocks", &s.not_ip_blocks, values::cidr),
            remote_ip_blocks: self.list("remoteIpBlocks", &s.remote_ip_blocks, values::cidr),
            not_remote_ip_blocks: self.list(
                "notRemoteIpBlocks",
                &s.not_remote_ip_blocks,
                values::cidr,
            ),
        }
    }

    fn operation(&mut self, o: &WrittenOperation) -> Operation {
        let pattern = |t: &str| Ok(values::pattern(t));
        Operation {
            hosts: self.list("hosts", &o.hosts, pattern),
            not_hosts: self.list("notHosts", &o.not_hosts, pattern),
            ports: self.list("ports", &o.ports, values::port),
            not_ports: self.list("notPorts", &o.not_ports, values::port),
            methods: self.list("methods", &o.methods, pattern),
            not_methods: self.list("notMethods", &o.not_methods, pattern),
            paths: self.list("paths", &o.paths, values::path),
            not_paths: self.list("notPaths", &o.not_paths, values::path),
        }
    }

    fn values<T>(
        &mut self,
        c: &WrittenCondition,
        read: impl Fn(&str) -> Result<T, String>,
    ) -> Values<T> {
        let field = format!("when {}", c.key);
        Values {
            values: self.list(&field, &c.values, &read),
            not_values: self.list(&field, &c.not_values, &read),
        }
    }

    fn condition(&mut self, c: &WrittenCondition) -> Option<Condition> {
        let key = match values::key(&c.key) {
            Ok(k) => k,
            Err(e) => {
                self.unreadable(format!("when: {e}"));
                return None;
            }
        };
        let text = |t: &str| Ok(values::pattern(t));
        Some(match key {
            Key::SourceIp => Condition::SourceIp(self.values(c, values::cidr)),
            Key::RemoteIp => Condition::RemoteIp(self.values(c, values::cidr)),
            Key::DestinationIp => Condition::DestinationIp(self.values(c, values::cidr)),
            Key::DestinationPort => Condition::DestinationPort(self.values(c, values::port)),
            Key::SourceNamespace => Condition::SourceNamespace(self.values(c, text)),
            Key::SourcePrincipal => Condition::SourcePrincipal(self.values(c, text)),
            Key::ConnectionSni => Condition::ConnectionSni(self.values(c, text)),
            Key::RequestPrincipal => Condition::RequestPrincipal(
                self.values(c, |t: &str| Ok(values::request_principal(t))),
            ),
            Key::RequestAudiences => Condition::RequestAudiences(self.values(c, text)),
            Key::RequestPresenter => Condition::RequestPresenter(self.values(c, text)),
            Key::RequestHeader(name) => Condition::RequestHeader {
                name,
                values: self.values(c, text),
            },
            Key::RequestClaim(claim) => Condition::RequestClaim {
                claim,
                values: self.values(c, text),
            },
            Key::Unsupported => {
                self.note(format!(
                    "when key `{}` is not supported by Trellis: an ALLOW rule with it never matches; a DENY, AUDIT or CUSTOM rule ignores it",
                    c.key
                ));
                Condition::Unsupported {
                    attribute: c.key.clone(),
                }
            }
        })
    }
}
