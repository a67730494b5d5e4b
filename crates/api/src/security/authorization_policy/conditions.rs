//! The `when` condition keys Istio evaluates (`source.ip`, `request.headers[name]`,
//! ...): which keys exist, what replaced the retired ones, and how each key's values
//! are checked. Sources and operations are checked in `validate.rs`.

use super::spec::Condition;
use super::values::check_port_text;
use crate::check::{Checker, rules};

/// The condition keys Istio evaluates, with how their values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttributeKind {
    /// Values are IPs or CIDR blocks.
    Ip,
    /// Values are port numbers.
    Port,
    /// Any non-empty text.
    Text,
}

/// Exact condition keys.
const EXACT_ATTRIBUTES: &[(&str, AttributeKind)] = &[
    ("source.ip", AttributeKind::Ip),
    ("remote.ip", AttributeKind::Ip),
    ("source.namespace", AttributeKind::Text),
    ("source.principal", AttributeKind::Text),
    ("source.serviceAccount", AttributeKind::Text),
    ("source.trustDomain", AttributeKind::Text),
    ("request.auth.principal", AttributeKind::Text),
    ("request.auth.audiences", AttributeKind::Text),
    ("request.auth.presenter", AttributeKind::Text),
    ("destination.ip", AttributeKind::Ip),
    ("destination.port", AttributeKind::Port),
    ("connection.sni", AttributeKind::Text),
];

/// Condition keys written as `prefix[name]`.
const MAP_ATTRIBUTES: &[&str] = &[
    "request.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
];

/// Every condition key, for suggestions.
pub fn known_condition_keys() -> impl Iterator<Item = &'static str> {
    EXACT_ATTRIBUTES.iter().map(|(k, _)| *k).chain([
        "request.headers[]",
        "request.auth.claims[]",
        "experimental.envoy.filters.",
    ])
}

/// Why a `when` key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionKeyError {
    /// A `prefix[name]` key without its `[name]`.
    #[error("bad key ({key}): should have format {format}[name]")]
    MissingName { key: String, format: &'static str },
    #[error("attribute {0} is replaced by the metadata.namespace of the policy")]
    ReplacedByNamespace(String),
    #[error("attribute {0} is replaced by the workload selector")]
    ReplacedBySelector(String),
    #[error("deprecated attribute {0}: only supported in v1alpha1")]
    Deprecated(String),
    /// No such key; `nearest` is the closest known one, if any is close.
    #[error("unknown attribute: {key}{}", did_you_mean(*.nearest))]
    Unknown {
        key: String,
        nearest: Option<&'static str>,
    },
}

fn did_you_mean(nearest: Option<&str>) -> String {
    nearest.map_or_else(String::new, |n| format!(" (did you mean `{n}`?)"))
}

/// Checks a condition key and says how its values are to be checked.
fn check_attribute(key: &str) -> Result<AttributeKind, ConditionKeyError> {
    if let Some((_, kind)) = EXACT_ATTRIBUTES.iter().find(|(k, _)| *k == key) {
        return Ok(*kind);
    }
    if let Some(prefix) = MAP_ATTRIBUTES.iter().find(|p| key.starts_with(*p)) {
        let open = key.find('[');
        let ok = key.ends_with(']') && open.is_some_and(|o| o > 0 && o < key.len() - 2);
        return if ok {
            Ok(AttributeKind::Text)
        } else {
            Err(ConditionKeyError::MissingName {
                key: key.to_string(),
                format: prefix.trim_end_matches('.'),
            })
        };
    }
    match key {
        "destination.namespace" => Err(ConditionKeyError::ReplacedByNamespace(key.to_string())),
        k if k.starts_with("destination.labels") => {
            Err(ConditionKeyError::ReplacedBySelector(key.to_string()))
        }
        "destination.name" | "destination.user" => {
            Err(ConditionKeyError::Deprecated(key.to_string()))
        }
        _ => Err(ConditionKeyError::Unknown {
            key: key.to_string(),
            nearest: rules::nearest(key, known_condition_keys()),
        }),
    }
}

pub(super) fn check_condition(cond: &Condition, c: &mut Checker) {
    let key = cond.key.as_str();
    if key.is_empty() {
        c.error_at("key", "`key` must not be empty");
        return;
    }
    if cond.values.is_empty() && cond.not_values.is_empty() {
        c.error(format!(
            "at least one of `values` or `notValues` must be set for key {key}"
        ));
        return;
    }
    let kind = match check_attribute(key) {
        Ok(kind) => kind,
        Err(e) => {
            c.error_at("key", e.to_string());
            return;
        }
    };
    if key.starts_with("experimental.envoy.filters.") {
        c.at("key", |c| {
            c.warn(format!(
                "{key} is not supported by Trellis: an ALLOW rule using it never matches, a DENY, AUDIT or CUSTOM rule ignores it (so matches more)"
            ))
        });
    }
    for (field, values) in [("values", &cond.values), ("notValues", &cond.not_values)] {
        c.each(field, values, |c, _, v| {
            if v.is_empty() {
                c.error(format!("empty value not allowed for key {key}"));
                return;
            }
            let result = match kind {
                AttributeKind::Ip => rules::ip_or_cidr(v),
                AttributeKind::Port => check_port_text(v).map(|_| ()).map_err(|e| e.to_string()),
                AttributeKind::Text => Ok(()),
            };
            if let Err(e) = result {
                c.error(format!("invalid value for key {key}: {e}"));
            }
        });
    }
}
