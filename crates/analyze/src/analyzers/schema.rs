//! Schema validation as an analyzer: each resource's own rules (IST0106), and the
//! VirtualService rule-order check (rules and matches that can never be used).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use trellis_api::check::Severity;

use super::json::{items, number, text};
use super::names::NETWORKING;
use crate::messages::{
    SCHEMA_VALIDATION_ERROR, VIRTUAL_SERVICE_INEFFECTIVE_MATCH, VIRTUAL_SERVICE_UNREACHABLE_RULE,
};
use crate::{Analyzer, Context, Reporter};

/// `schema.ValidationAnalyzer`: every error the resource's own validation finds.
pub struct ValidationAnalyzer;

impl Analyzer for ValidationAnalyzer {
    fn name(&self) -> &'static str {
        "schema.ValidationAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Runs schema validation as an analyzer and reports any violations"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for r in cx.all() {
            // The synthetic defaults (the ingress gateway) are not the user's to fix.
            if r.source.file.is_empty() {
                continue;
            }
            for d in r.validate() {
                if d.severity != Severity::Error {
                    continue;
                }
                // A pod made from a Deployment's template is reported on the Deployment,
                // so the path in the text is the template's.
                let text = match (d.path.as_deref(), cx.origin(r)) {
                    (Some(p), Some(origin)) if !p.is_empty() => {
                        format!("{}: {}", origin.path(Some(p)), d.message)
                    }
                    (Some(p), None) if !p.is_empty() => format!("{p}: {}", d.message),
                    _ => d.message.clone(),
                };
                out.report(&SCHEMA_VALIDATION_ERROR, r, d.path.as_deref(), text);
            }
        }
    }
}

/// `schema.ValidationAnalyzer.VirtualService`: rules that can never match because an
/// earlier rule takes all their traffic (IST0130), and matches that repeat or fall
/// under an earlier one (IST0131).
pub struct VirtualServiceValidationAnalyzer;

impl Analyzer for VirtualServiceValidationAnalyzer {
    fn name(&self) -> &'static str {
        "schema.ValidationAnalyzer.VirtualService"
    }

    fn description(&self) -> &'static str {
        "Checks that every rule and match of a VirtualService can be reached"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for vs in cx.of(NETWORKING, "VirtualService") {
            for kind in [Kind::Http, Kind::Tcp, Kind::Tls] {
                let rules = items(&vs.raw["spec"][kind.field()]);
                for f in unreachable_rules(rules, kind) {
                    let (ty, path) = match f.kind {
                        FindingKind::Unreachable => (
                            &VIRTUAL_SERVICE_UNREACHABLE_RULE,
                            format!("spec.{}[{}]", kind.field(), f.rule),
                        ),
                        FindingKind::Ineffective { matchn } => (
                            &VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                            format!("spec.{}[{}].match[{matchn}]", kind.field(), f.rule),
                        ),
                    };
                    out.report(ty, vs, Some(&path), f.message);
                }
            }
        }
    }
}

/// The kinds of VirtualService rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Tcp,
    Tls,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
        }
    }
}

/// What is wrong with one rule or match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    Unreachable,
    Ineffective { matchn: usize },
}

/// One unreachable rule or ineffective match.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: FindingKind,
    pub rule: usize,
    pub message: String,
}

/// How a rule is named in messages: its `name`, else its position.
fn rule_label(rule: &Value, index: usize, kind: Kind) -> String {
    match text(&rule["name"]) {
        name if kind == Kind::Http && !name.is_empty() => {
            format!("{kind} rule \"{name}\"", kind = kind.field())
        }
        _ => format!("{} rule #{index}", kind.field()),
    }
}

/// How a match is named in messages: its `name`, else its position.
fn match_label(m: &Value, index: usize, kind: Kind) -> String {
    match text(&m["name"]) {
        name if kind == Kind::Http && !name.is_empty() => format!("match \"{name}\""),
        _ => format!("match #{index}"),
    }
}

/// Drops what does not change what a match selects: nulls, empty or zero values, and
/// (for HTTP) the match's `name`.
fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::Array(a) => {
            let items: Vec<Value> = a
                .iter()
                .map(|x| normalize(x).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(o) => {
            let map: serde_json::Map<String, Value> = o
                .iter()
                .filter_map(|(k, v)| normalize(v).map(|v| (k.clone(), v)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        other => Some(other.clone()),
    }
}

/// A canonical text of a JSON value, with object keys sorted.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let sorted: BTreeMap<&String, String> =
                o.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The identity of a match for duplicate detection.
fn match_key(m: &Value, kind: Kind) -> String {
    let mut m = m.clone();
    if kind == Kind::Http
        && let Some(o) = m.as_object_mut()
    {
        o.remove("name");
    }
    canonical(&normalize(&m).unwrap_or(Value::Null))
}

/// `exact:X` or `prefix:X` of a StringMatch, `""` for other kinds of match.
fn exact_or_prefix(v: &Value) -> String {
    let exact = text(&v["exact"]);
    if !exact.is_empty() {
        return format!("exact:{exact}");
    }
    let prefix = text(&v["prefix"]);
    if !prefix.is_empty() {
        return format!("prefix:{prefix}");
    }
    String::new()
}

/// An HTTP match on a URI prefix, reduced to what overlap detection compares.
struct PrefixMatch {
    rule: usize,
    rule_label: String,
    matchn: usize,
    match_label: String,
    prefix: String,
    port: u64,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

fn string_matches(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), exact_or_prefix(v)))
        .collect()
}

fn prefix_match(rule: &Value, rulen: usize, m: &Value, matchn: usize) -> Option<PrefixMatch> {
    let prefix = text(&m["uri"]["prefix"]);
    if prefix.is_empty() {
        return None;
    }
    let mut method = exact_or_prefix(&m["method"]);
    if method.is_empty() {
        // A match without a method is taken as GET, as Istio does here.
        method = "exact:GET".to_string();
    }
    Some(PrefixMatch {
        rule: rulen,
        rule_label: rule_label(rule, rulen, Kind::Http),
        matchn,
        match_label: match_label(m, matchn, Kind::Http),
        prefix: prefix.to_string(),
        port: number(&m["port"]),
        method,
        authority: exact_or_prefix(&m["authority"]),
        headers: string_matches(&m["headers"]),
        query_params: string_matches(&m["queryParams"]),
        without_headers: string_matches(&m["withoutHeaders"]),
    })
}

/// True when the earlier match `a` takes every request the later match `b` would.
fn covers(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    fn narrower(a: &str, b: &str) -> bool {
        a == b || a.starts_with(b)
    }
    fn maps(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
        a.len() == b.len()
            && a.iter()
                .all(|(k, v)| b.get(k).is_some_and(|bv| narrower(v, bv)))
    }
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && narrower(&a.method, &b.method)
        && narrower(&a.authority, &b.authority)
        && maps(&a.headers, &b.headers)
        && maps(&a.query_params, &b.query_params)
        && maps(&a.without_headers, &b.without_headers)
}

/// Finds rules that can never be reached and matches that never take effect, in the
/// order Istio evaluates the rules.
pub fn unreachable_rules(rules: &[Value], kind: Kind) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut catch_all: Option<usize> = None;
    let mut prefixes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.is_null() {
            continue;
        }
        let label = rule_label(rule, i, kind);
        let matches = items(&rule["match"]);
        if matches.is_empty() {
            if let Some(first) = catch_all {
                out.push(Finding {
                    kind: FindingKind::Unreachable,
                    rule: i,
                    message: format!(
                        "{label} is never used: {} has no match and already takes all \
                         traffic; only the last rule may omit `match`, so add matches or \
                         remove one of them",
                        rule_label(&rules[first], first, kind)
                    ),
                });
            }
            catch_all = Some(i);
            continue;
        }
        let mut duplicates = 0;
        for (m, mt) in matches.iter().enumerate() {
            if let Some(first) = catch_all {
                out.push(Finding {
                    kind: FindingKind::Unreachable,
                    rule: i,
                    message: format!(
                        "{label} is never used: the earlier {} has no match and takes all \
                         traffic; move the rule without matches to the end",
                        rule_label(&rules[first], first, kind)
                    ),
                });
                continue;
            }
            let key = match_key(mt, kind);
            if let Some(&dup) = seen.get(&key) {
                out.push(Finding {
                    kind: FindingKind::Ineffective { matchn: m },
                    rule: i,
                    message: format!(
                        "{} of {label} is never used: {} has the same match; remove it or \
                         make it differ",
                        match_label(mt, m, kind),
                        rule_label(&rules[dup], dup, kind)
                    ),
                });
                duplicates += 1;
                continue;
            }
            seen.insert(key, i);
            if kind == Kind::Http
                && let Some(p) = prefix_match(rule, i, mt, m)
            {
                prefixes.push(p);
            }
        }
        if duplicates == matches.len() {
            out.push(Finding {
                kind: FindingKind::Unreachable,
                rule: i,
                message: format!(
                    "{label} is never used: earlier rules already have all of its matches; \
                     remove it or change its matches"
                ),
            });
        }
    }
    for (ai, a) in prefixes.iter().enumerate() {
        for b in &prefixes[ai + 1..] {
            if a.prefix == b.prefix || !covers(a, b) {
                continue;
            }
            out.push(Finding {
                kind: FindingKind::Ineffective { matchn: b.matchn },
                rule: b.rule,
                message: format!(
                    "{} (prefix `{}`) of {} is never used: {} (prefix `{}`) of {} comes first \
                     and takes all of its requests; put the longer prefix first",
                    b.match_label, b.prefix, b.rule_label, a.match_label, a.prefix, a.rule_label
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(rules: Value, kind: Kind) -> Vec<(bool, usize)> {
        unreachable_rules(items(&rules), kind)
            .into_iter()
            .map(|f| (f.kind == FindingKind::Unreachable, f.rule))
            .collect()
    }

    #[test]
    fn duplicate_matches_make_a_rule_unreachable() {
        let rules = serde_json::json!([
            {"name": "a", "match": [{"name": "x", "uri": {"prefix": "/api"}}]},
            {"name": "b", "match": [{"uri": {"prefix": "/api"}}]},
        ]);
        assert_eq!(kinds(rules, Kind::Http), vec![(false, 1), (true, 1)]);
    }

    #[test]
    fn rules_after_a_catch_all_are_unreachable() {
        let rules = serde_json::json!([{"route": []}, {"route": []}]);
        assert_eq!(kinds(rules, Kind::Tcp), vec![(true, 1)]);
        let rules = serde_json::json!([{"route": []}, {"match": [{"port": 1}, {"port": 2}]}]);
        assert_eq!(kinds(rules, Kind::Tcp), vec![(true, 1), (true, 1)]);
    }

    #[test]
    fn shorter_prefixes_shadow_longer_ones() {
        let rules = serde_json::json!([
            {"match": [{"uri": {"prefix": "/api/v1/prod"}, "method": {"exact": "GET"}}]},
            {"match": [
                {"uri": {"prefix": "/api/v1/product"}, "method": {"exact": "GET"}},
                {"uri": {"prefix": "/api/v1/products"}, "method": {"exact": "POST"}}
            ]},
        ]);
        assert_eq!(kinds(rules, Kind::Http), vec![(false, 1)]);
        // No method means GET.
        let rules = serde_json::json!([
            {"match": [
                {"uri": {"prefix": "/a"}},
                {"uri": {"prefix": "/ab"}, "method": {"exact": "GET"}},
                {"uri": {"exact": "/abc"}}
            ]},
        ]);
        assert_eq!(kinds(rules, Kind::Http), vec![(false, 0)]);
    }

    #[test]
    fn validation_errors_become_ist0106() {
        let loaded = trellis_api::load_str(
            "gw.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: Bad_Name\n  namespace: default\nspec:\n  selector: {istio: ingressgateway}\n",
        );
        let options = crate::Options {
            only: vec!["schema.ValidationAnalyzer".into()],
            ..Default::default()
        };
        let messages = crate::analyze(&loaded.resources, &options).unwrap_or_default();
        assert!(!messages.is_empty());
        assert!(
            messages
                .iter()
                .all(|m| m.code == "IST0106" && m.name == "Bad_Name")
        );
        assert_eq!(messages[0].line, Some(4));
    }

    #[test]
    fn zero_values_do_not_make_matches_differ() {
        let rules = serde_json::json!([
            {"match": [{"port": 31400}]},
            {"match": [{"port": 31400, "sourceLabels": {}}]},
        ]);
        assert_eq!(kinds(rules, Kind::Tcp), vec![(false, 1), (true, 1)]);
    }
}
