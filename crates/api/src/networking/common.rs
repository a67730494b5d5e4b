//! Pieces the networking kinds share: string matches, destinations and ports,
//! label selectors, `exportTo`, port protocols and durations, with the checks
//! Istio applies to each wherever they appear.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::host;
use crate::check::{Checker, rules};
use crate::values::Duration;

/// For `skip_serializing_if`: true when a scalar holds its zero value (proto3 leaves those out).
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Reads a list of addresses. An unquoted IPv6 address ending in `::` inside `[...]`
/// (`[1.2.3.4, 2001:db8::]`) is, to a YAML 1.2 reader, a one-entry mapping
/// `{"2001:db8:": null}`; Kubernetes' YAML reader keeps it as text, so it is read
/// back as the address here.
pub(crate) fn address_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Address(String);
    impl<'de> Deserialize<'de> for Address {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Address;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an IP address or CIDR block as text")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Address, E> {
                    Ok(Address(v.to_string()))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Address, A::Error> {
                    let bad =
                        || serde::de::Error::custom("expected an IP address or CIDR block as text");
                    let key: String = map.next_key()?.ok_or_else(bad)?;
                    let value: Option<serde::de::IgnoredAny> = map.next_value()?;
                    if value.is_some() || map.next_key::<String>()?.is_some() || !key.contains(':')
                    {
                        return Err(bad());
                    }
                    Ok(Address(format!("{key}:")))
                }
            }
            d.deserialize_any(V)
        }
    }
    let items: Vec<Address> = Vec::deserialize(d)?;
    Ok(items.into_iter().map(|a| a.0).collect())
}

/// How a string is compared: whole, by prefix, or with an RE2 regex. At most one is set;
/// none set matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// The one-of rule, a non-empty prefix (`uri` alone may match on `""`), and a regex that compiles.
    pub(crate) fn check(&self, c: &mut Checker, allow_empty_prefix: bool) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            c.error("only one of `exact`, `prefix` or `regex` may be set");
        }
        if let Some(prefix) = &self.prefix
            && prefix.is_empty()
            && !allow_empty_prefix
        {
            c.error_at("prefix", "prefix string match should not be empty");
        }
        if let Some(re) = &self.regex {
            check_regex(c, "regex", re);
        }
    }

    /// True when the match uses a regex.
    pub fn is_regex(&self) -> bool {
        self.regex.is_some()
    }
}

/// An RE2 regex Envoy will accept: non-empty, at most 1024 bytes, and compiling.
pub(crate) fn check_regex(c: &mut Checker, field: &str, re: &str) {
    if re.is_empty() {
        c.error_at(field, "regex string match should not be empty");
    } else if re.len() > 1024 {
        c.error_at(field, "regex is too large, max length allowed is 1024");
    } else if let Err(e) = rules::regex(re) {
        c.error_at(
            field,
            format!("{e}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"),
        );
    }
}

/// `port: {number: N}`: picks one port of the destination service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "is_default")]
    pub number: u32,
}

/// A service in the registry, optionally narrowed to a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Destination {
    /// A real service name (not `*`), a DNS-1123 subset name, a port in range.
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.host == "*" {
            c.error_at("host", "invalid destination host *");
        } else if let Err(e) = host::wildcard_domain(&self.host) {
            c.error_at("host", e);
        }
        if !self.subset.is_empty() && !host::is_dns_label(&self.subset) {
            c.error_at("subset", format!("subset name is invalid: {}", self.subset));
        }
        if let Some(port) = &self.port {
            check_port(c, "port.number", port.number);
        }
    }
}

/// A port: number, protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ...), name and
/// target port. Gateways, ServiceEntries and Sidecars all describe ports this way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "is_default")]
    pub number: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated; Gateways and Sidecars reject it, ServiceEntries forward to it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub target_port: u32,
}

/// Reports a port number outside 1..65535 at `field`.
pub(crate) fn check_port(c: &mut Checker, field: &str, number: u32) {
    if let Err(e) = rules::port(i64::from(number)) {
        c.error_at(field, e);
    }
}

/// Reports a port name that is not a DNS-1123 label.
pub(crate) fn check_port_name(c: &mut Checker, field: &str, name: &str) {
    if !host::is_dns_label(name) {
        c.error_at(field, format!("invalid port name: {name}"));
    }
}

/// Reports a protocol Istio does not know; empty means "detect it".
pub(crate) fn check_protocol(c: &mut Checker, field: &str, protocol: &str) {
    if !protocol.is_empty() && Protocol::parse(protocol) == Protocol::Unsupported {
        c.error_at(field, format!("unsupported protocol: {protocol}"));
    }
}

/// `workloadSelector: {labels: ...}` of ServiceEntry and Sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadLabelSelector {
    /// No empty keys and no wildcards; an empty selector is only a warning.
    pub(crate) fn check(&self, c: &mut Checker, what: &str) {
        check_selector_labels(c, "labels", &self.labels);
        if self.labels.is_empty() {
            c.warn(format!(
                "workload selector specified without labels; {what} will apply to every workload in the namespace"
            ));
        }
    }
}

/// Selector labels: keys must be non-empty and neither keys nor values may hold `*`.
pub(crate) fn check_selector_labels(
    c: &mut Checker,
    field: &str,
    labels: &BTreeMap<String, String>,
) {
    c.at(field, |c| {
        for (k, v) in labels {
            if k.is_empty() {
                c.error(format!(
                    "empty key is not supported in selector: \"{k}={v}\""
                ));
            }
            if k.contains('*') || v.contains('*') {
                c.error(format!(
                    "wildcard is not supported in selector: \"{k}={v}\""
                ));
            }
        }
    });
}

/// Kubernetes label syntax for keys (`prefix/name`) and values.
pub(crate) fn check_labels(c: &mut Checker, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Err(e) = label_key(k) {
            c.error_at(field, e);
        }
        if !v.is_empty() && !qualified_name(v) {
            c.error_at(field, format!("invalid label value: \"{v}\""));
        }
    }
}

fn label_key(key: &str) -> Result<(), String> {
    let bad = || format!("invalid label key: \"{key}\"");
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.split('.').any(|l| !host::is_dns_label(l)) {
            return Err(bad());
        }
        if prefix.len() > 253 {
            return Err(format!(
                "invalid label key: \"{key}\" (DNS prefix is too long)"
            ));
        }
    }
    if !qualified_name(name) {
        return Err(bad());
    }
    if name.len() > 63 {
        return Err(format!("invalid label key: \"{key}\" (name is too long)"));
    }
    Ok(())
}

/// Alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn qualified_name(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What the resource's `exportTo` may say, and who may be left out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportKind {
    Plain,
    ServiceEntry,
    DestinationRuleWithSelector,
}

/// `.`, `*`, `~` (ServiceEntry only) or namespace names; no duplicates; `*` and `~` alone.
pub(crate) fn check_export_to(
    c: &mut Checker,
    namespace: &str,
    export_to: &[String],
    kind: ExportKind,
) {
    if export_to.is_empty() {
        return;
    }
    c.at("exportTo", |c| {
        let mut seen: Vec<&str> = Vec::new();
        for e in export_to {
            let key = if e == "." { namespace } else { e.as_str() };
            if seen.contains(&key) {
                if key != e {
                    c.error(format!(
                        "duplicate entries in exportTo: . and current namespace {namespace}"
                    ));
                } else {
                    c.error(format!("duplicate entries in exportTo for entry {e}"));
                }
                continue;
            }
            match key {
                "~" if kind == ExportKind::ServiceEntry => seen.push(key),
                "~" => c.error("exportTo ~ (none) is not allowed for Istio configuration objects"),
                "*" => seen.push(key),
                _ if key == namespace || host::is_dns_label(key) => seen.push(key),
                _ => c.error(format!(
                    "invalid exportTo entry `{e}`: only ., *, or a valid DNS 1123 label is allowed"
                )),
            }
        }
        if kind == ExportKind::DestinationRuleWithSelector && !seen.is_empty() {
            if !seen.contains(&namespace) {
                c.error("destination rule with workload selector cannot have exportTo beyond current namespace");
            } else if seen.len() > 1 {
                c.error("destination rule with workload selector cannot have multiple entries in exportTo");
            }
        }
        if seen.contains(&"*") && export_to.len() > 1 {
            c.error("cannot have both public (*) and non-public exportTo values for a resource");
        }
        if seen.contains(&"~") && export_to.len() > 1 {
            c.error("cannot export service entry to no one (~) and someone");
        }
    });
}

/// A duration Istio's webhook checks: at least 1ms, whole milliseconds.
pub(crate) fn check_duration(c: &mut Checker, field: &str, d: Option<Duration>) {
    let Some(d) = d else { return };
    let d = d.get();
    if d < std::time::Duration::from_millis(1) {
        c.error_at(
            field,
            format!("duration must be greater than 1ms (got {d:?})"),
        );
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        c.error_at(
            field,
            format!("only durations to ms precision are supported (got {d:?})"),
        );
    }
}

/// A duration the CRD bounds below by 1ms (no precision rule).
pub(crate) fn check_min_1ms(c: &mut Checker, field: &str, d: Option<Duration>) {
    if let Some(d) = d
        && d.get() < std::time::Duration::from_millis(1)
    {
        c.error_at(
            field,
            format!(
                "must be a valid duration greater than 1ms (got {:?})",
                d.get()
            ),
        );
    }
}

/// Port protocols as Istio names them (case does not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    MySql,
    Unsupported,
}

impl Protocol {
    /// Reads a protocol name, ignoring case.
    pub fn parse(text: &str) -> Protocol {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => Protocol::Unsupported,
        }
    }

    /// Carried over HTTP (1.1 or 2).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// Opaque TCP from the proxy's point of view.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::MySql
        )
    }

    /// TLS on the wire (HTTPS or TLS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::error_messages as errors;

    #[test]
    fn string_match_allows_one_kind_and_rejects_empty_prefix() {
        let m = StringMatch {
            exact: Some("a".into()),
            prefix: Some("b".into()),
            regex: None,
        };
        assert_eq!(errors(|c| m.check(c, false)).len(), 1);
        let empty = StringMatch {
            prefix: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(errors(|c| empty.check(c, false)).len(), 1);
        assert!(errors(|c| empty.check(c, true)).is_empty());
    }

    #[test]
    fn bad_regex_is_reported_with_re2_hint() {
        let m = StringMatch {
            regex: Some("^/a/([0-9]+".into()),
            ..Default::default()
        };
        let e = errors(|c| m.check(c, false));
        assert!(e[0].contains("RE2 style"), "{e:?}");
    }

    #[test]
    fn export_to_star_must_stand_alone() {
        let e = errors(|c| {
            check_export_to(
                c,
                "shop",
                &["*".into(), "billing".into()],
                ExportKind::Plain,
            )
        });
        assert!(e[0].contains("public (*)"), "{e:?}");
        assert!(
            errors(|c| check_export_to(
                c,
                "shop",
                &[".".into(), "billing".into()],
                ExportKind::Plain
            ))
            .is_empty()
        );
        let dup =
            errors(|c| check_export_to(c, "shop", &[".".into(), "shop".into()], ExportKind::Plain));
        assert_eq!(dup.len(), 1);
        assert!(
            !errors(|c| check_export_to(c, "shop", &["~".into()], ExportKind::Plain)).is_empty()
        );
        assert!(
            errors(|c| check_export_to(c, "shop", &["~".into()], ExportKind::ServiceEntry))
                .is_empty()
        );
    }

    #[test]
    fn durations_need_whole_milliseconds() {
        let d = |t: &str| Some(Duration::parse(t).expect("duration"));
        assert_eq!(errors(|c| check_duration(c, "t", d("0.0005s"))).len(), 1);
        assert_eq!(errors(|c| check_duration(c, "t", d("1.5ms"))).len(), 1);
        assert!(errors(|c| check_duration(c, "t", d("250ms"))).is_empty());
    }

    #[test]
    fn label_keys_follow_kubernetes_syntax() {
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("version").is_ok());
        assert!(label_key("-bad").is_err());
        assert!(label_key("a/b/c").is_err());
        assert!(qualified_name("v1.0"));
        assert!(!qualified_name("v1-"));
    }
}
