//! What the cluster source watches, and how one API object becomes a store
//! [`Resource`]: the fields the API server keeps for itself (managedFields,
//! resourceVersion, the last-applied annotation, an Istio resource's status) are
//! dropped, so an object that changed only there is the same resource and pushes
//! nothing; a Pod keeps its address only while it is Running, Ready and not going away.
//! `trellis analyze` loads objects through the same code with [`Reader::Analysis`],
//! which keeps what the analyzers read and validates nothing.

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Map, Value};
use trellis_api::Resource;

/// One watched kind.
#[derive(Debug, Clone)]
pub struct WatchedKind {
    pub resource: ApiResource,
    /// Istio's kinds live in CRDs, which a cluster may not have (yet).
    pub custom: bool,
    /// Only objects with these labels (a label selector), when set.
    pub labels: Option<&'static str>,
}

fn kind(group: &str, version: &str, kind: &str, plural: &str, custom: bool) -> WatchedKind {
    WatchedKind {
        resource: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, kind),
            plural,
        ),
        custom,
        labels: None,
    }
}

/// EndpointSlices not made by Kubernetes from a Service's selector.
const HAND_WRITTEN_SLICES: &str =
    "endpointslice.kubernetes.io/managed-by!=endpointslice-controller.k8s.io";

/// Every kind the control plane reads from a cluster (Secrets are watched one by
/// one, only those gateways name: see `secrets.rs`).
pub fn watched() -> Vec<WatchedKind> {
    let net = "networking.istio.io";
    let sec = "security.istio.io";
    vec![
        kind("", "v1", "Namespace", "namespaces", false),
        kind("", "v1", "Service", "services", false),
        kind("", "v1", "Pod", "pods", false),
        kind("", "v1", "ServiceAccount", "serviceaccounts", false),
        // Only slices written by hand or by another controller: those Kubernetes makes
        // from a selector list the Pods the mesh already reads, labels and all.
        WatchedKind {
            labels: Some(HAND_WRITTEN_SLICES),
            ..kind(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                false,
            )
        },
        kind(net, "v1", "Gateway", "gateways", true),
        kind(net, "v1", "VirtualService", "virtualservices", true),
        kind(net, "v1", "DestinationRule", "destinationrules", true),
        kind(net, "v1", "ServiceEntry", "serviceentries", true),
        kind(net, "v1", "WorkloadEntry", "workloadentries", true),
        kind(net, "v1", "Sidecar", "sidecars", true),
        kind(sec, "v1", "PeerAuthentication", "peerauthentications", true),
        kind(
            sec,
            "v1",
            "AuthorizationPolicy",
            "authorizationpolicies",
            true,
        ),
        kind(
            sec,
            "v1",
            "RequestAuthentication",
            "requestauthentications",
            true,
        ),
        kind("telemetry.istio.io", "v1", "Telemetry", "telemetries", true),
    ]
}

/// Why an object was left out of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// It does not pass validation (the webhook refuses such objects; one can still
    /// be there from before the webhook, or from a time it was down).
    #[error("{0}")]
    Invalid(String),
}

/// Who reads an object, which decides what of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The control plane's store: what the mesh runs on (a Pod trimmed to its
    /// labels, containers and ready address; no status of Istio's kinds), so that a
    /// change elsewhere in the object is no change.
    Mesh,
    /// `trellis analyze`: the object as the API server holds it, status included (the
    /// analyzers read conditions, a Pod's node, its annotations and images), less
    /// the bookkeeping the API server keeps for itself. Read once, never compared.
    Analysis,
}

/// The object as the store keeps it, or why it is left out.
pub fn to_resource(kind: &WatchedKind, object: DynamicObject) -> Result<Resource, Skipped> {
    let loaded = load_object(kind, object, Reader::Mesh).map_err(Skipped::Invalid)?;
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == trellis_api::Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(Skipped::Invalid(errors.join("; ")));
    }
    let resources = trellis_control::source::validated(loaded).map_err(|problems| {
        Skipped::Invalid(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    resources
        .into_iter()
        .next()
        .map(trellis_control::source::slim)
        .ok_or_else(|| Skipped::Invalid("no resource in the object".into()))
}

/// The object loaded as a file holding it would be, named `cluster:PLURAL/NS/NAME` in
/// place of a file, with what `reader` does not need left out. Not validated: the
/// loader's diagnostics (a misspelt field, a wrong type) are in the answer; an
/// object that is not even JSON is the error.
pub fn load_object(
    kind: &WatchedKind,
    object: DynamicObject,
    reader: Reader,
) -> Result<trellis_api::Loaded, String> {
    let mut value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    let Some(map) = value.as_object_mut() else {
        return Err("not an object".into());
    };
    map.insert(
        "apiVersion".into(),
        Value::String(kind.resource.api_version.clone()),
    );
    map.insert("kind".into(), Value::String(kind.resource.kind.clone()));
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        slim_metadata(meta);
    }
    if reader == Reader::Mesh {
        slim_for_mesh(kind, map);
    }
    let name = source_name(kind, map);
    let mut loaded = trellis_api::load_str(&name, &value.to_string());
    if reader == Reader::Analysis {
        // Not from a file: no line to point at (see `trellis_api::Source`).
        loaded.resources = loaded
            .resources
            .into_iter()
            .map(|mut r| {
                r.source.line = 0;
                trellis_control::source::slim(r)
            })
            .collect();
        for d in &mut loaded.diagnostics {
            d.line = 0;
        }
    }
    Ok(loaded)
}

fn slim_for_mesh(kind: &WatchedKind, map: &mut Map<String, Value>) {
    if kind.custom {
        // Written by the control plane itself (analysis messages): not config.
        map.remove("status");
    }
    match kind.resource.kind.as_str() {
        "Pod" => slim_pod(map),
        "Namespace" => {
            map.remove("spec");
            map.remove("status");
        }
        "Service" => {
            map.remove("status");
        }
        "EndpointSlice" => slim_endpoint_slice(map),
        _ => {}
    }
}

/// How diagnostics name an object from the cluster (in place of a file).
fn source_name(kind: &WatchedKind, map: &Map<String, Value>) -> String {
    let meta = map.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (namespace, name) = (field("namespace"), field("name"));
    if namespace.is_empty() {
        format!("cluster:{}/{name}", kind.resource.plural)
    } else {
        format!("cluster:{}/{namespace}/{name}", kind.resource.plural)
    }
}

fn slim_metadata(meta: &mut Map<String, Value>) {
    for key in [
        "managedFields",
        "resourceVersion",
        "selfLink",
        "generation",
        "uid",
        "generateName",
    ] {
        meta.remove(key);
    }
    if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// An EndpointSlice as the mesh reads it: its ready addresses and its ports, so a
/// change of node, zone or hints, or of an endpoint that is not ready, is no change.
fn slim_endpoint_slice(map: &mut Map<String, Value>) {
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        meta.remove("ownerReferences");
    }
    if let Some(Value::Array(endpoints)) = map.get_mut("endpoints") {
        endpoints.retain(|e| {
            e.pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        });
        for e in endpoints.iter_mut().filter_map(Value::as_object_mut) {
            e.retain(|k, _| k == "addresses");
        }
    }
}

/// A Pod as the mesh reads it: labels, containers' names, images and ports, its
/// service account; its IP only while it can take traffic (as an EndpointSlice
/// lists it ready).
fn slim_pod(map: &mut Map<String, Value>) {
    let ready = pod_ready(map);
    if let Some(Value::Object(spec)) = map.get_mut("spec") {
        spec.retain(|k, _| {
            matches!(
                k.as_str(),
                "containers"
                    | "initContainers"
                    | "serviceAccountName"
                    | "serviceAccount"
                    | "hostNetwork"
                    | "securityContext"
            )
        });
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(containers)) = spec.get_mut(list) {
                for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                    c.retain(|k, _| {
                        matches!(
                            k.as_str(),
                            "name" | "image" | "ports" | "args" | "securityContext"
                        )
                    });
                }
            }
        }
    }
    let status = map.get("status").and_then(Value::as_object).map(|s| {
        let mut kept = Map::new();
        if ready {
            for key in ["podIP", "podIPs"] {
                if let Some(v) = s.get(key) {
                    kept.insert(key.into(), v.clone());
                }
            }
        }
        if let Some(phase) = s.get("phase") {
            kept.insert("phase".into(), phase.clone());
        }
        Value::Object(kept)
    });
    match status {
        Some(status) => {
            map.insert("status".into(), status);
        }
        None => {
            map.remove("status");
        }
    }
}

/// Running, Ready, and not being deleted.
fn pod_ready(map: &Map<String, Value>) -> bool {
    let deleting = map
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null());
    let status = map.get("status");
    let running = status.and_then(|s| s.get("phase")).and_then(Value::as_str) == Some("Running");
    let ready = status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        });
    !deleting && running && ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("a DynamicObject")
    }

    fn pod(phase: &str, ready: &str) -> DynamicObject {
        object(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "reviews-v1-abc", "namespace": "default",
                "resourceVersion": "12", "uid": "u1", "labels": {"app": "reviews"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "app", "image": "reviews:v1",
                "ports": [{"containerPort": 9080, "name": "http"}],
                "resources": {"limits": {"cpu": "1"}}}],
                "serviceAccountName": "bookinfo-reviews", "nodeName": "n1"},
            "status": {"phase": phase, "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}],
                "conditions": [{"type": "Ready", "status": ready,
                    "lastTransitionTime": "2026-12-04T10:00:00Z"}]},
        }))
    }

    fn pod_kind() -> WatchedKind {
        watched()
            .into_iter()
            .find(|k| k.resource.kind == "Pod")
            .expect("pods are watched")
    }

    #[test]
    fn a_ready_pod_keeps_its_address_and_loses_what_the_api_server_keeps() {
        let r = to_resource(&pod_kind(), pod("Running", "True")).expect("valid");
        assert_eq!(r.raw["status"]["podIP"], "10.244.0.7");
        assert!(r.raw["metadata"].get("managedFields").is_none());
        assert!(r.raw["metadata"].get("resourceVersion").is_none());
        assert!(r.raw["spec"].get("nodeName").is_none());
        assert!(r.raw["spec"]["containers"][0].get("resources").is_none());
        assert_eq!(r.raw["spec"]["serviceAccountName"], "bookinfo-reviews");
    }

    #[test]
    fn analysis_keeps_what_the_analyzers_read_and_points_at_no_line() {
        let loaded =
            load_object(&pod_kind(), pod("Pending", "False"), Reader::Analysis).expect("an object");
        let r = &loaded.resources[0];
        assert_eq!(r.raw["spec"]["nodeName"], "n1");
        assert_eq!(r.raw["spec"]["containers"][0]["image"], "reviews:v1");
        assert_eq!(r.raw["status"]["conditions"][0]["type"], "Ready");
        assert!(r.raw["metadata"].get("managedFields").is_none());
        assert_eq!(&*r.source.file, "cluster:pods/default/reviews-v1-abc");
        assert!(!r.source.in_file());
    }

    #[test]
    fn a_pod_that_is_not_ready_has_no_address() {
        let r = to_resource(&pod_kind(), pod("Running", "False")).expect("valid");
        assert!(r.raw["status"].get("podIP").is_none());
        let r = to_resource(&pod_kind(), pod("Pending", "True")).expect("valid");
        assert!(r.raw["status"].get("podIP").is_none());
    }

    #[test]
    fn status_and_version_changes_are_no_change() {
        let vs_kind = watched()
            .into_iter()
            .find(|k| k.resource.kind == "VirtualService")
            .expect("watched");
        let vs = |rv: &str, status: Value| {
            object(serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": rv},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
                "status": status,
            }))
        };
        let a = to_resource(&vs_kind, vs("1", serde_json::json!({}))).expect("valid");
        let b = to_resource(
            &vs_kind,
            vs(
                "2",
                serde_json::json!({"validationMessages": [{"type": {"code": "IST0101"}}]}),
            ),
        )
        .expect("valid");
        assert_eq!(a.raw, b.raw);
    }

    #[test]
    fn an_invalid_object_is_skipped_with_its_problem() {
        let vs_kind = watched()
            .into_iter()
            .find(|k| k.resource.kind == "VirtualService")
            .expect("watched");
        let bad = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "wieght": 10}]}]},
        }));
        let Err(Skipped::Invalid(message)) = to_resource(&vs_kind, bad) else {
            panic!("a misspelt field is refused");
        };
        assert!(message.contains("wieght"), "{message}");
        assert!(
            message.contains("cluster:virtualservices/default/reviews"),
            "{message}"
        );
    }
}
