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

/// One kind: its group, the versions served, and its parser (`None`: recognised, ignored).
pub(super) struct KindEntry {
    pub(super) group: &'static str,
    pub(super) versions: &'static [&'static str],
    pub(super) kind: &'static str,
    pub(super) parse: Option<Parse>,
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
