//! Small value types that Istio's APIs share: durations in Go syntax, percentages,
//! and Kubernetes' int-or-string.
//!
//! Each parses strictly and says what would be valid, so a typo in `5s` is reported
//! at the field that holds it rather than as a vague type error.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why text is not a [`Duration`]; each variant holds the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "invalid duration `{0}` (expected a number with a unit, such as `5s`, `1m30s`, `250ms`)"
    )]
    Invalid(String),
    #[error("negative duration `{0}` is not allowed")]
    Negative(String),
    #[error("duration `{0}` is too large")]
    TooLarge(String),
}

/// A duration written the way Istio users write it: `5s`, `1m30s`, `250ms`, `0.5s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses Go's `time.ParseDuration` syntax (also what protobuf JSON accepts).
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let bad = || DurationError::Invalid(text.to_string());
        let body = text.trim();
        let body = body.strip_prefix('+').unwrap_or(body);
        if body.starts_with('-') {
            return Err(DurationError::Negative(text.to_string()));
        }
        if body == "0" {
            return Ok(Duration(std::time::Duration::ZERO));
        }
        if body.is_empty() {
            return Err(bad());
        }
        let mut rest = body;
        let mut nanos: f64 = 0.0;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if number_len == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            nanos += number * scale;
        }
        if !nanos.is_finite() || nanos > u64::MAX as f64 {
            return Err(DurationError::TooLarge(text.to_string()));
        }
        Ok(Duration(std::time::Duration::from_nanos(
            nanos.round() as u64
        )))
    }

    /// The duration as std's type.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Text, as [`Duration::parse`] reads it. No `pattern`: a malformed duration is
/// better refused by Trellis's own check, which says what would be valid.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration in Go syntax: a number with a unit (ns, us, ms, s, m, h), such as `5s`, `1m30s` or `250ms`.",
        })
    }
}

/// `{value: 10.5}`: a percentage, 0 to 100 (Istio's `Percent`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Kubernetes' int-or-string, as in `targetPort: 8080` or `targetPort: http`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v).map(IntOrString::Int).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// Kubernetes' own marker, with the one `anyOf` it allows beside it; both are
    /// valid JSON Schema too.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        })
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u128 {
        Duration::parse(text).expect("valid").0.as_millis()
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(ms("5s"), 5000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("0.5s"), 500);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(
            Duration::parse("0.0005s").expect("valid").0.as_micros(),
            500
        );
        assert_eq!(ms("0"), 0);
    }

    #[test]
    fn bad_durations_say_what_is_valid() {
        for bad in ["5", "5x", "s", "", "-1s", "1.2.3s", "5 s"] {
            let err = Duration::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }
}
