//! Writing JSON values as block-style YAML, for people to read (`-o yaml`, install
//! manifests). Strings are quoted (as JSON strings, which YAML reads the same) whenever
//! a YAML 1.1 reader such as kubectl's might take them for something else: a number,
//! a boolean, a date, or syntax. Parsing YAML is the parent module's.

use serde_json::Value;

/// Writes `value` as one YAML document (no `---`), ending with a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Writes each value as its own document, each after a `---` line (a YAML stream, as
/// `kubectl apply -f -` reads it).
pub fn to_yaml_documents<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(value));
    }
    out
}

/// `in_list`: the line is already started by a list's `- `, so a map or list
/// written here leaves out its first line's indentation.
fn write_value(value: &Value, indent: usize, out: &mut String, in_list: bool) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (i, (k, v)) in map.iter().enumerate() {
                if !(in_list && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str(&quote(k));
                out.push(':');
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push('\n');
                        write_value(v, indent + 2, out, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        write_value(v, indent, out, false);
                    }
                    _ => {
                        out.push(' ');
                        write_value(v, indent + 2, out, false);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if !(in_list && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str("- ");
                // A non-empty map or list starts on the dash's line (`- a: 1`, `- - 1`).
                write_value(item, indent + 2, out, true);
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        Value::String(s) => {
            out.push_str(&quote(s));
            out.push('\n');
        }
        other => {
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

/// Quotes a string unless plain YAML (1.1 or 1.2) is sure to read it back as this string.
fn quote(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Digits, signs and dots start numbers, dates, sexagesimals (`1:30`) and `.inf`;
    // the rest are YAML indicators.
    let starts_plain = first.is_alphabetic() || first == '_' || first == '/' || first == '$';
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "y" | "n" | "on" | "off" | "null" | "~"
    );
    starts_plain
        && !keyword
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_back(value: Value) {
        let text = to_yaml(&value);
        let back = crate::yaml::parse(&text)
            .expect("valid yaml")
            .remove(0)
            .root
            .to_json();
        assert_eq!(back, value, "{text}");
    }

    #[test]
    fn yaml_output_reads_back_as_the_same_value() {
        reads_back(serde_json::json!([
            {"code": "IST0101", "level": "Error", "namespace": null, "line": 3, "tags": ["a", "b: c"], "empty": {}},
            {"code": "IST0102", "nested": {"x": "true", "y": [1, {"z": "1.5"}]}}
        ]));
    }

    #[test]
    fn strings_a_yaml_1_1_reader_would_retype_are_quoted() {
        let risky = [
            "Yes",
            "NO",
            "y",
            "On",
            "Null",
            "~",
            "0x1F",
            "017",
            "1:30",
            "2001-12-14",
            ".inf",
            "+1",
            "-",
            "1e3",
            "a:",
            "line\nbreak",
            "tab\there",
            " lead",
            "trail ",
            "",
            "`code`",
            "'q'",
            "\"q\"",
            "*alias",
            "&anchor",
            "!tag",
            "%dir",
            "@at",
            "key: v",
            "a #comment",
        ];
        for s in risky {
            assert!(quote(s).starts_with('"'), "{s:?} left plain");
            reads_back(serde_json::json!({ s: s }));
        }
        for s in [
            "v1",
            ".spec.hosts",
            "networking.istio.io",
            "x-kubernetes-int-or-string",
        ] {
            reads_back(serde_json::json!({ s: [s] }));
        }
        assert_eq!(quote("networking.istio.io"), "networking.istio.io");
    }

    #[test]
    fn documents_read_back_one_by_one() {
        let values = [serde_json::json!({"a": 1}), serde_json::json!(["b"])];
        let text = to_yaml_documents(&values);
        let back: Vec<Value> = crate::yaml::parse(&text)
            .expect("valid yaml")
            .into_iter()
            .map(|d| d.root.to_json())
            .collect();
        assert_eq!(back, values, "{text}");
    }

    #[test]
    fn numbers_booleans_and_multi_line_text_read_back() {
        reads_back(serde_json::json!({
            "spec": {"versions": [{"name": "v1", "served": true, "storage": false}],
                     "maximum": 4294967295_u64, "minimum": -1, "ratio": 0.5,
                     "description": "A port: number, protocol\nand name.\n"},
            "list": [[1, 2], [], {}, [{"a": {"b": []}}]],
        }));
    }
}
