//! The kind registry: which `(group, kind)` Trellis types, at which versions, and how
//! each document's JSON becomes its typed [`Spec`]. Istio kinds read `spec` strictly;
//! Kubernetes kinds read the whole object leniently. Kinds listed without a parser are
//! recognised but ignored; anything else is unknown. Loading itself is `load.rs`'s.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::Spec;
use super::diagnostic::{TypeError, typed, unknown_field_error};
use crate::{kube, networking, security, telemetry};

type Parse = fn(&serde_json::Value) -> Result<Spec, TypeError>;

/// Makes the JSON schema of an Istio kind's `spec` (for its CustomResourceDefinition).
#[cfg(feature = "schema")]
type SchemaOf = fn(schemars::SchemaGenerator) -> schemars::Schema;

/// One kind: its group, the versions served, and its parser (`None`: recognised, ignored).
pub(super) struct KindEntry {
    pub(super) group: &'static str,
    pub(super) versions: &'static [&'static str],
    pub(super) kind: &'static str,
    pub(super) parse: Option<Parse>,
    /// Istio kinds Trellis types: their `spec`'s schema.
    #[cfg(feature = "schema")]
    schema: Option<SchemaOf>,
}

const NETWORKING: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SECURITY: &[&str] = &["v1beta1", "v1"];
const TELEMETRY: &[&str] = &["v1alpha1", "v1"];

macro_rules! istio_kind {
    ($group:expr, $versions:expr, $kind:ident, $module:ident) => {
        KindEntry {
            group: $group,
            versions: $versions,
            kind: stringify!($kind),
            parse: Some(|v| istio_spec::<$module::$kind>(v).map(|s| Spec::$kind(Arc::new(s)))),
            #[cfg(feature = "schema")]
            schema: Some(|g| g.into_root_schema_for::<$module::$kind>()),
        }
    };
}

macro_rules! kube_kind {
    ($group:expr, $kind:ident) => {
        KindEntry {
            group: $group,
            versions: &["v1"],
            kind: stringify!($kind),
            parse: Some(|v| kube_object::<kube::$kind>(v).map(|s| Spec::$kind(Arc::new(s)))),
            #[cfg(feature = "schema")]
            schema: None,
        }
    };
}

const fn ignored(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
) -> KindEntry {
    KindEntry {
        group,
        versions,
        kind,
        parse: None,
        #[cfg(feature = "schema")]
        schema: None,
    }
}

static KINDS: &[KindEntry] = &[
    istio_kind!("networking.istio.io", NETWORKING, Gateway, networking),
    istio_kind!(
        "networking.istio.io",
        NETWORKING,
        VirtualService,
        networking
    ),
    istio_kind!(
        "networking.istio.io",
        NETWORKING,
        DestinationRule,
        networking
    ),
    istio_kind!("networking.istio.io", NETWORKING, ServiceEntry, networking),
    istio_kind!("networking.istio.io", NETWORKING, WorkloadEntry, networking),
    istio_kind!("networking.istio.io", NETWORKING, Sidecar, networking),
    istio_kind!("security.istio.io", SECURITY, PeerAuthentication, security),
    istio_kind!("security.istio.io", SECURITY, AuthorizationPolicy, security),
    istio_kind!(
        "security.istio.io",
        SECURITY,
        RequestAuthentication,
        security
    ),
    istio_kind!("telemetry.istio.io", TELEMETRY, Telemetry, telemetry),
    kube_kind!("", Namespace),
    kube_kind!("", Service),
    kube_kind!("", Pod),
    kube_kind!("", ServiceAccount),
    kube_kind!("", Secret),
    kube_kind!("apps", Deployment),
    kube_kind!("discovery.k8s.io", EndpointSlice),
    ignored("networking.istio.io", &["v1alpha3"], "EnvoyFilter"),
    ignored("networking.istio.io", NETWORKING, "WorkloadGroup"),
    ignored("networking.istio.io", &["v1beta1"], "ProxyConfig"),
    ignored("extensions.istio.io", &["v1alpha1"], "WasmPlugin"),
];

/// The kinds Trellis types, as `(group, kind)`.
pub fn known_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS
        .iter()
        .filter(|k| k.parse.is_some())
        .map(|k| (k.group, k.kind))
}

/// An Istio kind Trellis types: what cluster mode installs a CustomResourceDefinition for.
#[derive(Clone, Copy)]
pub struct IstioKind {
    entry: &'static KindEntry,
}

impl IstioKind {
    /// `networking.istio.io`, ...
    pub fn group(&self) -> &'static str {
        self.entry.group
    }

    /// `VirtualService`, ...
    pub fn kind(&self) -> &'static str {
        self.entry.kind
    }

    /// The versions Istio serves it in, oldest first (`v1` last).
    pub fn versions(&self) -> &'static [&'static str] {
        self.entry.versions
    }

    /// The JSON schema (as schemars makes it, with the generator's settings) of the
    /// `spec` Trellis reads: the same for every version, as in Istio.
    #[cfg(feature = "schema")]
    pub fn spec_schema(&self, generator: schemars::SchemaGenerator) -> schemars::Schema {
        let of = self
            .entry
            .schema
            .expect("istio_kinds() yields only entries with a schema");
        of(generator)
    }
}

impl std::fmt::Debug for IstioKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entry.group, self.entry.kind)
    }
}

/// The Istio kinds Trellis types, in the registry's order.
pub fn istio_kinds() -> impl Iterator<Item = IstioKind> {
    KINDS
        .iter()
        .filter(|k| k.parse.is_some() && k.group.ends_with(".istio.io"))
        .map(|entry| IstioKind { entry })
}

/// The registry entry for `kind` in `group`, at any version.
pub(super) fn lookup(group: &str, kind: &str) -> Option<&'static KindEntry> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// Every kind of `group`, typed or not (for suggestions).
pub(super) fn kinds_in_group(group: &str) -> impl Iterator<Item = &'static str> {
    KINDS
        .iter()
        .filter(move |k| k.group == group)
        .map(|k| k.kind)
}

fn istio_spec<T: DeserializeOwned>(object: &serde_json::Value) -> Result<T, TypeError> {
    if let Some(map) = object.as_object() {
        for key in map.keys() {
            if !matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            ) {
                return Err(unknown_field_error(
                    key,
                    key,
                    &["apiVersion", "kind", "metadata", "spec", "status"],
                ));
            }
        }
    }
    let mut spec = match object.get("spec") {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(s) => s.clone(),
    };
    drop_nulls(&mut spec);
    typed(&spec, "spec")
}

/// Kubernetes prunes `field: null` from custom resources before storing them, so
/// Istio never sees such fields; they are dropped here too.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                // `[2001:db8::]` reads as `{"2001:db8:": null}`; kept whole so that
                // address lists can read it back as text.
                let lone_key = item
                    .as_object()
                    .is_some_and(|m| m.len() == 1 && m.values().all(serde_json::Value::is_null));
                if !lone_key {
                    drop_nulls(item);
                }
            }
        }
        _ => {}
    }
}

fn kube_object<T: DeserializeOwned>(object: &serde_json::Value) -> Result<T, TypeError> {
    typed(object, "")
}

#[cfg(all(test, feature = "schema"))]
mod tests {
    use super::*;

    #[test]
    fn every_istio_kind_has_a_spec_schema_with_its_fields() {
        let kinds: Vec<_> = istio_kinds().map(|k| k.kind()).collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        for kind in istio_kinds() {
            let schema = kind.spec_schema(schemars::SchemaGenerator::default());
            let json = serde_json::to_value(&schema).expect("a schema is JSON");
            if std::env::var_os("TRELLIS_PRINT_SCHEMA").is_some() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                );
            }
            assert!(json["properties"].is_object(), "{kind:?}: {json}");
        }
    }
}
