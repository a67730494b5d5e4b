//! The definitions against Kubernetes' rules for structural schemas (a checker that
//! walks them), and against Istio's own CustomResourceDefinitions where that file is
//! present: the same names, versions and columns, and no field typed differently.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::*;

fn all() -> Vec<Value> {
    definitions().expect("every kind has a definition")
}

fn name_of(crd: &Value) -> &str {
    crd["metadata"]["name"].as_str().unwrap_or_default()
}

/// Keywords the API server takes in a structural schema (its JSONSchemaProps, less
/// `$ref`, `$schema`, `id`, `definitions`, `dependencies`, `patternProperties`,
/// `additionalItems`, `uniqueItems`, which it refuses there).
const ALLOWED: &[&str] = &[
    "description",
    "type",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "enum",
    "nullable",
    "properties",
    "additionalProperties",
    "items",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];
const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];
const FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
];
/// What a subschema of a logical junctor may not say (Kubernetes' rule 3).
const NOT_IN_JUNCTORS: &[&str] = &[
    "description",
    "type",
    "default",
    "additionalProperties",
    "nullable",
];

/// Every way `node` (at `path`) is not a structural schema.
fn structural_problems(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        out.push(format!("{path}: not a schema object"));
        return;
    };
    let flag = |key: &str| object.get(key) == Some(&Value::Bool(true));
    for key in object.keys() {
        if !ALLOWED.contains(&key.as_str()) {
            out.push(format!("{path}: keyword `{key}`"));
        }
    }
    let ty = object.get("type").and_then(Value::as_str);
    match object.get("type") {
        Some(Value::String(t)) if !TYPES.contains(&t.as_str()) => {
            out.push(format!("{path}: type `{t}`"));
        }
        Some(Value::String(_)) => {}
        Some(other) => out.push(format!("{path}: type `{other}`")),
        None if !flag("x-kubernetes-int-or-string")
            && !flag("x-kubernetes-preserve-unknown-fields") =>
        {
            out.push(format!("{path}: no type"));
        }
        None => {}
    }
    if ty == Some("array") && !object.contains_key("items") {
        out.push(format!("{path}: an array without items"));
    }
    if let Some(f) = object.get("format").and_then(Value::as_str)
        && !FORMATS.contains(&f)
    {
        out.push(format!("{path}: format `{f}`"));
    }
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if object.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!("{path}: additionalProperties: false"));
    }
    if let Some(values) = object.get("enum").and_then(Value::as_array) {
        let fits = |v: &Value| match ty {
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            _ => true,
        };
        if !values.iter().all(fits) {
            out.push(format!("{path}: enum values not of type {ty:?}"));
        }
    }
    for junctor in ["anyOf", "oneOf", "allOf"] {
        for sub in object
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            junctor_problems(object, sub, &format!("{path}.{junctor}"), out);
        }
    }
    if let Some(sub) = object.get("not") {
        junctor_problems(object, sub, &format!("{path}.not"), out);
    }
    for (name, sub) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        structural_problems(sub, &format!("{path}.{name}"), out);
    }
    if let Some(items) = object.get("items") {
        structural_problems(items, &format!("{path}[]"), out);
    }
    if let Some(values @ Value::Object(_)) = object.get("additionalProperties") {
        structural_problems(values, &format!("{path}.*"), out);
    }
}

/// Rules 2 and 3 for one subschema of `anyOf`/`oneOf`/`allOf`/`not`, with the one
/// exception Kubernetes makes: int-or-string's `anyOf: [{type: integer}, {type: string}]`.
fn junctor_problems(
    parent: &serde_json::Map<String, Value>,
    sub: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let int_or_string = parent.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let typed_alone = sub.as_object().is_some_and(|s| s.len() == 1)
        && matches!(
            sub.get("type").and_then(Value::as_str),
            Some("integer" | "string")
        );
    if int_or_string && typed_alone {
        return;
    }
    for key in NOT_IN_JUNCTORS {
        if sub.get(key).is_some() {
            out.push(format!("{path}: `{key}` inside a junctor"));
        }
    }
    for name in sub
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, _)| name)
    {
        if parent.get("properties").and_then(|p| p.get(name)).is_none() {
            out.push(format!("{path}: property `{name}` not declared outside"));
        }
    }
    if sub.get("items").is_some() && !parent.contains_key("items") {
        out.push(format!("{path}: items not declared outside"));
    }
}

fn problems_of(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    structural_problems(schema, "", &mut out);
    if let Some(meta) = schema.pointer("/properties/metadata/properties") {
        let keys: Vec<&String> = meta
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        if keys.iter().any(|k| *k != "name" && *k != "generateName") {
            out.push(format!("metadata: fields {keys:?} specified"));
        }
    }
    out
}

#[test]
fn every_definition_has_a_structural_schema() {
    let crds = all();
    assert_eq!(crds.len(), 10);
    for crd in &crds {
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            let problems = problems_of(schema);
            assert!(problems.is_empty(), "{}: {problems:#?}", name_of(crd));
            assert!(!schema.to_string().contains("$ref"));
        }
    }
}

/// Kubernetes' own type reads each definition whole: every field known, none lost.
#[test]
fn every_definition_reads_as_kubernetes_type() {
    /// k8s-openapi's numbers are floats.
    fn floats(value: &mut Value) {
        match value {
            Value::Number(n) => *value = json!(n.as_f64()),
            Value::Array(items) => items.iter_mut().for_each(floats),
            Value::Object(map) => map.values_mut().for_each(floats),
            _ => {}
        }
    }
    for mut crd in all() {
        let typed: CustomResourceDefinition =
            serde_json::from_value(crd.clone()).expect("a CustomResourceDefinition");
        let mut back = serde_json::to_value(typed).expect("JSON");
        floats(&mut crd);
        floats(&mut back);
        assert_eq!(back, crd);
    }
}

#[test]
fn the_checker_refuses_what_the_api_server_refuses() {
    let bad = json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/A"},
            "b": {"type": ["string", "null"]},
            "c": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "d": {"type": "array"},
            "e": {"type": "object", "properties": {}, "additionalProperties": false},
            "f": {"type": "integer", "format": "uint32"},
            "g": {"type": "string", "const": "x"},
        },
    });
    let problems = problems_of(&bad);
    for expected in [
        ".a: keyword `$ref`",
        ".a: no type",
        ".b: type `[\"string\",\"null\"]`",
        ".c: no type",
        ".c.anyOf: `type` inside a junctor",
        ".d: an array without items",
        ".e: both properties and additionalProperties",
        ".f: format `uint32`",
        ".g: keyword `const`",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected} not in {problems:#?}"
        );
    }
}

#[test]
fn every_version_is_served_and_v1_alone_is_stored() {
    for crd in all() {
        let versions = crd["spec"]["versions"]
            .as_array()
            .expect("versions")
            .clone();
        assert!(versions.iter().all(|v| v["served"] == json!(true)));
        let stored: Vec<&Value> = versions
            .iter()
            .filter(|v| v["storage"] == json!(true))
            .collect();
        assert_eq!(stored.len(), 1, "{}", name_of(&crd));
        assert_eq!(stored[0]["name"], json!("v1"));
        assert_eq!(versions[0]["subresources"], json!({"status": {}}));
    }
}

#[test]
fn unknown_fields_reach_the_webhook_at_every_level() {
    let crds = all();
    let vs = crds
        .iter()
        .find(|c| name_of(c) == "virtualservices.networking.istio.io")
        .expect("VirtualService");
    let spec = &vs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let destination = &spec["properties"]["http"]["items"]["properties"]["route"]["items"];
    for node in [spec, destination, &destination["properties"]["destination"]] {
        assert_eq!(
            node["x-kubernetes-preserve-unknown-fields"],
            json!(true),
            "{node}"
        );
    }
    assert_eq!(
        destination["properties"]["weight"]["type"],
        json!("integer")
    );
    let headers = &spec["properties"]["http"]["items"]["properties"]["headers"];
    let set = &headers["properties"]["request"]["properties"]["set"];
    assert_eq!(set["additionalProperties"], json!({"type": "string"}));
    assert!(set.get("x-kubernetes-preserve-unknown-fields").is_none());
}

/// Client-side `kubectl apply` keeps the whole object in an annotation, and
/// annotations are limited to 256 KiB together.
#[test]
fn each_definition_fits_a_client_side_apply() {
    for crd in all() {
        let size = crd.to_string().len();
        assert!(size < 200 * 1024, "{}: {size} bytes", name_of(&crd));
    }
}

/// Istio's CustomResourceDefinitions, read (never copied) from the corpus.
fn istio_definitions(test: &str) -> Option<Vec<Value>> {
    let Some(path) = crate::testing::corpus::istio_crd_file() else {
        eprintln!(
            "skipped {test}: Istio's crd-all.gen.yaml is not in the corpus (../shared/corpus/istio/crds)"
        );
        return None;
    };
    let text = std::fs::read_to_string(&path).expect("Istio's CRD file reads");
    let documents = trellis_api::yaml::parse(&text).expect("Istio's CRD file is YAML");
    Some(documents.into_iter().map(|d| d.root.to_json()).collect())
}

#[test]
fn names_versions_and_columns_match_istios_definitions() {
    let Some(istio) = istio_definitions("names_versions_and_columns_match_istios_definitions")
    else {
        return;
    };
    for ours in all() {
        let theirs = istio
            .iter()
            .find(|c| name_of(c) == name_of(&ours))
            .unwrap_or_else(|| panic!("{} is not in Istio's file", name_of(&ours)));
        for field in ["group", "scope"] {
            assert_eq!(
                ours["spec"][field],
                theirs["spec"][field],
                "{}",
                name_of(&ours)
            );
        }
        assert_eq!(
            ours["spec"]["names"],
            theirs["spec"]["names"],
            "{}",
            name_of(&ours)
        );
        assert_eq!(versions(&ours), versions(theirs), "{}", name_of(&ours));
    }
}

/// A definition's versions by name: whether served, and the columns' names, paths, types.
fn versions(crd: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let columns: Vec<Value> = v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!([c["name"], c["jsonPath"], c["type"]]))
                .collect();
            json!({"name": v["name"], "served": v["served"], "columns": columns})
        })
        .collect();
    out.sort_by_key(|v| v["name"].to_string());
    out
}

/// Where both schemas type a field, the types agree, so YAML that Istio's API server
/// takes is taken here too (fields only Istio types are kept and left to the webhook).
#[test]
fn no_field_is_typed_differently_from_istio() {
    let Some(istio) = istio_definitions("no_field_is_typed_differently_from_istio") else {
        return;
    };
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for ours in all() {
        let Some(theirs) = istio.iter().find(|c| name_of(c) == name_of(&ours)) else {
            continue;
        };
        let spec = |crd: &Value| {
            crd["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == json!("v1"))
                .map(|v| v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone())
                .unwrap_or_default()
        };
        compared += compare(&spec(&ours), &spec(theirs), name_of(&ours), &mut mismatches);
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(compared > 300, "only {compared} fields compared");
}

/// Compares the fields both type, below and at this one; says how many.
fn compare(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<String>) -> usize {
    let kind = |s: &Value| {
        if s["x-kubernetes-int-or-string"] == json!(true) {
            Some("int-or-string".to_string())
        } else {
            s["type"].as_str().map(String::from)
        }
    };
    if let (Some(a), Some(b)) = (kind(ours), kind(theirs))
        && a != b
    {
        out.push(format!("{path}: ours {a}, Istio's {b}"));
        return 1;
    }
    let mut compared = 1;
    if let (Some(a), Some(b)) = (
        ours["properties"].as_object(),
        theirs["properties"].as_object(),
    ) {
        for (name, sub) in a {
            if let Some(other) = b.get(name) {
                compared += compare(sub, other, &format!("{path}.{name}"), out);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if ours[key].is_object() && theirs[key].is_object() {
            compared += compare(&ours[key], &theirs[key], &format!("{path}.{key}"), out);
        }
    }
    compared
}
