//! From schemars' JSON Schema (draft 2020-12) to a Kubernetes structural schema: every
//! `$ref` inlined, `Option`'s `null` as `nullable`, documented enums (`oneOf` of
//! `const`s) as one `enum`, and only keywords the API server takes. Whatever it does not
//! know how to make structural is an error naming the field, never a guess: a new
//! type or a schemars upgrade then fails a unit test instead of an install.

use serde_json::{Map, Value, json};

/// Why a schema could not be made structural.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: `$ref` to `{target}`, which is not among the definitions")]
    MissingDefinition { path: String, target: String },
    #[error("{path}: `{target}` contains itself; a structural schema cannot say so")]
    Recursive { path: String, target: String },
    #[error("{path}: {what} has no structural form")]
    NotStructural { path: String, what: String },
    #[error("{path}: keyword `{keyword}` is not known here")]
    UnknownKeyword { path: String, keyword: String },
}

/// Keywords copied as they are (Kubernetes reads them the same way).
const KEPT: &[&str] = &[
    "description",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
];

/// Keywords dropped: annotations Kubernetes refuses or does not need (`default` would
/// be written into stored objects; `uniqueItems` is refused as quadratic).
const DROPPED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "default",
    "examples",
    "example",
    "readOnly",
    "writeOnly",
    "deprecated",
    "uniqueItems",
];

/// Converts a root schema made by schemars (its `$defs` beside it).
pub fn structural(root: &Value) -> Result<Value, SchemaError> {
    let empty = Map::new();
    let defs = root
        .get("$defs")
        .or_else(|| root.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut converter = Converter {
        defs,
        stack: Vec::new(),
    };
    converter.node(root, "spec").map(Value::Object)
}

struct Converter<'a> {
    defs: &'a Map<String, Value>,
    /// The definitions being inlined, outermost first (recursion is refused).
    stack: Vec<String>,
}

impl Converter<'_> {
    fn node(&mut self, schema: &Value, path: &str) -> Result<Map<String, Value>, SchemaError> {
        let object = match schema {
            Value::Bool(true) => return Ok(any_value()),
            Value::Object(object) => object,
            _ => return Err(not_structural(path, format!("the schema `{schema}`"))),
        };
        // The node's own keywords first: they win over what a reference or a union
        // brings (a field's description over its type's).
        let mut out = Map::new();
        for (key, value) in object {
            self.keyword(key, value, &mut out, path)?;
        }
        if let Some(target) = object.get("$ref").and_then(Value::as_str) {
            merge(&mut out, self.reference(target, path)?);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(variants)) = object.get(key) {
                let (union, notes) = self.union(object, variants, path)?;
                merge(&mut out, union);
                if !notes.is_empty() {
                    let text = out.get("description").and_then(Value::as_str);
                    let text = format!("{}{notes}", text.unwrap_or_default());
                    out.insert("description".into(), json!(text.trim()));
                }
            }
        }
        if let Some(Value::Array(parts)) = object.get("allOf") {
            match parts.as_slice() {
                [one] => merge(&mut out, self.node(one, path)?),
                _ => return Err(not_structural(path, "`allOf` of several schemas".into())),
            }
        }
        Ok(out)
    }

    /// One keyword of a schema object into `out` (references and unions are `node`'s).
    fn keyword(
        &mut self,
        key: &str,
        value: &Value,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<(), SchemaError> {
        match key {
            "$ref" | "anyOf" | "oneOf" | "allOf" => {}
            "type" => set_type(out, value, path)?,
            "const" if value.is_null() => {
                out.insert("nullable".into(), Value::Bool(true));
            }
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            "enum" => {
                let values: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| !v.is_null())
                    .cloned()
                    .collect();
                if values.len() < value.as_array().map_or(0, Vec::len) {
                    out.insert("nullable".into(), Value::Bool(true));
                }
                out.insert("enum".into(), Value::Array(values));
            }
            "format" => set_format(out, value, path)?,
            "minimum" | "maximum" => {
                out.insert(key.into(), value.clone());
            }
            // 2020-12 gives the bound; Kubernetes (draft 4) a flag beside `minimum`.
            "exclusiveMinimum" | "exclusiveMaximum" => {
                let bound = if key == "exclusiveMinimum" {
                    "minimum"
                } else {
                    "maximum"
                };
                out.insert(bound.into(), value.clone());
                out.insert(key.into(), Value::Bool(true));
            }
            "properties" => {
                let mut properties = Map::new();
                for (name, schema) in value.as_object().into_iter().flatten() {
                    let inner = self.node(schema, &format!("{path}.{name}"))?;
                    properties.insert(name.clone(), Value::Object(inner));
                }
                out.insert(key.into(), Value::Object(properties));
            }
            "additionalProperties" => match value {
                // Unknown fields are left to Trellis's webhook (see the CRD module).
                Value::Bool(false) => {}
                Value::Bool(true) => merge(out, any_value()),
                schema => {
                    let inner = self.node(schema, &format!("{path}.*"))?;
                    out.insert(key.into(), Value::Object(inner));
                }
            },
            "items" => {
                let inner = self.node(value, &format!("{path}[]"))?;
                out.insert(key.into(), Value::Object(inner));
            }
            _ if key.starts_with("x-kubernetes-") || KEPT.contains(&key) => {
                out.insert(key.into(), value.clone());
            }
            _ if DROPPED.contains(&key) => {}
            _ => {
                return Err(SchemaError::UnknownKeyword {
                    path: path.into(),
                    keyword: key.into(),
                });
            }
        }
        Ok(())
    }

    fn reference(&mut self, target: &str, path: &str) -> Result<Map<String, Value>, SchemaError> {
        let name = target
            .strip_prefix("#/$defs/")
            .or_else(|| target.strip_prefix("#/definitions/"))
            .unwrap_or(target);
        let Some(definition) = self.defs.get(name) else {
            return Err(SchemaError::MissingDefinition {
                path: path.into(),
                target: target.into(),
            });
        };
        if self.stack.iter().any(|n| n == name) {
            return Err(SchemaError::Recursive {
                path: path.into(),
                target: name.into(),
            });
        }
        self.stack.push(name.into());
        let inlined = self.node(definition, path);
        self.stack.pop();
        inlined
    }

    /// `anyOf`/`oneOf`: `Option`'s `[X, null]`, a documented enum's strings, or
    /// Kubernetes' int-or-string; nothing else is structural. Also gives the enum
    /// values' descriptions, as lines to add to the node's.
    fn union(
        &mut self,
        parent: &Map<String, Value>,
        variants: &[Value],
        path: &str,
    ) -> Result<(Map<String, Value>, String), SchemaError> {
        let is_null = |v: &&Value| {
            v.get("type") == Some(&json!("null")) || v.get("const") == Some(&Value::Null)
        };
        let nullable = variants.iter().any(|v| is_null(&v));
        let rest: Vec<&Value> = variants.iter().filter(|v| !is_null(v)).collect();
        let mut notes = String::new();
        let mut out = if parent.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            int_or_string(&rest, path)?
        } else if let [one] = rest.as_slice() {
            self.node(one, path)?
        } else if let Some(values) = string_constants(&rest) {
            for (value, about) in &values {
                if let Some(about) = about {
                    notes.push_str(&format!("\n- `{value}`: {about}"));
                }
            }
            let mut out = Map::new();
            out.insert("type".into(), json!("string"));
            let values: Vec<&String> = values.iter().map(|(value, _)| value).collect();
            out.insert("enum".into(), json!(values));
            out
        } else {
            return Err(not_structural(
                path,
                format!("a union of {} different schemas", rest.len()),
            ));
        };
        if nullable {
            out.insert("nullable".into(), Value::Bool(true));
        }
        Ok((out, notes))
    }
}

/// The variants' values and descriptions, when every variant is a string constant.
fn string_constants(variants: &[&Value]) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for variant in variants {
        let about = variant
            .get("description")
            .and_then(Value::as_str)
            .map(String::from);
        match (variant.get("const"), variant.get("enum")) {
            (Some(Value::String(s)), _) => out.push((s.clone(), about)),
            (None, Some(Value::Array(values))) => {
                for value in values {
                    out.push((value.as_str()?.to_string(), about.clone()));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The one union Kubernetes allows: `anyOf: [{type: integer}, {type: string}]`.
fn int_or_string(variants: &[&Value], path: &str) -> Result<Map<String, Value>, SchemaError> {
    let mut types: Vec<&str> = variants
        .iter()
        .filter_map(|v| v.get("type").and_then(Value::as_str))
        .collect();
    types.sort_unstable();
    if types != ["integer", "string"] || variants.len() != 2 {
        return Err(not_structural(
            path,
            "an int-or-string of other types".into(),
        ));
    }
    let mut out = Map::new();
    out.insert(
        "anyOf".into(),
        json!([{"type": "integer"}, {"type": "string"}]),
    );
    Ok(out)
}

fn set_type(out: &mut Map<String, Value>, value: &Value, path: &str) -> Result<(), SchemaError> {
    let types: Vec<&str> = match value {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let named: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    if named.len() < types.len() {
        out.insert("nullable".into(), Value::Bool(true));
    }
    match named.as_slice() {
        [] if types.is_empty() => {
            return Err(not_structural(path, format!("`type: {value}`")));
        }
        [] => {}
        [one] => {
            out.insert("type".into(), json!(one));
        }
        [a, b] if matches!((*a, *b), ("integer", "string") | ("string", "integer")) => {
            out.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
        }
        _ => return Err(not_structural(path, format!("`type: {value}`"))),
    }
    Ok(())
}

/// Kubernetes knows signed formats only; unsigned ones keep their range as bounds.
fn set_format(out: &mut Map<String, Value>, value: &Value, path: &str) -> Result<(), SchemaError> {
    let format = value.as_str().unwrap_or_default();
    let (kept, maximum) = match format {
        "int32" | "int64" | "float" | "double" | "byte" | "date" | "date-time" => (format, None),
        "int8" | "int16" => ("int32", None),
        "uint8" => ("int32", Some(u64::from(u8::MAX))),
        "uint16" => ("int32", Some(u64::from(u16::MAX))),
        "uint32" => ("int64", Some(u64::from(u32::MAX))),
        "uint64" | "uint" => ("int64", None),
        _ => return Err(not_structural(path, format!("`format: {format}`"))),
    };
    out.insert("format".into(), json!(kept));
    if let Some(maximum) = maximum {
        out.entry("maximum").or_insert(json!(maximum));
    }
    Ok(())
}

/// Merges a converted schema into `out`; `out`'s own keywords (a field's description
/// over its type's) win.
fn merge(out: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        out.entry(key).or_insert(value);
    }
}

/// Any JSON value, kept as written.
fn any_value() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "x-kubernetes-preserve-unknown-fields".into(),
        Value::Bool(true),
    );
    out
}

fn not_structural(path: &str, what: String) -> SchemaError {
    SchemaError::NotStructural {
        path: path.into(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(schema: Value) -> Value {
        structural(&schema).expect("structural")
    }

    #[test]
    fn references_are_inlined_and_option_becomes_nullable() {
        let out = convert(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Spec",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "port": {"anyOf": [{"$ref": "#/$defs/Port"}, {"type": "null"}],
                         "description": "the field's own words"},
                "name": {"type": ["string", "null"], "default": null},
            },
            "$defs": {"Port": {"type": "object", "description": "the type's words",
                               "properties": {"number": {"type": "integer", "format": "uint32", "minimum": 0}}}}
        }));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "port": {"type": "object", "nullable": true, "description": "the field's own words",
                             "properties": {"number": {"type": "integer", "format": "int64",
                                                       "minimum": 0, "maximum": 4294967295_u64}}},
                    "name": {"type": "string", "nullable": true},
                }
            })
        );
    }

    #[test]
    fn documented_enums_become_one_string_enum() {
        let out = convert(json!({
            "description": "Mode.",
            "oneOf": [
                {"type": "string", "const": "A", "description": "first"},
                {"type": "string", "enum": ["B", "C"]},
            ]
        }));
        assert_eq!(
            out,
            json!({"type": "string", "enum": ["A", "B", "C"], "description": "Mode.\n- `A`: first"})
        );
    }

    #[test]
    fn maps_keep_their_value_schema_and_int_or_string_its_marker() {
        let out = convert(json!({
            "type": "object",
            "additionalProperties": {"type": "string"},
            "properties": {"target": {"x-kubernetes-int-or-string": true,
                                      "anyOf": [{"type": "integer"}, {"type": "string"}]}}
        }));
        assert_eq!(out["additionalProperties"], json!({"type": "string"}));
        assert_eq!(
            out["properties"]["target"],
            json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
        );
    }

    #[test]
    fn what_has_no_structural_form_is_an_error_naming_the_field() {
        let union =
            json!({"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "object"}]}}});
        let err = structural(&union).expect_err("a real union");
        assert_eq!(
            err.to_string(),
            "spec.x: a union of 2 different schemas has no structural form"
        );
        let recursive = json!({"$ref": "#/$defs/A", "$defs": {"A": {"type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}}}}});
        assert!(matches!(
            structural(&recursive),
            Err(SchemaError::Recursive { .. })
        ));
        let unknown = json!({"type": "string", "contentEncoding": "base64"});
        assert!(matches!(
            structural(&unknown),
            Err(SchemaError::UnknownKeyword { .. })
        ));
    }
}
