//! Reading fields of [`Resource::raw`](trellis_api::Resource::raw), the document as
//! written: text, lists, `key: value` maps and port numbers, with absent or mistyped
//! fields read as empty. Analyzers read raw JSON so that they also work on kinds
//! Trellis does not type, and keep working while the typed specs change.

use std::collections::BTreeMap;

use serde_json::Value;

/// The text of `v`, or `""` when it is absent or not text.
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The items of `v`, or none when it is absent or not a list.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The texts of a list of strings (other items are skipped).
pub fn texts(v: &Value) -> Vec<String> {
    items(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// The text of a scalar as Kubernetes reads label and annotation values: an unquoted
/// `true` or `8080` in YAML still means the text.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A mapping of scalars (`labels:`, `selector:`, `matchLabels:`) as text; other values
/// are skipped, and anything but a mapping reads as empty.
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
        .collect()
}

/// A port-like number (`number: 80`, or `"80"`), 0 when absent or not a number.
pub fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unquoted_scalars_read_as_text() {
        let m = string_map(&json!({"a": true, "b": 3, "c": "x", "d": null, "e": [1]}));
        let want: BTreeMap<String, String> = [("a", "true"), ("b", "3"), ("c", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(m, want);
        assert!(string_map(&json!("not a map")).is_empty());
    }

    #[test]
    fn absent_or_mistyped_fields_read_as_empty() {
        let v = json!({"s": "x", "n": 8080, "q": " 80 ", "l": ["a", 1, "b"]});
        assert_eq!(text(&v["s"]), "x");
        assert_eq!(text(&v["n"]), "");
        assert_eq!(number(&v["n"]), 8080);
        assert_eq!(number(&v["q"]), 80);
        assert_eq!(number(&v["s"]), 0);
        assert_eq!(texts(&v["l"]), ["a", "b"]);
        assert!(items(&v["missing"]).is_empty());
    }
}
