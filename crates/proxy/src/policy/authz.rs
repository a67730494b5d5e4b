//! AuthorizationPolicy evaluation. Compiled once per config into two tiers — one for
//! HTTP requests, one for TCP connections — so a request only compares: on TCP an
//! ALLOW rule that needs HTTP attributes is gone (it never allows), and DENY, AUDIT
//! and CUSTOM rules lose their HTTP-only parts (they match more), as Istio builds its
//! TCP filter. [`authorize`] then runs Istio's order: CUSTOM, DENY, ALLOW; AUDIT records.

use trellis_model::security::{AuthzAction, AuthzPolicy};

use super::PolicyError;
use super::attributes::RequestAttributes;
use super::rules::{Checks, Draft, Rule, principal_hash};

/// Every AuthorizationPolicy of one proxy, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct CompiledAuthz {
    http: Tier,
    tcp: Tier,
    /// `istio.io/dry-run` policies, evaluated apart and never enforced.
    dry_run: Option<Box<(Tier, Tier)>>,
}

/// The outcome of one evaluation; names borrow from the [`CompiledAuthz`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    pub verdict: Verdict<'p>,
    /// Some AUDIT policy matched: the request should be recorded for audit.
    pub audit: bool,
    /// What the dry-run policies alone would have decided, when there are any.
    pub dry_run: Option<Verdict<'p>>,
}

/// Allowed, or denied (403 `RBAC: access denied` for HTTP, closed for TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'p> {
    Allow,
    /// `policy` is the CUSTOM or DENY policy that matched (`namespace/name`); `None`
    /// when the request was denied because no ALLOW policy matched it.
    Deny {
        policy: Option<&'p str>,
    },
}

impl Decision<'_> {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Policies by action, for one kind of traffic.
#[derive(Debug, Clone, Default)]
struct Tier {
    custom: Vec<Policy>,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    /// Some ALLOW policy applies (even one left without rules): a request that none
    /// allows is denied.
    has_allow: bool,
    /// The checks of every rule above, in order.
    checks: Checks,
}

#[derive(Debug, Clone)]
struct Policy {
    name: Box<str>,
    rules: Vec<Rule>,
}

impl Policy {
    #[inline]
    fn matches(&self, checks: &Checks, a: &RequestAttributes<'_>, principal: Option<u64>) -> bool {
        for rule in &self.rules {
            if rule.matches(checks, a, principal) {
                return true;
            }
        }
        false
    }
}

impl Tier {
    fn add(&mut self, action: AuthzAction, name: &str, drafts: &[Draft], tcp: bool) {
        let policy = Policy {
            name: name.into(),
            rules: drafts
                .iter()
                .filter_map(|r| r.for_traffic(action, tcp, &mut self.checks))
                .collect(),
        };
        match action {
            AuthzAction::Custom => self.custom.push(policy),
            AuthzAction::Deny => self.deny.push(policy),
            AuthzAction::Allow => {
                self.has_allow = true;
                self.allow.push(policy);
            }
            AuthzAction::Audit => self.audit.push(policy),
        }
    }

    #[inline]
    fn decide(&self, a: &RequestAttributes<'_>, principal: Option<u64>) -> Verdict<'_> {
        // No extension provider can be asked, so a CUSTOM match fails closed.
        for p in self.custom.iter().chain(&self.deny) {
            if p.matches(&self.checks, a, principal) {
                return Verdict::Deny {
                    policy: Some(&p.name),
                };
            }
        }
        if !self.has_allow
            || self
                .allow
                .iter()
                .any(|p| p.matches(&self.checks, a, principal))
        {
            Verdict::Allow
        } else {
            Verdict::Deny { policy: None }
        }
    }
}

impl CompiledAuthz {
    /// Compiles the policies of one proxy.
    pub fn compile(policies: &[AuthzPolicy]) -> Result<Self, PolicyError> {
        let mut out = CompiledAuthz::default();
        let mut dry_run: Option<(Tier, Tier)> = None;
        for p in policies {
            let rules = p
                .rules
                .iter()
                .map(|r| Draft::compile(&p.name, r))
                .collect::<Result<Vec<_>, _>>()?;
            let (http, tcp) = if p.dry_run {
                let d = dry_run.get_or_insert_with(Default::default);
                (&mut d.0, &mut d.1)
            } else {
                (&mut out.http, &mut out.tcp)
            };
            http.add(p.action, &p.name, &rules, false);
            tcp.add(p.action, &p.name, &rules, true);
        }
        out.dry_run = dry_run.map(Box::new);
        Ok(out)
    }

    /// True when no policy applies (everything is allowed, nothing audited).
    pub fn is_empty(&self) -> bool {
        let empty = |t: &Tier| {
            t.custom.is_empty() && t.deny.is_empty() && !t.has_allow && t.audit.is_empty()
        };
        empty(&self.http) && self.dry_run.is_none()
    }
}

/// Decides one request or connection (`a.http` is `None` for TCP).
#[inline]
pub fn authorize<'p>(authz: &'p CompiledAuthz, a: &RequestAttributes<'_>) -> Decision<'p> {
    let pick = |http: &'p Tier, tcp: &'p Tier| if a.http.is_some() { http } else { tcp };
    let tier = pick(&authz.http, &authz.tcp);
    let principal = a.source_principal.map(principal_hash);
    Decision {
        verdict: tier.decide(a, principal),
        audit: tier
            .audit
            .iter()
            .any(|p| p.matches(&tier.checks, a, principal)),
        dry_run: authz
            .dry_run
            .as_ref()
            .map(|d| pick(&d.0, &d.1).decide(a, principal)),
    }
}
