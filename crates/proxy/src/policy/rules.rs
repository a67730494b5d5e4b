//! One authorization rule in request-time form, and how it is built from the model.
//! A [`Draft`] holds a rule's checks as written; [`Draft::for_traffic`] makes the form
//! for HTTP or TCP (on TCP, ALLOW rules that need HTTP are dropped, other rules lose
//! their HTTP parts) and lays its checks into one arena per tier, so evaluating a policy
//! set walks memory in order. The exact principals a rule names are hashed into it.

use http::HeaderName;
use trellis_model::security::{
    AuthzAction, AuthzRule, Cidr, Condition, Operation, PathPattern, RequestPrincipalPattern,
    Source, StringPattern, Values, parse_template,
};

use super::PolicyError;
use super::attributes::{RequestAttributes, spiffe_parts};
use super::matcher::{Host, Lit, Path, Set, Text, any_text, claim_matches};

/// Any `from` entry (all its checks), any `to` entry, every `when` check; the checks
/// live in the tier's [`Checks`] arena.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// The exact peer principals the rule can match (hashed), checked first.
    principals: PrincipalFilter,
    /// A copy of one check every match needs (the first of its only `from` entry, or
    /// else of its only `to` entry, or its first condition), kept in the rule itself:
    /// most rules fail here, before their lists are read.
    lead: Option<Check>,
    from: Entries,
    to: Entries,
    when: Span,
}

/// A rule as compiled from the model, before it is split by traffic.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    from: Vec<Vec<Check>>,
    to: Vec<Vec<Check>>,
    when: Vec<Check>,
}

/// The checks of every rule of a tier, in order.
#[derive(Debug, Clone, Default)]
pub(super) struct Checks(Vec<Check>);

/// A run of checks in the arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Checks {
    fn push(&mut self, checks: impl Iterator<Item = Check>) -> Span {
        let start = self.0.len() as u32;
        self.0.extend(checks);
        Span {
            start,
            end: self.0.len() as u32,
        }
    }

    #[inline]
    fn get(&self, span: Span) -> &[Check] {
        self.0
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }
}

/// A `from` or `to` list: none written (matches everything), one entry (the common
/// case), or several (any matches).
#[derive(Debug, Clone)]
enum Entries {
    Any,
    One(Span),
    Many(Box<[Span]>),
}

/// One field of a source or operation, or one condition: any value matches, or
/// (`negate`) none does. An absent attribute matches no value.
#[derive(Debug, Clone)]
struct Check {
    test: Test,
    negate: bool,
}

#[derive(Debug, Clone)]
enum Test {
    Principal(Set<Text>),
    Namespace(Set<Text>),
    /// `(namespace, service account)`.
    ServiceAccount(Set<(Lit, Lit)>),
    TrustDomain(Set<Text>),
    SourceIp(Set<Cidr>),
    RemoteIp(Set<Cidr>),
    DestinationIp(Set<Cidr>),
    DestinationPort(Set<u16>),
    Sni(Set<Text>),
    // HTTP only from here.
    Host(Set<Host>),
    Method(Set<Text>),
    Path(Set<Path>),
    Header(HeaderName, Set<Text>),
    /// `(issuer, subject)` patterns.
    RequestPrincipal(Set<(Text, Text)>),
    /// A claim path (`aud` and `azp` for audiences and presenter).
    Claim(Box<[String]>, Set<Text>),
    /// Cannot be evaluated (an `experimental.envoy.filters` key).
    Unsupported,
}

/// The exact peer principals (their hashes) a rule can match; `Any` unless every
/// `from` entry names them exactly. Only a shortcut: a hit still runs every check.
#[derive(Debug, Clone, Default)]
enum PrincipalFilter {
    #[default]
    Any,
    One(u64),
    Set(Box<[u64]>),
}

/// FNV-1a over the principal (a collision only costs a full check).
#[inline]
pub(super) fn principal_hash(principal: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in principal.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl PrincipalFilter {
    fn of(entries: &[Vec<Check>]) -> Self {
        if entries.is_empty() {
            return PrincipalFilter::Any;
        }
        let mut hashes = Vec::new();
        for entry in entries {
            let exact = entry.iter().find_map(|c| match &c.test {
                Test::Principal(ps) if !c.negate && ps.all(|p| matches!(p, Text::Exact(_))) => {
                    Some(ps)
                }
                _ => None,
            });
            let Some(ps) = exact else {
                return PrincipalFilter::Any;
            };
            for p in ps.as_slice() {
                if let Text::Exact(lit) = p {
                    let text = std::str::from_utf8(lit.as_bytes()).unwrap_or_default();
                    hashes.push(principal_hash(text));
                }
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        match hashes.as_slice() {
            [] => PrincipalFilter::Any,
            [one] => PrincipalFilter::One(*one),
            _ => PrincipalFilter::Set(hashes.into_boxed_slice()),
        }
    }

    #[inline]
    fn admits(&self, principal: Option<u64>) -> bool {
        match self {
            PrincipalFilter::Any => true,
            PrincipalFilter::One(h) => principal == Some(*h),
            PrincipalFilter::Set(hs) => principal.is_some_and(|p| hs.contains(&p)),
        }
    }
}

impl Test {
    fn http_only(&self) -> bool {
        matches!(
            self,
            Test::Host(_)
                | Test::Method(_)
                | Test::Path(_)
                | Test::Header(..)
                | Test::RequestPrincipal(_)
                | Test::Claim(..)
        )
    }

    /// Whether this test can be evaluated on this kind of traffic.
    fn evaluable(&self, tcp: bool) -> bool {
        let unusable = matches!(self, Test::Unsupported) || (tcp && self.http_only());
        !unusable
    }

    /// True when the attribute is there and some value matches it. The connection's
    /// attributes are compared here, inline; HTTP ones in [`Test::matches_http`], out of
    /// line, which keeps this small enough to inline into every rule's loop.
    #[inline(always)]
    fn matches(&self, a: &RequestAttributes<'_>) -> bool {
        let ip = |ip: Option<std::net::IpAddr>, blocks: &Set<Cidr>| {
            ip.is_some_and(|ip| blocks.any(|b| b.contains(ip)))
        };
        match self {
            Test::Principal(ps) => a
                .source_principal
                .is_some_and(|p| any_text(ps, p.as_bytes())),
            Test::Namespace(ps) => a
                .source_namespace
                .is_some_and(|n| any_text(ps, n.as_bytes())),
            Test::ServiceAccount(accounts) => a
                .source_principal
                .and_then(spiffe_parts)
                .is_some_and(|(_, ns, sa)| {
                    accounts.any(|(n, s)| {
                        n.as_bytes() == ns.as_bytes() && s.as_bytes() == sa.as_bytes()
                    })
                }),
            Test::TrustDomain(ps) => a
                .source_principal
                .and_then(|p| p.split_once('/'))
                .is_some_and(|(td, _)| any_text(ps, td.as_bytes())),
            Test::SourceIp(blocks) => ip(a.source_ip, blocks),
            Test::RemoteIp(blocks) => ip(a.remote_ip, blocks),
            Test::DestinationIp(blocks) => ip(a.destination_ip, blocks),
            Test::DestinationPort(ports) => ports.any(|p| *p == a.destination_port),
            Test::Sni(ps) => a.sni.is_some_and(|s| any_text(ps, s.as_bytes())),
            Test::Unsupported => false,
            _ => self.matches_http(a),
        }
    }

    #[inline(never)]
    fn matches_http(&self, a: &RequestAttributes<'_>) -> bool {
        let Some(h) = a.http else {
            return false;
        };
        match self {
            Test::Host(hosts) => hosts.any(|m| m.matches(h.host.as_bytes())),
            Test::Method(ps) => any_text(ps, h.method.as_bytes()),
            Test::Path(paths) => {
                let path = h.path.split_once('?').map_or(h.path, |(p, _)| p);
                paths.any(|m| m.matches(path.as_bytes()))
            }
            Test::Header(name, ps) => header_matches(h.headers, name, ps),
            Test::RequestPrincipal(ps) => h.jwt.is_some_and(|jwt| {
                ps.any(|(iss, sub)| {
                    iss.matches(jwt.issuer.as_bytes()) && sub.matches(jwt.subject.as_bytes())
                })
            }),
            Test::Claim(path, ps) => h
                .jwt
                .is_some_and(|jwt| claim_matches(&jwt.claims, path, ps)),
            _ => false,
        }
    }
}

/// A header condition: every value of the header joined with `,` (as Envoy reads a
/// repeated header); joining allocates only when the header is repeated.
fn header_matches(headers: &http::HeaderMap, name: &HeaderName, ps: &Set<Text>) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    match values.next() {
        None => ps.any(|p| p.matches_present(first.as_bytes())),
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(values) {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            ps.any(|p| p.matches_present(&joined))
        }
    }
}

impl Check {
    #[inline(always)]
    fn holds(&self, a: &RequestAttributes<'_>) -> bool {
        self.test.matches(a) != self.negate
    }
}

#[inline(always)]
fn all(checks: &[Check], a: &RequestAttributes<'_>) -> bool {
    // A plain loop: iterator adaptors here were left as calls, costing more than the
    // comparisons.
    for c in checks {
        if !c.holds(a) {
            return false;
        }
    }
    true
}

impl Entries {
    #[inline(always)]
    fn matches(&self, checks: &Checks, a: &RequestAttributes<'_>) -> bool {
        match self {
            Entries::Any => true,
            Entries::One(span) => all(checks.get(*span), a),
            Entries::Many(spans) => spans.iter().any(|s| all(checks.get(*s), a)),
        }
    }

    /// Lays `entries` into the arena, keeping only the checks `keep` accepts (an
    /// emptied entry matches everything, as in Istio).
    fn lay(entries: &[Vec<Check>], keep: impl Fn(&Check) -> bool, arena: &mut Checks) -> Self {
        let mut lay = |e: &Vec<Check>| arena.push(e.iter().filter(|c| keep(c)).cloned());
        match entries {
            [] => Entries::Any,
            [one] => Entries::One(lay(one)),
            many => Entries::Many(many.iter().map(lay).collect()),
        }
    }
}

impl Rule {
    /// True when `a` (whose principal hashes to `principal`) satisfies the rule.
    /// Everything down to the comparisons is inlined into the caller's loop over rules,
    /// so the request's attributes are loaded once per policy, not once per rule.
    #[inline(always)]
    pub(super) fn matches(
        &self,
        checks: &Checks,
        a: &RequestAttributes<'_>,
        principal: Option<u64>,
    ) -> bool {
        // Identities first: they are the cheapest checks and the likeliest to fail.
        self.principals.admits(principal)
            && self.lead.as_ref().is_none_or(|c| c.holds(a))
            && self.from.matches(checks, a)
            && self.to.matches(checks, a)
            && all(checks.get(self.when), a)
    }
}

impl Draft {
    /// This rule for one kind of traffic, laid into `arena`: `None` when an ALLOW rule
    /// needs what the traffic cannot show (it would never allow); otherwise without the
    /// checks it cannot evaluate (a DENY, AUDIT or CUSTOM rule then matches more).
    pub(super) fn for_traffic(
        &self,
        action: AuthzAction,
        tcp: bool,
        arena: &mut Checks,
    ) -> Option<Rule> {
        let evaluable = |c: &Check| c.test.evaluable(tcp);
        let all_evaluable = self
            .from
            .iter()
            .chain(&self.to)
            .flatten()
            .chain(&self.when)
            .all(evaluable);
        if action == AuthzAction::Allow && !all_evaluable {
            return None;
        }
        let kept = |entries: &[Vec<Check>]| -> Vec<Vec<Check>> {
            entries
                .iter()
                .map(|e| e.iter().filter(|c| evaluable(c)).cloned().collect())
                .collect()
        };
        let (from, to) = (kept(&self.from), kept(&self.to));
        let when: Vec<Check> = self.when.iter().filter(|c| evaluable(c)).cloned().collect();
        let only_first = |entries: &[Vec<Check>]| match entries {
            [only] => only.first().cloned(),
            _ => None,
        };
        let lead = only_first(&from)
            .or_else(|| only_first(&to))
            .or_else(|| when.first().cloned());
        Some(Rule {
            principals: PrincipalFilter::of(&from),
            lead,
            from: Entries::lay(&from, |_| true, arena),
            to: Entries::lay(&to, |_| true, arena),
            when: arena.push(when.into_iter()),
        })
    }

    /// Builds a rule from the model (every check, before the split by traffic).
    pub(super) fn compile(policy: &str, r: &AuthzRule) -> Result<Draft, PolicyError> {
        let mut when = Vec::new();
        for c in &r.when {
            when.extend(condition(policy, c)?);
        }
        let to =
            r.to.iter()
                .map(|o| operation(policy, o))
                .collect::<Result<Vec<_>, _>>()?;
        Ok(Draft {
            from: r.from.iter().map(source).collect(),
            to,
            when,
        })
    }
}

fn texts(ps: &[StringPattern]) -> Set<Text> {
    Set::new(ps.iter().map(Text::new).collect())
}

fn principals(ps: &[RequestPrincipalPattern]) -> Set<(Text, Text)> {
    Set::new(
        ps.iter()
            .map(|p| (Text::new(&p.issuer), Text::new(&p.subject)))
            .collect(),
    )
}

fn set<T: Clone>(items: &[T]) -> Set<T> {
    Set::new(items.to_vec())
}

/// Pushes a check for `values` and one (negated) for `not`, when set.
fn push<T>(out: &mut Vec<Check>, values: &[T], not: &[T], make: impl Fn(&[T]) -> Test) {
    if !values.is_empty() {
        out.push(Check {
            test: make(values),
            negate: false,
        });
    }
    if !not.is_empty() {
        out.push(Check {
            test: make(not),
            negate: true,
        });
    }
}

fn source(s: &Source) -> Vec<Check> {
    let mut out = Vec::new();
    push(&mut out, &s.principals, &s.not_principals, |v| {
        Test::Principal(texts(v))
    });
    push(&mut out, &s.namespaces, &s.not_namespaces, |v| {
        Test::Namespace(texts(v))
    });
    push(
        &mut out,
        &s.service_accounts,
        &s.not_service_accounts,
        |v| {
            Test::ServiceAccount(Set::new(
                v.iter()
                    .map(|a| {
                        (
                            Lit::new(a.namespace.as_bytes()),
                            Lit::new(a.name.as_bytes()),
                        )
                    })
                    .collect(),
            ))
        },
    );
    push(&mut out, &s.trust_domains, &s.not_trust_domains, |v| {
        Test::TrustDomain(texts(v))
    });
    push(&mut out, &s.ip_blocks, &s.not_ip_blocks, |v| {
        Test::SourceIp(set(v))
    });
    push(
        &mut out,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        |v| Test::RemoteIp(set(v)),
    );
    push(
        &mut out,
        &s.request_principals,
        &s.not_request_principals,
        |v| Test::RequestPrincipal(principals(v)),
    );
    out
}

fn path(policy: &str, p: &PathPattern) -> Result<Path, PolicyError> {
    Ok(match p {
        PathPattern::Pattern(t) => Path::Text(Text::new(t)),
        PathPattern::Template { template } => Path::Template(
            parse_template(template)
                .map_err(|source| PolicyError::Template {
                    policy: policy.to_string(),
                    source,
                })?
                .into_boxed_slice(),
        ),
    })
}

fn operation(policy: &str, o: &Operation) -> Result<Vec<Check>, PolicyError> {
    let mut out = Vec::new();
    push(&mut out, &o.ports, &o.not_ports, |v| {
        Test::DestinationPort(set(v))
    });
    push(&mut out, &o.hosts, &o.not_hosts, |v| {
        Test::Host(Set::new(v.iter().map(Host::new).collect()))
    });
    push(&mut out, &o.methods, &o.not_methods, |v| {
        Test::Method(texts(v))
    });
    let paths = |v: &[PathPattern]| {
        v.iter()
            .map(|p| path(policy, p))
            .collect::<Result<Vec<_>, _>>()
    };
    let (yes, no) = (paths(&o.paths)?, paths(&o.not_paths)?);
    push(&mut out, &yes, &no, |v| Test::Path(set(v)));
    Ok(out)
}

fn condition(policy: &str, c: &Condition) -> Result<Vec<Check>, PolicyError> {
    let mut out = Vec::new();
    let mut values = |v: &Values<StringPattern>, make: &dyn Fn(Set<Text>) -> Test| {
        push(&mut out, &v.values, &v.not_values, |x| make(texts(x)));
    };
    let claim = |name: &str| -> Box<[String]> { Box::new([name.to_string()]) };
    match c {
        Condition::SourceNamespace(v) => values(v, &Test::Namespace),
        Condition::SourcePrincipal(v) => values(v, &Test::Principal),
        Condition::ConnectionSni(v) => values(v, &Test::Sni),
        Condition::RequestAudiences(v) => values(v, &|t| Test::Claim(claim("aud"), t)),
        Condition::RequestPresenter(v) => values(v, &|t| Test::Claim(claim("azp"), t)),
        Condition::RequestClaim { claim, values: v } => {
            values(v, &|t| Test::Claim(claim.clone().into(), t))
        }
        Condition::RequestHeader { name, values: v } => {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| PolicyError::HeaderName {
                    policy: policy.to_string(),
                    name: name.clone(),
                })?;
            values(v, &|t| Test::Header(name.clone(), t));
        }
        Condition::SourceIp(v) => push(&mut out, &v.values, &v.not_values, |x| {
            Test::SourceIp(set(x))
        }),
        Condition::RemoteIp(v) => push(&mut out, &v.values, &v.not_values, |x| {
            Test::RemoteIp(set(x))
        }),
        Condition::DestinationIp(v) => push(&mut out, &v.values, &v.not_values, |x| {
            Test::DestinationIp(set(x))
        }),
        Condition::DestinationPort(v) => push(&mut out, &v.values, &v.not_values, |x| {
            Test::DestinationPort(set(x))
        }),
        Condition::RequestPrincipal(v) => push(&mut out, &v.values, &v.not_values, |x| {
            Test::RequestPrincipal(principals(x))
        }),
        Condition::Unsupported { .. } => out.push(Check {
            test: Test::Unsupported,
            negate: false,
        }),
    }
    Ok(out)
}
