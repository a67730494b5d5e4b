//! The values policies match on, already typed: string patterns in Istio's four forms
//! (exact, `prefix*`, `*suffix`, `*` for presence), path patterns (those, or a
//! `{*}`/`{**}` template), CIDR blocks, and JWT request principals split into issuer
//! and subject. Parsing Istio's text into these is the compiler's job, not this module's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a policy compares one string attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any value at all (Istio's `*`); for identities, any non-empty value.
    Presence,
}

/// How a policy compares a request path (without its query string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathPattern {
    /// `/api/{*}/items/{**}`: `{*}` is one non-empty segment, `{**}` any remainder.
    Template {
        template: String,
    },
    Pattern(StringPattern),
}

/// A JWT request principal (`issuer/subject`), matched as Istio does: split at the
/// last `/`, each side with its own pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPrincipalPattern {
    pub issuer: StringPattern,
    pub subject: StringPattern,
}

/// A service account a peer identity must carry (`serviceAccounts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// An address block: `10.0.0.0/8`, or one address (a full-length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Why text is not an address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("`{0}`: prefix length must be a number up to {1}")]
    PrefixLength(String, u8),
}

impl Cidr {
    /// True when `ip` falls in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let address: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(text.to_string()))?;
        let max: u8 = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or(CidrError::PrefixLength(text.to_string(), max))?,
        };
        // Host bits cleared, so equal blocks compare equal.
        let address = match address {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr {
            address,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a path template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("path template `{0}` must start with `/`")]
    NotAbsolute(String),
    #[error("path template `{0}`: `{{*}}` and `{{**}}` must be whole segments")]
    PartialSegment(String),
    #[error("path template `{0}`: `{{**}}` may appear only once, after every `{{*}}`")]
    MisplacedRemainder(String),
}

/// One piece of a path template, matched left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePiece {
    /// Text matched as written, slashes included.
    Literal(String),
    /// `{*}`: one non-empty segment (no `/`).
    One,
    /// `{**}`: any remainder, slashes included (possibly empty); the last operator.
    Rest,
}

/// Splits a template into pieces, checking Envoy's rules: `{*}` and `{**}` are whole
/// segments, and `{**}` is the last operator (literal text may follow it).
pub fn parse_template(template: &str) -> Result<Vec<TemplatePiece>, TemplateError> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(TemplateError::NotAbsolute(template.to_string()));
    };
    let mut out: Vec<TemplatePiece> = Vec::new();
    let mut literal = String::from("/");
    let mut seen_rest = false;
    for (i, segment) in rest.split('/').enumerate() {
        if i > 0 {
            literal.push('/');
        }
        match segment {
            "{*}" | "{**}" if seen_rest => {
                return Err(TemplateError::MisplacedRemainder(template.to_string()));
            }
            "{*}" | "{**}" => {
                if !literal.is_empty() {
                    out.push(TemplatePiece::Literal(std::mem::take(&mut literal)));
                }
                if segment == "{*}" {
                    out.push(TemplatePiece::One);
                } else {
                    seen_rest = true;
                    out.push(TemplatePiece::Rest);
                }
            }
            s if s.contains('{') || s.contains('}') => {
                return Err(TemplateError::PartialSegment(template.to_string()));
            }
            s => literal.push_str(s),
        }
    }
    if !literal.is_empty() {
        out.push(TemplatePiece::Literal(literal));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_its_addresses_only() {
        let block: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(block.contains("10.1.200.3".parse().expect("ip")));
        assert!(!block.contains("10.2.0.1".parse().expect("ip")));
        assert!(block.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let one: Cidr = "192.168.1.7".parse().expect("ip");
        assert_eq!(one.prefix_len, 32);
        assert!(one.contains("192.168.1.7".parse().expect("ip")));
        assert!(!one.contains("192.168.1.8".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn cidr_round_trips_as_text() {
        let block: Cidr = "10.1.2.3/16".parse().expect("cidr");
        let json = serde_json::to_string(&block).expect("json");
        assert_eq!(json, "\"10.1.0.0/16\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).expect("back"), block);
    }

    #[test]
    fn templates_follow_envoys_rules() {
        use TemplatePiece::*;
        assert_eq!(
            parse_template("/a/{*}/{**}").expect("ok"),
            vec![Literal("/a/".into()), One, Literal("/".into()), Rest]
        );
        assert_eq!(
            parse_template("/foo/{**}/").expect("ok"),
            vec![Literal("/foo/".into()), Rest, Literal("/".into())]
        );
        assert!(parse_template("/a/x{*}").is_err());
        assert!(parse_template("/{**}/{*}").is_err());
        assert!(parse_template("a/{*}").is_err());
    }

    #[test]
    fn path_patterns_read_as_template_or_pattern() {
        let t: PathPattern = serde_json::from_str(r#"{"template":"/a/{*}"}"#).expect("t");
        assert!(matches!(t, PathPattern::Template { .. }));
        let p: PathPattern = serde_json::from_str(r#"{"prefix":"/api/"}"#).expect("p");
        assert_eq!(
            p,
            PathPattern::Pattern(StringPattern::Prefix("/api/".into()))
        );
        let any: PathPattern = serde_json::from_str(r#""presence""#).expect("any");
        assert_eq!(any, PathPattern::Pattern(StringPattern::Presence));
    }
}
