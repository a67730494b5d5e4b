//! Terminal output: colours that switch off when not a TTY (or with NO_COLOR),
//! and a small YAML writer for `-o yaml`.

use anstyle::{AnsiColor, Style};

pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
pub const INFO: Style = AnsiColor::Cyan.on_default();
pub const OK: Style = AnsiColor::Green.on_default().bold();

/// `-o` formats for data output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// Writes JSON as block-style YAML.
pub fn to_yaml(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn write_yaml(value: &serde_json::Value, indent: usize, out: &mut String, in_list: bool) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match value {
        J::Object(map) if !map.is_empty() => {
            for (i, (k, v)) in map.iter().enumerate() {
                if !(in_list && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str(&scalar_key(k));
                out.push(':');
                match v {
                    J::Object(m) if !m.is_empty() => {
                        out.push('\n');
                        write_yaml(v, indent + 2, out, false);
                    }
                    J::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        write_yaml(v, indent, out, false);
                    }
                    _ => {
                        out.push(' ');
                        write_yaml(v, indent + 2, out, false);
                    }
                }
            }
        }
        J::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    J::Object(m) if !m.is_empty() => write_yaml(item, indent + 2, out, true),
                    _ => write_yaml(item, indent + 2, out, false),
                }
            }
        }
        J::Object(_) => out.push_str("{}\n"),
        J::Array(_) => out.push_str("[]\n"),
        J::String(s) => {
            out.push_str(&quote(s));
            out.push('\n');
        }
        other => {
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

fn scalar_key(k: &str) -> String {
    quote(k)
}

/// Quotes a string when plain YAML would read it as something else.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with([
            ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"',
            '%', '@', '`',
        ])
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains('\n')
        && !matches!(
            s,
            "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_output_reads_back_as_the_same_value() {
        let value = serde_json::json!([
            {"code": "IST0101", "level": "Error", "namespace": null, "line": 3, "tags": ["a", "b: c"], "empty": {}},
            {"code": "IST0102", "nested": {"x": "true", "y": [1, {"z": "1.5"}]}}
        ]);
        let text = to_yaml(&value);
        let back = trellis_api::yaml::parse(&text)
            .expect("valid yaml")
            .remove(0)
            .root
            .to_json();
        assert_eq!(back, value, "{text}");
    }
}
