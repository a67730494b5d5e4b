//! The parts of an HTTP route that shape a request: match conditions, redirects,
//! rewrites, retries and CORS, each with the checks Istio runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{
    StringMatch, check_duration, check_labels, check_port, check_regex, is_default,
};
use super::host;
use crate::check::Checker;
use crate::values::Duration;

/// Conditions a request must meet for a rule to apply (all fields ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header names are lower case; `@request.auth.claims.*` matches JWT claims (gateways only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
}

/// True for header keys that route on a JWT claim (`@request.auth.claims.sub`).
pub(crate) fn is_jwt_claim_key(key: &str) -> bool {
    key.starts_with("@request.auth.claims.") || key.starts_with("@request.auth.claims[")
}

/// A header name usable in a match: letters, digits, `-` and `_`.
pub(crate) fn check_header_name(c: &mut Checker, field: &str, name: &str, allow_star: bool) {
    if name.is_empty() {
        c.error_at(field, "header name cannot be empty");
    } else if (!allow_star || name != "*")
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.error_at(
            field,
            format!("header name {name} is not a valid header name"),
        );
    }
}

impl HttpMatchRequest {
    pub(crate) fn check(&self, c: &mut Checker) {
        for (name, m) in &self.headers {
            let at = format!("headers[{name}]");
            if !is_jwt_claim_key(name) {
                check_header_name(c, &at, name, false);
            }
            c.at(&at, |c| m.check(c, false));
        }
        for (name, m) in &self.without_headers {
            let at = format!("withoutHeaders[{name}]");
            if !is_jwt_claim_key(name) {
                check_header_name(c, &at, name, false);
            }
            // `regex: "*"` means "header present" here, not an RE2 pattern.
            if m.regex.as_deref() != Some("*") {
                c.at(&at, |c| m.check(c, false));
            }
        }
        for (field, m, empty_prefix) in [
            ("uri", &self.uri, true),
            ("scheme", &self.scheme, false),
            ("method", &self.method, false),
            ("authority", &self.authority, false),
        ] {
            if let Some(m) = m {
                c.at(field, |c| m.check(c, empty_prefix));
            }
        }
        for (name, m) in &self.query_params {
            c.at(&format!("queryParams[{name}]"), |c| m.check(c, false));
        }
        if self.port != 0 {
            check_port(c, "port", self.port);
        }
        check_labels(c, "sourceLabels", &self.source_labels);
        super::virtual_service::check_gateway_names(c, "gateways", &self.gateways);
        if !self.source_namespace.is_empty() && !host::is_dns_label(&self.source_namespace) {
            c.error_at(
                "sourceNamespace",
                format!("sourceNamespace match {} is invalid", self.source_namespace),
            );
        }
    }
}

/// Where a redirect's port comes from when not given as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

/// Answer with a 3xx redirect instead of forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub redirect_code: u32,
    /// Replaces the matched path prefix with this one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_rewrite: String,
}

impl HttpRedirect {
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.port.is_some() && self.derive_port.is_some() {
            c.error("only one of port or derivePort may be set");
        }
        if self.uri.is_empty()
            && self.authority.is_empty()
            && self.port.is_none()
            && self.derive_port.is_none()
            && self.scheme.is_empty()
            && self.prefix_rewrite.is_empty()
        {
            c.error("redirect must specify URI, authority, scheme, or port");
        }
        if self.redirect_code != 0 && !(300..=399).contains(&self.redirect_code) {
            c.error_at(
                "redirectCode",
                format!(
                    "{} is not a valid redirect code, must be 3xx",
                    self.redirect_code
                ),
            );
        }
        if !self.scheme.is_empty() && self.scheme != "http" && self.scheme != "https" {
            c.error_at(
                "scheme",
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(port) = self.port
            && port > 0
        {
            check_port(c, "port", port);
        }
    }
}

/// Rewrite the path and/or authority before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Replace what `match` (an RE2 regex) matches in the path with `rewrite` (`\1` for groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub match_: String,
    #[serde(default)]
    pub rewrite: String,
}

impl HttpRewrite {
    pub(crate) fn check(&self, c: &mut Checker) {
        if !self.uri.is_empty() && self.uri_regex_rewrite.is_some() {
            c.error("rewrite may only contain one of URI or UriRegexRewrite");
        }
        if self.uri.is_empty() && self.uri_regex_rewrite.is_none() && self.authority.is_empty() {
            c.error("rewrite must specify at least one of uri, uriRegexRewrite, or authority");
        }
        if let Some(re) = &self.uri_regex_rewrite {
            c.at("uriRegexRewrite", |c| {
                if re.match_.is_empty() || re.rewrite.is_empty() {
                    c.error(
                        "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                    );
                } else {
                    check_regex(c, "match", &re.match_);
                }
            });
        }
    }
}

/// Retry policy; `attempts: 0` turns retries off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default, skip_serializing_if = "is_default")]
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions and status codes (`5xx,reset,503`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Conditions Envoy understands in `x-envoy-retry-on` and `x-envoy-retry-grpc-on`.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Status codes with a standard reason phrase.
fn is_known_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

impl HttpRetry {
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.attempts < 0 {
            c.error_at("attempts", "attempts cannot be negative");
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || !self.retry_on.is_empty()
                || self.retry_remote_localities.is_some())
        {
            c.error("http retry policy configured when attempts are set to 0 (disabled)");
        }
        check_duration(c, "perTryTimeout", self.per_try_timeout);
        if !self.retry_on.is_empty() {
            for policy in self.retry_on.split(',') {
                let status = policy.parse::<u16>().is_ok_and(is_known_status);
                if !status && !RETRY_ON.contains(&policy) {
                    let hint = match crate::check::rules::nearest(policy, RETRY_ON.iter().copied())
                    {
                        Some(n) => format!(" (did you mean `{n}`?)"),
                        None => String::new(),
                    };
                    c.error_at(
                        "retryOn",
                        format!("\"{policy}\" is not a valid retryOn policy{hint}"),
                    );
                }
            }
        }
        check_duration(c, "backoff", self.backoff);
    }
}

/// What to do with CORS preflight requests that match no allowed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// Cross-origin resource sharing answered by the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins; use `allowOrigins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

impl CorsPolicy {
    pub(crate) fn check(&self, c: &mut Checker) {
        if !self.allow_origin.is_empty() {
            c.warn("allowOrigin is deprecated, use allowOrigins");
        }
        c.each("allowOrigins", &self.allow_origins, |c, _, origin| {
            let value = [&origin.exact, &origin.prefix, &origin.regex]
                .into_iter()
                .flatten()
                .next();
            if value.is_none_or(String::is_empty) {
                c.error("'' is not a valid match type for CORS allow origins");
            } else {
                origin.check(c, false);
            }
        });
        c.each("allowMethods", &self.allow_methods, |c, _, m| {
            if !CORS_METHODS.contains(&m.as_str()) {
                c.error(format!("\"{m}\" is not a supported HTTP method"));
            }
        });
        for (field, names) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                check_header_name(c, &format!("{field}[{i}]"), name, true);
            }
        }
        if let Some(age) = self.max_age {
            check_duration(c, "maxAge", Some(age));
            if age.get().subsec_nanos() != 0 {
                c.error_at(
                    "maxAge",
                    "max_age duration is accurate only to seconds precision",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::error_messages as errors;

    #[test]
    fn retry_on_accepts_policies_and_status_codes() {
        let r = HttpRetry {
            attempts: 3,
            retry_on: "5xx,reset,503,retriable-4xx".into(),
            ..Default::default()
        };
        assert!(errors(|c| r.check(c)).is_empty());
        let r = HttpRetry {
            attempts: 3,
            retry_on: "5xx,sometimes".into(),
            ..Default::default()
        };
        assert!(errors(|c| r.check(c))[0].contains("\"sometimes\" is not a valid retryOn policy"));
    }

    #[test]
    fn retries_disabled_take_no_settings() {
        let r = HttpRetry {
            attempts: 0,
            per_try_timeout: Duration::parse("2s").ok(),
            ..Default::default()
        };
        assert_eq!(errors(|c| r.check(c)).len(), 1);
        let r = HttpRetry {
            attempts: -1,
            ..Default::default()
        };
        assert_eq!(
            errors(|c| r.check(c)),
            vec!["attempts cannot be negative".to_string()]
        );
    }

    #[test]
    fn redirect_code_must_be_3xx() {
        let r = HttpRedirect {
            uri: "/a".into(),
            redirect_code: 200,
            ..Default::default()
        };
        assert!(errors(|c| r.check(c))[0].contains("200 is not a valid redirect code"));
        let r = HttpRedirect::default();
        assert_eq!(errors(|c| r.check(c)).len(), 1);
    }

    #[test]
    fn cors_methods_must_be_known() {
        let p = CorsPolicy {
            allow_methods: vec!["GET".into(), "FETCH".into()],
            ..Default::default()
        };
        assert_eq!(
            errors(|c| p.check(c)),
            vec!["\"FETCH\" is not a supported HTTP method".to_string()]
        );
    }
}
