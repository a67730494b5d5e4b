//! Warnings for VirtualService rules that can never apply: a catch-all rule that is
//! not last, matches repeated from an earlier rule, and URI prefixes that an
//! earlier, otherwise identical match already covers.

use std::collections::BTreeMap;

use super::common::StringMatch;
use super::http_policy::HttpMatchRequest;
use super::virtual_service::VirtualService;
use crate::check::Checker;

fn rule_name(name: &str, i: usize) -> String {
    if name.is_empty() {
        format!("#{i}")
    } else {
        format!("\"{name}\"")
    }
}

fn unused(c: &mut Checker, at: &str, rule: &str, reason: &str) {
    let message = format!("virtualService rule {rule} not used ({reason})");
    c.at(at, |c| c.warn(message));
}

fn ineffective(c: &mut Checker, at: &str, rule: &str, m: &str, earlier: &str) {
    let message = format!(
        "virtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {earlier})"
    );
    c.at(at, |c| c.warn(message));
}

/// Runs the analysis over the HTTP, TLS and TCP rules.
pub(crate) fn check(vs: &VirtualService, c: &mut Checker) {
    let http: Vec<(String, Vec<(String, HttpMatchRequest)>)> = vs
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let matches = r
                .match_
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    let key = HttpMatchRequest {
                        name: String::new(),
                        ..m.clone()
                    };
                    (rule_name(&m.name, j), key)
                })
                .collect();
            (rule_name(&r.name, i), matches)
        })
        .collect();
    let covered = rules(c, "http", &http);
    prefix_overlaps(c, &http, &covered);
    rules(c, "tls", &numbered(vs.tls.iter().map(|r| &r.match_)));
    rules(c, "tcp", &numbered(vs.tcp.iter().map(|r| &r.match_)));
}

/// TLS and TCP rules and matches have no names; they are known by position.
fn numbered<'a, M: 'a>(
    rules: impl Iterator<Item = &'a Vec<M>>,
) -> Vec<(String, Vec<(String, &'a M)>)> {
    rules
        .enumerate()
        .map(|(i, ms)| {
            let ms = ms
                .iter()
                .enumerate()
                .map(|(j, m)| (rule_name("", j), m))
                .collect();
            (rule_name("", i), ms)
        })
        .collect()
}

/// Reports unreachable rules and repeated matches; returns which matches were repeats.
fn rules<M: PartialEq>(
    c: &mut Checker,
    field: &str,
    list: &[(String, Vec<(String, M)>)],
) -> Vec<Vec<bool>> {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut catch_all = false;
    let mut repeats = Vec::with_capacity(list.len());
    for (i, (rule, matches)) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let mut rule_repeats = vec![false; matches.len()];
        if matches.is_empty() {
            if catch_all {
                unused(c, &at, rule, "only the last rule can have no matches");
            }
            catch_all = true;
            repeats.push(rule_repeats);
            continue;
        }
        let mut duplicates = 0;
        for (j, (name, m)) in matches.iter().enumerate() {
            if catch_all {
                unused(c, &at, rule, "route without matches defined before");
                continue;
            }
            if let Some((_, earlier)) = seen.iter().find(|(s, _)| *s == m) {
                ineffective(
                    c,
                    &format!("{at}.match[{j}]"),
                    rule,
                    name,
                    &list[*earlier].0,
                );
                duplicates += 1;
                rule_repeats[j] = true;
                continue;
            }
            seen.push((m, i));
        }
        if duplicates == matches.len() {
            unused(c, &at, rule, "all matches used by prior rules");
        }
        repeats.push(rule_repeats);
    }
    repeats
}

/// What a prefix match is compared on: an exact or prefix value of each condition.
struct PrefixMatch<'a> {
    rule: usize,
    index: usize,
    prefix: &'a str,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<&'a str, String>,
    query: BTreeMap<&'a str, String>,
    without: BTreeMap<&'a str, String>,
}

fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch { exact: Some(e), .. }) if !e.is_empty() => format!("exact:{e}"),
        Some(StringMatch {
            prefix: Some(p), ..
        }) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn values(map: &BTreeMap<String, StringMatch>) -> BTreeMap<&str, String> {
    map.iter()
        .map(|(k, v)| (k.as_str(), exact_or_prefix(Some(v))))
        .collect()
}

/// `b`'s value is the same as `a`'s, or `a`'s value starts with it.
fn narrower(a: &str, b: &str) -> bool {
    a == b || a.starts_with(b)
}

fn maps_cover(a: &BTreeMap<&str, String>, b: &BTreeMap<&str, String>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| narrower(v, bv)))
}

fn covers(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    b.prefix.starts_with(a.prefix)
        && a.port == b.port
        && narrower(&a.method, &b.method)
        && narrower(&a.authority, &b.authority)
        && maps_cover(&a.headers, &b.headers)
        && maps_cover(&a.query, &b.query)
        && maps_cover(&a.without, &b.without)
}

fn prefix_overlaps(
    c: &mut Checker,
    http: &[(String, Vec<(String, HttpMatchRequest)>)],
    repeats: &[Vec<bool>],
) {
    let mut list: Vec<PrefixMatch> = Vec::new();
    for (i, (_, matches)) in http.iter().enumerate() {
        for (j, (_, m)) in matches.iter().enumerate() {
            if repeats
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(true)
            {
                continue;
            }
            let Some(prefix) = m
                .uri
                .as_ref()
                .and_then(|u| u.prefix.as_deref())
                .filter(|p| !p.is_empty())
            else {
                continue;
            };
            let mut method = exact_or_prefix(m.method.as_ref());
            if method.is_empty() {
                method = "exact:GET".into();
            }
            list.push(PrefixMatch {
                rule: i,
                index: j,
                prefix,
                port: m.port,
                method,
                authority: exact_or_prefix(m.authority.as_ref()),
                headers: values(&m.headers),
                query: values(&m.query_params),
                without: values(&m.without_headers),
            });
        }
    }
    for (k, a) in list.iter().enumerate() {
        for b in &list[k + 1..] {
            if b.prefix != a.prefix && covers(a, b) {
                let (rule, m) = (&http[b.rule].0, &http[b.rule].1[b.index].0);
                let earlier = format!(
                    "{} of prefix {} on {}",
                    http[a.rule].1[a.index].0, a.prefix, http[a.rule].0
                );
                ineffective(
                    c,
                    &format!("http[{}].match[{}]", b.rule, b.index),
                    rule,
                    &format!("{m} of prefix {}", b.prefix),
                    &earlier,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn warnings(http: &str) -> Vec<String> {
        let spec = format!("  hosts: [a]\n  http:\n{http}");
        super::super::findings("VirtualService", "vs", &spec, true)
    }

    #[test]
    fn rules_after_a_catch_all_are_unreachable() {
        let w = warnings(
            "  - route:\n    - destination: {host: a}\n  - route:\n    - destination: {host: b}\n",
        );
        assert_eq!(w, vec!["spec.http[1]: virtualService rule #1 not used (only the last rule can have no matches)".to_string()]);
    }

    #[test]
    fn repeated_matches_are_ineffective() {
        let w = warnings(
            "  - match: [{uri: {exact: /a}}]\n    route:\n    - destination: {host: a}\n  - match: [{name: again, uri: {exact: /a}}]\n    route:\n    - destination: {host: b}\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("match \"again\" is not used"), "{w:?}");
        assert!(w[1].contains("all matches used by prior rules"), "{w:?}");
    }

    #[test]
    fn covered_prefixes_are_ineffective() {
        let w = warnings(
            "  - match: [{uri: {prefix: /api}}]\n    route:\n    - destination: {host: a}\n  - match: [{uri: {prefix: /api/v1}}]\n    route:\n    - destination: {host: b}\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("spec.http[1].match[0]"), "{w:?}");
        let w = warnings(
            "  - match: [{uri: {prefix: /api}, headers: {x: {exact: y}}}]\n    route:\n    - destination: {host: a}\n  - match: [{uri: {prefix: /api/v1}}]\n    route:\n    - destination: {host: b}\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }
}
