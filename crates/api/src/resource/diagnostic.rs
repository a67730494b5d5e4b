//! What the loader tells the user: a [`Diagnostic`] (file, line, resource, field path,
//! message) and the rewriting of serde's errors into a field path and a message that
//! says what would be valid (`did you mean ...?`). Lines come from the path later; no
//! rule here sees a file.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::check::{Severity, rules};

/// A problem tied to a place in the user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<str>,
    pub line: u32,
    /// `Kind namespace/name` when the problem belongs to one resource.
    pub resource: Option<String>,
    /// The field path, such as `spec.http[0].timeout`.
    pub path: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(p) = &self.path
            && !p.is_empty()
        {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A field with the wrong name or type, found while typing a document.
#[derive(Debug, Clone)]
pub struct TypeError {
    pub path: String,
    pub message: String,
}

/// Deserializes `value`, reporting the failing field path under `prefix`.
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value, prefix: &str) -> Result<T, TypeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = join_path(prefix, if inner == "." { "" } else { &inner });
        let message = e.inner().to_string();
        explain(path, &message)
    })
}

fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// Rewrites serde's messages into ones that say what would be valid.
fn explain(path: String, message: &str) -> TypeError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        return unknown_field_error(&path, name, &known);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let hint = match rules::nearest(name, known.iter().map(String::as_str)) {
            Some(n) => format!(" (did you mean `{n}`? valid: {})", known.join(", ")),
            None => format!(" (valid: {})", known.join(", ")),
        };
        return TypeError {
            path,
            message: format!("unknown value `{name}`{hint}"),
        };
    }
    let message = message
        .replace("invalid type: ", "wrong type: ")
        .replace("a string", "text")
        .replace("a sequence", "a list")
        .replace("map", "mapping");
    TypeError { path, message }
}

/// `path` already ends with the unknown field's name.
pub(super) fn unknown_field_error(path: &str, name: &str, known: &[&str]) -> TypeError {
    let path = path.to_string();
    let hint = match rules::nearest(name, known.iter().copied()) {
        Some(n) => format!(" (did you mean `{n}`?)"),
        None if known.is_empty() => " (this object has no fields)".to_string(),
        None => format!(" (known fields: {})", known.join(", ")),
    };
    TypeError {
        path,
        message: format!("unknown field `{name}`{hint}"),
    }
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
