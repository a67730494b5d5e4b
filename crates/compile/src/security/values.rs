//! Istio's policy text to the model's typed values: `*` forms to string patterns,
//! `iss/sub` request principals split as Istio splits them, `{*}` paths to templates,
//! and `when` keys to the attribute they read. Errors say what could not be read; the
//! caller decides (by the policy's action) whether that drops a rule or a value.

use trellis_api::security::check_port_text;
use trellis_model::security::{
    Cidr, PathPattern, RequestPrincipalPattern, ServiceAccount, StringPattern, parse_template,
};

/// Istio's string forms: `*` (presence), `*suffix`, `prefix*`, exact.
pub(super) fn pattern(text: &str) -> StringPattern {
    if text == "*" {
        StringPattern::Presence
    } else if let Some(suffix) = text.strip_prefix('*') {
        StringPattern::Suffix(suffix.to_string())
    } else if let Some(prefix) = text.strip_suffix('*') {
        StringPattern::Prefix(prefix.to_string())
    } else {
        StringPattern::Exact(text.to_string())
    }
}

/// A request principal, split at the last `/` into issuer and subject, each side
/// with the wildcard the text puts on it (Istio's extended JWT principal matcher).
pub(super) fn request_principal(text: &str) -> RequestPrincipalPattern {
    let (issuer, subject) = match text.rsplit_once('/') {
        Some((iss, sub)) => (Some(iss), sub),
        None => (None, text),
    };
    let (issuer, subject) = match (text, issuer) {
        ("*", _) => (StringPattern::Presence, StringPattern::Presence),
        (t, Some(iss)) if t.starts_with('*') => (
            if iss == "*" {
                StringPattern::Presence
            } else {
                StringPattern::Suffix(iss[1..].to_string())
            },
            StringPattern::Exact(subject.to_string()),
        ),
        (t, None) if t.starts_with('*') => (
            StringPattern::Presence,
            StringPattern::Suffix(t[1..].to_string()),
        ),
        (t, Some(iss)) if t.ends_with('*') => (
            StringPattern::Exact(iss.to_string()),
            if subject == "*" {
                StringPattern::Presence
            } else {
                StringPattern::Prefix(subject[..subject.len() - 1].to_string())
            },
        ),
        (t, None) if t.ends_with('*') => (
            StringPattern::Prefix(t[..t.len() - 1].to_string()),
            StringPattern::Presence,
        ),
        (_, Some(iss)) => (
            StringPattern::Exact(iss.to_string()),
            StringPattern::Exact(subject.to_string()),
        ),
        (t, None) => (
            StringPattern::Exact(t.to_string()),
            StringPattern::Exact(String::new()),
        ),
    };
    RequestPrincipalPattern { issuer, subject }
}

/// A path: a template when it uses `{*}` or `{**}`, else a string pattern.
pub(super) fn path(text: &str) -> Result<PathPattern, String> {
    if text.contains("{*}") || text.contains("{**}") {
        parse_template(text).map_err(|e| e.to_string())?;
        return Ok(PathPattern::Template {
            template: text.to_string(),
        });
    }
    Ok(PathPattern::Pattern(pattern(text)))
}

/// An address or CIDR block.
pub(super) fn cidr(text: &str) -> Result<Cidr, String> {
    text.parse::<Cidr>().map_err(|e| e.to_string())
}

/// A port written as decimal text.
pub(super) fn port(text: &str) -> Result<u16, String> {
    check_port_text(text).map_err(|e| e.to_string())
}

/// `namespace/name`, or `name` in the policy's namespace.
pub(super) fn service_account(text: &str, policy_ns: &str) -> Result<ServiceAccount, String> {
    let (namespace, name) = text.split_once('/').unwrap_or((policy_ns, text));
    if name.is_empty() || namespace.is_empty() || name.contains(['/', '*']) {
        return Err(format!(
            "service account `{text}` must be `name` or `namespace/name`"
        ));
    }
    Ok(ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// The attribute a `when` key reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    SourceNamespace,
    SourcePrincipal,
    ConnectionSni,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// Lowercased.
    RequestHeader(String),
    RequestClaim(Vec<String>),
    /// `experimental.envoy.filters.*`.
    Unsupported,
}

/// Reads a `when` key; `Err` for one Istio does not know (validation refuses those).
pub(super) fn key(text: &str) -> Result<Key, String> {
    Ok(match text {
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "destination.ip" => Key::DestinationIp,
        "destination.port" => Key::DestinationPort,
        "source.namespace" => Key::SourceNamespace,
        "source.principal" => Key::SourcePrincipal,
        "connection.sni" => Key::ConnectionSni,
        "request.auth.principal" => Key::RequestPrincipal,
        "request.auth.audiences" => Key::RequestAudiences,
        "request.auth.presenter" => Key::RequestPresenter,
        t if t.starts_with("experimental.envoy.filters.") => Key::Unsupported,
        t => {
            if let Some(rest) = t.strip_prefix("request.headers") {
                let names = bracketed(rest).ok_or_else(|| bad_key(t))?;
                match names.as_slice() {
                    [name] => Key::RequestHeader(name.to_ascii_lowercase()),
                    _ => return Err(bad_key(t)),
                }
            } else if let Some(rest) = t.strip_prefix("request.auth.claims") {
                Key::RequestClaim(bracketed(rest).ok_or_else(|| bad_key(t))?)
            } else {
                return Err(format!("unknown attribute `{t}`"));
            }
        }
    })
}

fn bad_key(key: &str) -> String {
    format!("bad key `{key}`: write the name in brackets, such as request.headers[x-user]")
}

/// `[a][b]` → `["a", "b"]`; `None` unless the text is one or more non-empty bracketed
/// names.
fn bracketed(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        out.push(name.to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use StringPattern::*;

    #[test]
    fn istio_string_forms() {
        assert_eq!(pattern("*"), Presence);
        assert_eq!(pattern("/api/*"), Prefix("/api/".into()));
        assert_eq!(pattern("*.example.com"), Suffix(".example.com".into()));
        assert_eq!(pattern("GET"), Exact("GET".into()));
    }

    #[test]
    fn request_principals_split_at_the_last_slash() {
        let rp = |i, s| RequestPrincipalPattern {
            issuer: i,
            subject: s,
        };
        assert_eq!(
            request_principal("https://issuer.example/alice"),
            rp(
                Exact("https://issuer.example".into()),
                Exact("alice".into())
            )
        );
        assert_eq!(request_principal("*"), rp(Presence, Presence));
        assert_eq!(
            request_principal("https://issuer.example/*"),
            rp(Exact("https://issuer.example".into()), Presence)
        );
        assert_eq!(
            request_principal("*/alice"),
            rp(Presence, Exact("alice".into()))
        );
        assert_eq!(
            request_principal("*example/alice"),
            rp(Suffix("example".into()), Exact("alice".into()))
        );
        assert_eq!(
            request_principal("issuer/al*"),
            rp(Exact("issuer".into()), Prefix("al".into()))
        );
    }

    #[test]
    fn when_keys_name_their_attribute() {
        assert_eq!(
            key("request.headers[X-User]"),
            Ok(Key::RequestHeader("x-user".into()))
        );
        assert_eq!(
            key("request.auth.claims[groups]"),
            Ok(Key::RequestClaim(vec!["groups".into()]))
        );
        assert_eq!(
            key("request.auth.claims[a][b]"),
            Ok(Key::RequestClaim(vec!["a".into(), "b".into()]))
        );
        assert!(key("request.headers").is_err());
        assert!(key("request.headers[a][b]").is_err());
        assert!(key("request.auth.claims[]").is_err());
        assert_eq!(
            key("experimental.envoy.filters.network.mysql_proxy[db.table]"),
            Ok(Key::Unsupported)
        );
        assert!(key("source.nowhere").is_err());
    }

    #[test]
    fn service_accounts_default_to_the_policys_namespace() {
        assert_eq!(
            service_account("web", "shop"),
            Ok(ServiceAccount {
                namespace: "shop".into(),
                name: "web".into()
            })
        );
        assert!(service_account("a/b/c", "shop").is_err());
    }
}
