//! One HTTP rule of a VirtualService: what it matches, and what it does with the
//! request — forward (weighted destinations), redirect, answer directly or
//! delegate — plus header edits, mirroring and timeouts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Destination, check_duration, is_default};
use super::fault::{HttpFaultInjection, check_http_status};
use super::http_policy::{CorsPolicy, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite};
use crate::check::Checker;
use crate::values::{Duration, Percent};

/// An HTTP rule: the first rule whose `match` fits a request handles it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hands matching requests to another (host-less) VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: use `mirrorPercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// The same deprecated field under its protobuf name.
    #[serde(
        default,
        rename = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent_legacy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted destination of an HTTP rule, with its own header edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// The VirtualService a delegating rule hands over to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A fixed answer: status and optional body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A response body as text or as base64 bytes (one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// A copy of the traffic sent to another destination; responses are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Header edits for requests (before forwarding) and responses (before returning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Overwrite (`set`), append (`add`) and delete (`remove`) headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Where an HTTP rule sits: in a normal VirtualService, delegating, or in a delegate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    Independent,
    Root,
    Delegate,
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// A header value Envoy can format: no control characters, `%` only as `%%` or `%VAR%`.
fn check_header_value(c: &mut Checker, field: &str, value: &str) {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        c.error_at(
            field,
            format!("header value configuration {value:?} is invalid (control characters)"),
        );
        return;
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            match b[i + 1..].iter().position(|c| *c == b'%') {
                Some(end) => i += end + 2,
                None => {
                    c.error_at(
                        field,
                        format!("header value configuration: un-escaped or unterminated % in {value:?} (write %% for a literal %)"),
                    );
                    return;
                }
            }
        } else {
            i += 1;
        }
    }
}

impl Headers {
    fn check(&self, c: &mut Checker) {
        if let Some(req) = &self.request {
            c.at("request", |c| {
                for (op, map) in [("set", &req.set), ("add", &req.add)] {
                    for (name, value) in map {
                        let at = format!("{op}[{name}]");
                        if name.is_empty() {
                            c.error_at(&at, "header name cannot be empty");
                        } else if is_internal(name) && !is_authority(name) {
                            c.error_at(
                                &at,
                                format!(
                                    "invalid header \"{name}\": header cannot have \":\" prefix"
                                ),
                            );
                        }
                        check_header_value(c, &at, value);
                    }
                }
                remove_names(c, &req.remove);
            });
        }
        if let Some(resp) = &self.response {
            c.at("response", |c| {
                for (op, map) in [("set", &resp.set), ("add", &resp.add)] {
                    for (name, value) in map {
                        let at = format!("{op}[{name}]");
                        operation_name(c, &at, name);
                        check_header_value(c, &at, value);
                    }
                }
                remove_names(c, &resp.remove);
            });
        }
    }

    fn authority_writes(&self) -> impl Iterator<Item = &String> {
        self.request.iter().flat_map(|r| {
            r.set
                .iter()
                .chain(r.add.iter())
                .filter(|(k, _)| is_authority(k))
                .map(|(_, v)| v)
        })
    }
}

fn remove_names(c: &mut Checker, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        operation_name(c, &format!("remove[{i}]"), name);
    }
}

/// A header that may be removed, or edited on a response.
fn operation_name(c: &mut Checker, field: &str, name: &str) {
    if name.is_empty() {
        c.error_at(field, "header name cannot be empty");
    } else if name.eq_ignore_ascii_case("host") {
        c.error_at(
            field,
            format!("invalid header \"{name}\": cannot set Host header"),
        );
    } else if is_internal(name) {
        c.error_at(
            field,
            format!("invalid header \"{name}\": header cannot have \":\" prefix"),
        );
    }
}

fn check_mirror_percentage(c: &mut Checker, field: &str, p: Option<Percent>) {
    if let Some(p) = p
        && !(0.0..=100.0).contains(&p.value)
    {
        c.error_at(
            field,
            format!("mirror percentage {} must be in the range 0..100", p.value),
        );
    }
}

fn looks_base64(text: &str) -> bool {
    text.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=' | b'\n' | b'\r')
    })
}

impl HttpRoute {
    /// Checks one rule; `in_delegate` is true when the VirtualService has no hosts.
    pub(crate) fn check(&self, c: &mut Checker, in_delegate: bool) {
        let kind = if in_delegate {
            RouteKind::Delegate
        } else if self.delegate.is_some() {
            RouteKind::Root
        } else {
            RouteKind::Independent
        };
        self.check_actions(c, kind);
        c.each("match", &self.match_, |c, _, m| m.check(c));
        if let Some(headers) = &self.headers {
            c.at("headers", |c| headers.check(c));
        }
        if let Some(cors) = &self.cors_policy {
            c.at("corsPolicy", |c| cors.check(c));
        }
        if let Some(fault) = &self.fault {
            c.at("fault", |c| fault.check(c));
        }
        for (field, value) in [
            ("mirrorPercent", self.mirror_percent),
            ("mirror_percent", self.mirror_percent_legacy),
        ] {
            if let Some(v) = value {
                c.warn(format!("{field} is deprecated, use mirrorPercentage"));
                if v > 100 {
                    c.error_at(
                        field,
                        format!("mirror_percent must have a max value of 100 (it has {v})"),
                    );
                }
            }
        }
        check_mirror_percentage(c, "mirrorPercentage.value", self.mirror_percentage);
        if let Some(mirror) = &self.mirror {
            c.at("mirror", |c| mirror.check(c));
        }
        c.each("mirrors", &self.mirrors, |c, _, m| match &m.destination {
            None => c.error("destination is required for mirrors"),
            Some(d) => {
                c.at("destination", |c| d.check(c));
                check_mirror_percentage(c, "percentage.value", m.percentage);
            }
        });
        if let Some(redirect) = &self.redirect {
            c.at("redirect", |c| redirect.check(c));
        }
        if let Some(direct) = &self.direct_response {
            c.at("directResponse", |c| direct.check(c));
        }
        if let Some(retries) = &self.retries {
            c.at("retries", |c| retries.check(c));
        }
        if let Some(rewrite) = &self.rewrite {
            c.at("rewrite", |c| rewrite.check(c));
        }
        self.check_authority_once(c);
        check_http_destinations(c, &self.route);
        check_duration(c, "timeout", self.timeout);
    }

    /// A rule forwards, redirects, answers directly or delegates — one of them.
    fn check_actions(&self, c: &mut Checker, kind: RouteKind) {
        if kind == RouteKind::Root {
            if self.redirect.is_some() {
                c.error_at(
                    "redirect",
                    format!("root HTTP route {} must not specify redirect", self.name),
                );
            }
            if !self.route.is_empty() {
                c.error_at(
                    "route",
                    format!("root HTTP route {} must not specify route", self.name),
                );
            }
            if let Some(d) = &self.delegate
                && d.name.is_empty()
            {
                c.error_at("delegate.name", "delegate name is required");
            }
            return;
        }
        if kind == RouteKind::Delegate && self.delegate.is_some() {
            c.error_at("delegate", "delegate HTTP route cannot contain delegate");
        }
        if self.redirect.is_some() {
            if !self.route.is_empty() {
                c.error("HTTP route cannot contain both route and redirect");
            }
            if self.fault.is_some() {
                c.error("HTTP route cannot contain both fault and redirect");
            }
            if self.rewrite.is_some() {
                c.error("HTTP route rule cannot contain both rewrite and redirect");
            }
            if self.direct_response.is_some() {
                c.error("HTTP route rule cannot contain both direct_response and redirect");
            }
        } else if self.direct_response.is_some() {
            if !self.route.is_empty() {
                c.error("HTTP route cannot contain both route and direct_response");
            }
            if self.fault.is_some() {
                c.error("HTTP route cannot contain both fault and direct_response");
            }
            if self.rewrite.is_some() {
                c.error("HTTP route rule cannot contain both rewrite and direct_response");
            }
        } else if self.route.is_empty() {
            c.error("HTTP route, redirect or direct_response is required");
        }
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            c.error("HTTP route cannot contain both mirror and mirrors");
        }
    }

    /// The authority may be rewritten in one place only.
    fn check_authority_once(&self, c: &mut Checker) {
        let mut current = self
            .rewrite
            .as_ref()
            .map(|r| r.authority.as_str())
            .unwrap_or("");
        for value in self.headers.iter().flat_map(Headers::authority_writes) {
            if !current.is_empty() {
                c.error_at(
                    "headers.request",
                    format!("authority header cannot be set multiple times: have \"{current}\", attempting to set \"{value}\""),
                );
                return;
            }
            current = value;
        }
    }
}

impl HttpDirectResponse {
    fn check(&self, c: &mut Checker) {
        if let Some(body) = &self.body {
            c.at("body", |c| {
                if body.string.is_some() && body.bytes.is_some() {
                    c.error("only one of string or bytes may be set");
                }
                if let Some(b) = &body.bytes
                    && !looks_base64(b)
                {
                    c.error_at("bytes", "bytes must be base64-encoded");
                }
                let size = body.string.as_ref().or(body.bytes.as_ref()).map_or(0, String::len);
                if size > 1024 * 1024 {
                    c.error("large direct_responses may impact control plane performance, must be less than 1MB");
                } else if size > 100 * 1024 {
                    c.warn("large direct_responses may impact control plane performance");
                }
            });
        }
        check_http_status(c, "status", i64::from(self.status));
    }
}

/// Destinations are valid and weights non-negative, not all zero when there are several.
fn check_http_destinations(c: &mut Checker, routes: &[HttpRouteDestination]) {
    let mut total: i64 = 0;
    c.each("route", routes, |c, _, r| {
        match &r.destination {
            None => c.error("destination is required"),
            Some(d) => c.at("destination", |c| d.check(c)),
        }
        if let Some(headers) = &r.headers {
            c.at("headers", |c| headers.check(c));
        }
        if r.weight < 0 {
            c.error_at("weight", format!("weight {} < 0", r.weight));
        }
        total += i64::from(r.weight);
    });
    super::virtual_service::check_total_weight(c, routes.len(), total);
}

#[cfg(test)]
mod tests {
    fn errors(http: &str) -> Vec<String> {
        let spec = format!("  hosts: [a]\n  http:\n{http}");
        super::super::findings("VirtualService", "vs", &spec, false)
    }

    #[test]
    fn one_action_per_rule() {
        let e = errors("  - redirect: {uri: /b}\n    route:\n    - destination: {host: a}\n");
        assert_eq!(
            e,
            vec!["spec.http[0]: HTTP route cannot contain both route and redirect".to_string()]
        );
        let e =
            errors("  - directResponse: {status: 503}\n    route:\n    - destination: {host: a}\n");
        assert_eq!(
            e,
            vec![
                "spec.http[0]: HTTP route cannot contain both route and direct_response"
                    .to_string()
            ]
        );
        let e = errors("  - match:\n    - uri: {prefix: /a}\n");
        assert_eq!(
            e,
            vec!["spec.http[0]: HTTP route, redirect or direct_response is required".to_string()]
        );
        let e = errors("  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n");
        assert!(e[0].contains("both rewrite and redirect"), "{e:?}");
    }

    #[test]
    fn mirror_and_mirrors_exclude_each_other() {
        let e = errors(
            "  - mirror: {host: b}\n    mirrors:\n    - destination: {host: c}\n    route:\n    - destination: {host: a}\n",
        );
        assert!(e[0].contains("both mirror and mirrors"), "{e:?}");
        let e = errors(
            "  - mirrorPercentage: {value: 150}\n    route:\n    - destination: {host: a}\n",
        );
        assert!(e[0].contains("mirror percentage 150"), "{e:?}");
    }

    #[test]
    fn header_operations_keep_pseudo_headers() {
        let e = errors(
            "  - headers:\n      request:\n        set: {\":path\": /x, \":authority\": a.com}\n      response:\n        remove: [host]\n    route:\n    - destination: {host: a}\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("header cannot have \":\" prefix"), "{e:?}");
        assert!(e[1].contains("cannot set Host header"), "{e:?}");
    }

    #[test]
    fn header_values_escape_percent() {
        let e = errors(
            "  - headers:\n      request:\n        add: {x-a: \"100%\", x-b: \"%HOSTNAME%\", x-c: \"100%%\"}\n    route:\n    - destination: {host: a}\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("set[x-a]") || e[0].contains("add[x-a]"),
            "{e:?}"
        );
    }

    #[test]
    fn authority_is_rewritten_once() {
        let e = errors(
            "  - rewrite: {authority: b.com}\n    headers:\n      request:\n        set: {host: c.com}\n    route:\n    - destination: {host: a}\n",
        );
        assert!(
            e[0].contains("authority header cannot be set multiple times"),
            "{e:?}"
        );
    }

    #[test]
    fn direct_response_status_in_range() {
        let e = errors("  - directResponse: {status: 700, body: {string: down}}\n");
        assert_eq!(
            e,
            vec![
                "spec.http[0].directResponse.status: HTTP status 700 is not in range 200-599"
                    .to_string()
            ]
        );
    }

    #[test]
    fn delegate_rules_cannot_delegate_again() {
        let spec = "  http:\n  - delegate: {name: x}\n";
        let e = super::super::findings("VirtualService", "vs", spec, false);
        assert!(
            e[0].contains("delegate HTTP route cannot contain delegate"),
            "{e:?}"
        );
    }
}
