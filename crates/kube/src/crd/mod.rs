//! CustomResourceDefinitions for the Istio kinds Trellis carries out, made from crates/api's
//! types (not copied from Istio): Istio's group, names and columns (`names.rs`), every
//! version Istio serves (v1 stored), and a structural schema of what Trellis reads
//! (`schema.rs` converts schemars' output). So `kubectl apply` of Istio YAML just works.
//!
//! Unknown fields are kept ON PURPOSE. Every object under `spec` lists its typed fields
//! *and* says `x-kubernetes-preserve-unknown-fields: true` (the flag is not inherited by
//! nested objects, so each carries it). A misspelt `wieght` is then neither pruned by the
//! API server nor refused by kubectl's strict field validation: it reaches Trellis's
//! validating webhook, which refuses it with Trellis's own message ("did you mean
//! `weight`"), as `trellis validate` does. `status` is any object (Trellis writes it).

mod names;
mod schema;

use serde_json::{Value, json};
use trellis_api::resource::{IstioKind, istio_kinds};

pub use schema::{SchemaError, structural};

/// The one version stored; the others are served from it (one schema for all, as in Istio).
pub const STORAGE_VERSION: &str = "v1";

/// Why a kind's CustomResourceDefinition could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("{kind}: {source}")]
    Schema {
        kind: &'static str,
        #[source]
        source: SchemaError,
    },
    #[error("{0} has no names (plural, short names) in crd/names.rs")]
    Unnamed(&'static str),
}

/// The CustomResourceDefinitions of every Istio kind Trellis types, in the registry's
/// order, as JSON (k8s-openapi's `CustomResourceDefinition` reads them; its numbers are
/// all floats, so JSON prints better).
pub fn definitions() -> Result<Vec<Value>, CrdError> {
    istio_kinds().map(definition).collect()
}

/// The CustomResourceDefinition of one kind.
pub fn definition(kind: IstioKind) -> Result<Value, CrdError> {
    let names = names::of(kind.kind()).ok_or(CrdError::Unnamed(kind.kind()))?;
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": spec_schema(kind)?,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    });
    let columns: Vec<Value> = names
        .columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "jsonPath": c.json_path, "type": c.type_,
                   "description": c.description})
        })
        .collect();
    let versions: Vec<Value> = kind
        .versions()
        .iter()
        .map(|version| {
            let mut v = json!({
                "name": version,
                "served": true,
                "storage": *version == STORAGE_VERSION,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
            });
            if !columns.is_empty() {
                v["additionalPrinterColumns"] = json!(columns);
            }
            v
        })
        .collect();
    let group = kind.group();
    let mut crd_names = json!({
        "kind": kind.kind(),
        "listKind": format!("{}List", kind.kind()),
        "plural": names.plural,
        "singular": names.singular(),
        "categories": ["istio-io", group.replace('.', "-")],
    });
    if !names.short_names.is_empty() {
        crd_names["shortNames"] = json!(names.short_names);
    }
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{group}", names.plural),
            "labels": {"app.kubernetes.io/part-of": "trellis"},
        },
        "spec": {
            "group": group,
            "names": crd_names,
            "scope": "Namespaced",
            "versions": versions,
        },
    }))
}

/// The structural schema of a kind's `spec`, keeping unknown fields at every level.
pub fn spec_schema(kind: IstioKind) -> Result<Value, CrdError> {
    let generated = kind.spec_schema(schemars::SchemaGenerator::default());
    let mut spec = structural(generated.as_value()).map_err(|source| CrdError::Schema {
        kind: kind.kind(),
        source,
    })?;
    keep_unknown_fields(&mut spec);
    Ok(spec)
}

/// Marks every object that is not a map as keeping unknown fields (see the module's
/// comment for why); maps already take any key.
fn keep_unknown_fields(node: &mut Value) {
    let Some(object) = node.as_object_mut() else {
        return;
    };
    if object.get("type") == Some(&json!("object")) && !object.contains_key("additionalProperties")
    {
        object.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(keep_unknown_fields);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner) = object.get_mut(key) {
            keep_unknown_fields(inner);
        }
    }
}

#[cfg(test)]
mod tests;
