//! RequestAuthentication: which JWTs the selected workloads accept, where the
//! token is read from, and how its signature keys are found.
//!
//! A request with an invalid token is rejected; a request without one is let
//! through unless `presence: REQUIRED` (or an AuthorizationPolicy) says otherwise.

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate, rules::policy};
use crate::meta::{ObjectMeta, PolicyTargetReference, WorkloadSelector};
use crate::values::Duration;

/// `spec` of a RequestAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The token issuers accepted; a token must satisfy one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to validate tokens from one issuer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` claim tokens must carry (optional when `jwksUri` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty accepts any audience.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the signing keys are fetched from (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The same as `jwksUri`, in the older snake-case spelling.
    #[serde(default, rename = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri_snake: Option<String>,
    /// The signing keys inline, as a JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the token may be read from (default: `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token may be read from (default: `access_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the token may be read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// A header to receive the verified payload (base64url JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the request sent upstream.
    #[serde(default)]
    pub forward_original_token: bool,
    /// Claims copied into request headers after verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long fetching the key set may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Claims whose string values are space-separated lists (like `scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// Whether a request without a token is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// Whether the token must be present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    /// A request without a token passes authentication (authorization may still refuse it).
    #[default]
    Optional,
    /// A request without a token is rejected.
    Required,
}

/// A header a token is read from, with the prefix to strip (`Bearer `).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Copies one claim of a verified token into a request header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

/// A parsed `jwksUri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUri {
    /// `http` or `https`.
    pub scheme: String,
    pub host: String,
    /// The explicit port, or 80/443 from the scheme.
    pub port: u16,
    /// True for https.
    pub tls: bool,
}

impl JwtRule {
    /// The key-set URI, whichever spelling was used.
    pub fn effective_jwks_uri(&self) -> Option<&str> {
        self.jwks_uri
            .as_deref()
            .or(self.jwks_uri_snake.as_deref())
            .filter(|u| !u.is_empty())
    }

    /// The issuer, when set and not empty.
    pub fn effective_issuer(&self) -> Option<&str> {
        self.issuer.as_deref().filter(|i| !i.is_empty())
    }

    /// The effective presence requirement.
    pub fn presence(&self) -> JwtPresence {
        self.presence.unwrap_or_default()
    }
}

/// Why a `jwksUri` is refused; each variant keeps the URI as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksUriError {
    #[error("jwksUri is {} characters long; at most 2048 are allowed", .0.len())]
    TooLong(String),
    #[error("jwksUri `{}`: url must have scheme http:// or https://", .0.escape_default())]
    NoScheme(String),
    #[error("jwksUri `{}` contains an invalid character {bad:?}", .uri.escape_default())]
    InvalidCharacter { uri: String, bad: char },
    #[error(
        "jwksUri `{uri}`: URI scheme `{scheme}` is not supported (url must have scheme http:// or https://)"
    )]
    UnsupportedScheme { uri: String, scheme: String },
    /// `scheme` is lowercased, for the example in the message.
    #[error("jwksUri `{uri}` has no host (write it as {scheme}://host/path)")]
    NoHost { uri: String, scheme: String },
    #[error("jwksUri `{0}` has an unterminated IPv6 host")]
    UnterminatedIpv6(String),
    #[error("jwksUri `{uri}`: host `{host}` contains an invalid character {bad:?}")]
    InvalidHostCharacter {
        uri: String,
        host: String,
        bad: char,
    },
    #[error("jwksUri `{uri}`: invalid port `{port}` (must be a number 1..65535)")]
    InvalidPort { uri: String, port: String },
}

/// Why inline `jwks` is not a JSON Web Key Set.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("jwks parse error: {0}")]
    NotJson(serde_json::Error),
    /// `keys[i]` has no string `kty`.
    #[error("jwks parse error: keys[{0}] is not a JSON Web Key (an object with a `kty` member)")]
    NotAKey(usize),
    #[error("jwks parse error: `keys` must be a list of JSON Web Keys")]
    KeysNotAList,
    #[error(
        "jwks parse error: expected a JSON Web Key Set (`{{\"keys\": [...]}}`) or a single key"
    )]
    NotAKeySet,
}

/// Parses a key-set URI: an absolute http or https URL with a host.
pub fn parse_jwks_uri(uri: &str) -> Result<JwksUri, JwksUriError> {
    if uri.len() > 2048 {
        return Err(JwksUriError::TooLong(uri.to_string()));
    }
    // A scheme is letters, then letters, digits, '+', '-' or '.', up to the first ':'.
    let scheme = uri.split_once(':').map(|(s, _)| s).filter(|s| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let Some(scheme) = scheme else {
        return Err(JwksUriError::NoScheme(uri.to_string()));
    };
    if let Some(bad) = uri.chars().find(|ch| ch.is_control() || *ch == ' ') {
        return Err(JwksUriError::InvalidCharacter {
            uri: uri.to_string(),
            bad,
        });
    }
    let lower = scheme.to_ascii_lowercase();
    let tls = match lower.as_str() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(JwksUriError::UnsupportedScheme {
                uri: uri.to_string(),
                scheme: scheme.to_string(),
            });
        }
    };
    let rest = &uri[scheme.len() + 1..];
    let no_host = || JwksUriError::NoHost {
        uri: uri.to_string(),
        scheme: lower.clone(),
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(no_host());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => return Err(JwksUriError::UnterminatedIpv6(uri.to_string())),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(no_host());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%')))
    {
        return Err(JwksUriError::InvalidHostCharacter {
            uri: uri.to_string(),
            host: host.to_string(),
            bad,
        });
    }
    let port = match port {
        None | Some("") => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(JwksUriError::InvalidPort {
                    uri: uri.to_string(),
                    port: p.to_string(),
                });
            }
        },
    };
    Ok(JwksUri {
        scheme: lower,
        host: host.to_string(),
        port,
        tls,
    })
}

/// Checks that inline `jwks` is a JSON Web Key Set (or a single key): JSON objects
/// with a `kty` member.
pub fn check_jwks(jwks: &str) -> Result<(), JwksError> {
    let value: serde_json::Value = serde_json::from_str(jwks).map_err(JwksError::NotJson)?;
    let key_ok = |k: &serde_json::Value| k.get("kty").is_some_and(serde_json::Value::is_string);
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => {
            if let Some(i) = keys.iter().position(|k| !key_ok(k)) {
                return Err(JwksError::NotAKey(i));
            }
            Ok(())
        }
        Some(_) => Err(JwksError::KeysNotAList),
        None if key_ok(&value) => Ok(()),
        None => Err(JwksError::NotAKeySet),
    }
}

fn non_empty_items(field: &str, what: &str, items: &[String], c: &mut Checker) {
    c.each(field, items, |c, _, v| {
        if v.is_empty() {
            c.error(format!("{what} must be non-empty string"));
        }
    });
}

fn check_jwt_rule(rule: &JwtRule, c: &mut Checker) {
    if rule.effective_issuer().is_none() && rule.effective_jwks_uri().is_none() {
        c.error("issuer or jwksUri must be non-empty string: set at least one of them");
    }
    if rule.issuer.as_deref() == Some("") {
        c.error_at("issuer", "issuer, when written, must not be empty");
    }
    non_empty_items("audiences", "audience", &rule.audiences, c);

    let key_sources = usize::from(rule.jwks_uri.is_some())
        + usize::from(rule.jwks_uri_snake.is_some())
        + usize::from(rule.jwks.is_some());
    if key_sources > 1 {
        c.error("only one of jwks or jwksUri (or jwks_uri) can be set");
    }
    for (field, uri) in [
        ("jwksUri", &rule.jwks_uri),
        ("jwks_uri", &rule.jwks_uri_snake),
    ] {
        let Some(uri) = uri else { continue };
        c.at(field, |c| {
            if uri.is_empty() {
                c.error("jwksUri, when written, must not be empty");
                return;
            }
            match parse_jwks_uri(uri) {
                Err(e) => c.error(e.to_string()),
                Ok(parsed) if !parsed.tls => c.warn(format!(
                    "jwksUri `{uri}` uses plain http; signing keys fetched without TLS can be tampered with"
                )),
                Ok(_) => {}
            }
        });
    }
    if let Some(jwks) = &rule.jwks
        && let Err(e) = check_jwks(jwks)
    {
        c.error_at("jwks", e.to_string());
    }

    c.each("fromHeaders", &rule.from_headers, |c, _, h| {
        if h.name.is_empty() {
            c.error_at("name", "location header name must be non-empty string");
        } else if let Err(e) = policy::token_header_name(&h.name) {
            c.error_at("name", e);
        }
    });
    non_empty_items("fromParams", "location query", &rule.from_params, c);
    non_empty_items("fromCookies", "cookie name", &rule.from_cookies, c);

    if let Some(header) = &rule.output_payload_to_header
        && !header.is_empty()
        && let Err(e) = policy::token_header_name(header)
    {
        c.error_at("outputPayloadToHeader", e);
    }
    c.each(
        "outputClaimToHeaders",
        &rule.output_claim_to_headers,
        |c, _, o| {
            if o.claim.is_empty() {
                c.error_at(
                    "claim",
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
            }
            if o.header.is_empty() {
                c.error_at(
                    "header",
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
            } else if let Err(e) = policy::plain_header_name(&o.header) {
                c.error_at("header", e);
            }
        },
    );
    if let Some(timeout) = rule.timeout
        && let Err(e) = policy::duration_at_least_1ms(timeout)
    {
        c.error_at("timeout", e);
    }
    if rule.space_delimited_claims.len() > 64 {
        c.error_at(
            "spaceDelimitedClaims",
            format!(
                "at most 64 spaceDelimitedClaims are allowed, found {}",
                rule.space_delimited_claims.len()
            ),
        );
    }
    non_empty_items(
        "spaceDelimitedClaims",
        "space-delimited claim name",
        &rule.space_delimited_claims,
        c,
    );
}

impl Validate for RequestAuthentication {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        super::check_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            c,
        );
        super::refuse_dry_run("RequestAuthentication", meta, c);
        if self.jwt_rules.len() > 4096 {
            c.error_at(
                "jwtRules",
                format!(
                    "at most 4096 jwtRules are allowed, found {}",
                    self.jwt_rules.len()
                ),
            );
        }
        c.each("jwtRules", &self.jwt_rules, |c, _, rule| {
            check_jwt_rule(rule, c)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_support::{assert_clean, assert_error, warnings};

    fn ra(rule: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: r\n  namespace: shop\nspec:\n  jwtRules:\n  - {rule}\n"
        )
    }

    #[test]
    fn full_rule_is_valid() {
        assert_clean(&ra(
            "issuer: https://accounts.example.com\n    jwksUri: https://accounts.example.com/.well-known/jwks.json\n    audiences: [shop-api]\n    forwardOriginalToken: true\n    fromHeaders:\n    - name: x-jwt\n      prefix: \"Bearer \"\n    fromParams: [token]\n    fromCookies: [session]\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: x-user-tier\n      claim: tier\n    timeout: 5s\n    spaceDelimitedClaims: [scope]\n    presence: REQUIRED",
        ));
    }

    #[test]
    fn rule_needs_issuer_or_jwks_uri() {
        assert_error(
            &ra("audiences: [shop-api]"),
            "issuer or jwksUri must be non-empty string",
        );
        assert_clean(&ra("jwksUri: https://example.com/jwks.json"));
        assert_clean(&ra("issuer: example"));
    }

    #[test]
    fn jwks_uri_must_be_http_or_https() {
        assert_error(
            &ra("issuer: example\n    jwksUri: \"hTPp\\\\\\blah\""),
            "url must have scheme",
        );
        assert_error(
            &ra("issuer: example\n    jwksUri: ftp://example.com/keys"),
            "URI scheme `ftp` is not supported",
        );
        assert_error(
            &ra("issuer: example\n    jwksUri: https://example.com:99999/keys"),
            "invalid port",
        );
        assert_error(
            &ra("issuer: example\n    jwksUri: \"https:///keys\""),
            "has no host",
        );
        let http = ra("issuer: example\n    jwksUri: http://keys.example.svc:8000/jwks");
        assert_clean(&http);
        assert_eq!(warnings(&http).len(), 1);
    }

    #[test]
    fn jwks_uri_parses_host_and_port() {
        let p = parse_jwks_uri("HTTPS://user@[::1]:8443/jwks").expect("valid");
        assert_eq!((p.host.as_str(), p.port, p.tls), ("::1", 8443, true));
        let p = parse_jwks_uri("http://keys.example.com/jwks").expect("valid");
        assert_eq!(
            (p.host.as_str(), p.port, p.tls),
            ("keys.example.com", 80, false)
        );
    }

    #[test]
    fn jwks_and_jwks_uri_are_exclusive() {
        assert_error(
            &ra(
                "issuer: example\n    jwksUri: https://example.com/jwks\n    jwks: '{\"keys\": []}'",
            ),
            "only one of jwks or jwksUri",
        );
        assert_error(
            &ra(
                "issuer: example\n    jwksUri: https://example.com/jwks\n    jwks_uri: https://example.com/jwks",
            ),
            "only one of jwks or jwksUri",
        );
    }

    #[test]
    fn inline_jwks_must_be_a_key_set() {
        assert_clean(&ra(
            "issuer: example\n    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"e\": \"AQAB\", \"n\": \"abc\"}]}'",
        ));
        assert_error(
            &ra("issuer: example\n    jwks: 'not json'"),
            "jwks parse error",
        );
        assert_error(
            &ra("issuer: example\n    jwks: '{\"keys\": [{}]}'"),
            "keys[0]",
        );
    }

    #[test]
    fn token_locations_must_be_named() {
        assert_error(
            &ra("issuer: example\n    fromHeaders:\n    - prefix: baz"),
            "location header name must be non-empty string",
        );
        assert_error(
            &ra("issuer: example\n    fromParams: [\"\"]"),
            "location query must be non-empty string",
        );
        assert_error(
            &ra("issuer: example\n    fromCookies: [\"\"]"),
            "cookie name must be non-empty string",
        );
        assert_error(
            &ra("issuer: example\n    audiences: [\"\"]"),
            "audience must be non-empty string",
        );
    }

    #[test]
    fn claim_headers_must_be_plain_names() {
        assert_error(
            &ra(
                "issuer: example\n    outputClaimToHeaders:\n    - claim: x\n      header: \":authority\"",
            ),
            "not a valid header name",
        );
        assert_error(
            &ra("issuer: example\n    outputClaimToHeaders:\n    - claim: \"\"\n      header: h"),
            "header and claim value must be non-empty string",
        );
        assert_error(
            &ra("issuer: example\n    outputClaimToHeaders:\n    - ~"),
            "outputClaimToHeaders[0]",
        );
    }

    #[test]
    fn output_payload_header_must_be_a_header_name() {
        assert_error(
            &ra("issuer: example\n    outputPayloadToHeader: \"bad header\""),
            "not a valid HTTP header name",
        );
    }

    #[test]
    fn timeout_is_a_duration_of_at_least_1ms() {
        assert_error(
            &ra("issuer: example\n    timeout: apple"),
            "invalid duration",
        );
        assert_error(&ra("issuer: example\n    timeout: 100us"), "at least 1ms");
    }

    #[test]
    fn presence_is_an_enum() {
        assert_error(
            &ra("issuer: example\n    presence: MANDATORY"),
            "unknown value `MANDATORY`",
        );
    }

    #[test]
    fn null_rule_is_rejected() {
        let doc = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: r\nspec:\n  jwtRules:\n  -\n";
        assert_error(doc, "jwtRules[0]");
    }

    #[test]
    fn target_refs_follow_the_shared_rules() {
        let doc = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: r\nspec:\n  targetRef:\n    group: \"__\"\n    kind: Service\n    name: foo\n";
        assert_error(doc, "targetRef must be to one of");
    }
}
