//! Helpers shared by the workload-facing analyzers: labels and selectors, which
//! pods and services go together, whether a workload carries the sidecar, service
//! port protocols, and the mesh config when the input carries one.
//!
//! Everything reads `Resource::raw` (the document as written), so the helpers work
//! whatever the typed spec of a kind looks like.

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_api::Resource;

use crate::Context;

/// Labels, annotations or a `matchLabels` selector.
pub type Labels = BTreeMap<String, String>;

/// The container Istio injects.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The namespace label that turns sidecar injection on (`enabled`) or off (`disabled`).
pub const INJECTION_LABEL: &str = "istio-injection";
/// The namespace (or pod) label naming the control plane revision that injects.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// The label and annotation that opt one workload in or out of injection.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// The label that puts a namespace or pod in ambient mode.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// The text of a scalar as Kubernetes reads label and annotation values
/// (an unquoted `true` or `8080` in YAML still means the text).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON object of scalars as a string map (anything else reads as empty).
pub fn string_map(v: &Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an equality selector matches a set of labels (an empty selector matches all).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Renders a selector the way `kubectl` does: `a=b,c=d`.
pub fn selector_text(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The namespace of a resource, as a string (empty when none is written).
pub fn ns_of(r: &Resource) -> &str {
    r.meta.namespace.as_deref().unwrap_or("")
}

/// `namespace/name`, or just `name` without a namespace.
pub fn full_name(r: &Resource) -> String {
    match r.meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", r.meta.name),
        _ => r.meta.name.clone(),
    }
}

/// Pods in `namespace` whose labels match `selector`.
pub fn pods_matching<'a>(
    cx: &'a Context<'_>,
    namespace: &'a str,
    selector: &'a Labels,
) -> impl Iterator<Item = &'a Resource> + 'a {
    cx.of("", "Pod")
        .filter(move |p| ns_of(p) == namespace && selector_matches(selector, &p.meta.labels))
}

/// Services in `namespace` whose (non-empty) selector matches `pod_labels`.
/// A Service without a selector is backed by hand-made endpoints, not by these pods.
pub fn services_selecting<'a>(
    cx: &'a Context<'_>,
    namespace: &'a str,
    pod_labels: &'a Labels,
) -> impl Iterator<Item = &'a Resource> + 'a {
    cx.of("", "Service").filter(move |s| {
        let selector = string_map(&s.raw["spec"]["selector"]);
        ns_of(s) == namespace && !selector.is_empty() && selector_matches(&selector, pod_labels)
    })
}

/// The Namespace resource called `name`, when the input has one.
pub fn namespace_named<'a>(cx: &'a Context<'_>, name: &str) -> Option<&'a Resource> {
    cx.of("", "Namespace").find(|n| n.meta.name == name)
}

/// Resources Istio's installation owns (labelled `istio: ...` or `release: istio`).
pub fn is_control_plane(labels: &Labels) -> bool {
    labels.contains_key("istio") || labels.get("release").is_some_and(|v| v == "istio")
}

/// Resources the Istio gateway controller generated (gateways, waypoints, east-west).
pub fn is_generated_by_gateway_controller(labels: &Labels) -> bool {
    matches!(
        labels.get("gateway.istio.io/managed").map(String::as_str),
        Some(
            "istio.io-gateway-controller"
                | "istio.io-mesh-controller"
                | "istio.io-eastwest-controller"
        )
    )
}

/// Whether a pod spec already carries the proxy: a container (or a native sidecar
/// init container) named `istio-proxy` with an image.
pub fn has_proxy(pod_spec: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        pod_spec[*list].as_array().into_iter().flatten().any(|c| {
            c["name"] == PROXY_CONTAINER && c["image"].as_str().is_some_and(|i| !i.is_empty())
        })
    })
}

/// Whether the namespace asks for injection: `Some(true)` for `istio-injection=enabled`
/// or a revision label, `Some(false)` for another value, `None` when it says nothing
/// (or the namespace is not in the input).
pub fn namespace_injection(cx: &Context<'_>, namespace: &str) -> Option<bool> {
    let ns = namespace_named(cx, namespace)?;
    let labels = &ns.meta.labels;
    match labels.get(INJECTION_LABEL) {
        Some(v) => Some(v == "enabled"),
        None => labels.contains_key(REVISION_LABEL).then_some(true),
    }
}

/// Whether a workload (a pod, or a pod template) runs with the sidecar: it has one
/// already, or its label / annotation asks for one, or else its namespace does.
pub fn workload_in_mesh(cx: &Context<'_>, namespace: &str, meta: &Value, pod_spec: &Value) -> bool {
    if has_proxy(pod_spec) {
        return true;
    }
    for source in ["labels", "annotations"] {
        if let Some(v) = meta[source].get(INJECT_KEY).and_then(scalar_text) {
            return v == "true";
        }
    }
    namespace_injection(cx, namespace).unwrap_or(false)
}

/// The mesh config, when the input carries Istio's `istio` ConfigMap (key `mesh`)
/// in the control plane namespace, as `istioctl analyze` reads it from a cluster.
pub fn mesh_config(cx: &Context<'_>) -> Option<Value> {
    let istio_ns = cx.options().istio_namespace.as_str();
    let cm = cx.of("", "ConfigMap").find(|c| {
        c.meta.name == "istio" && c.meta.namespace.as_deref().is_none_or(|n| n == istio_ns)
    })?;
    let text = cm.raw["data"]["mesh"].as_str()?;
    let doc = trellis_api::yaml::parse(text).ok()?.into_iter().next()?;
    Some(doc.root.to_json())
}

/// The protocol Istio gives a Service port, from its `appProtocol` or the prefix of
/// its name (`http-web` is HTTP); `None` when neither names a protocol Istio knows.
pub fn service_port_protocol(port: &Value) -> Option<&'static str> {
    if port["protocol"] == "UDP" {
        return Some("UDP");
    }
    let app_protocol = port["appProtocol"].as_str();
    if let Some(app) = app_protocol {
        match app {
            "kubernetes.io/h2c" => return Some("HTTP2"),
            "kubernetes.io/ws" => return Some("HTTP"),
            "kubernetes.io/wss" => return Some("HTTPS"),
            _ => {}
        }
    }
    let name = app_protocol.or(port["name"].as_str()).unwrap_or("");
    if name
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("grpc-web"))
    {
        return Some("GRPC-Web");
    }
    let prefix = name.split('-').next().unwrap_or("");
    let known = match prefix.to_ascii_lowercase().as_str() {
        "tcp" => Some("TCP"),
        "udp" => Some("UDP"),
        "grpc" => Some("GRPC"),
        "http" => Some("HTTP"),
        "http_proxy" => Some("HTTP_PROXY"),
        "http2" => Some("HTTP2"),
        "https" => Some("HTTPS"),
        "tls" => Some("TLS"),
        "mongo" => Some("Mongo"),
        "redis" => Some("Redis"),
        "mysql" => Some("MySQL"),
        _ => None,
    };
    // SMTP, DNS, MySQL and MongoDB ports are taken as TCP when nothing else is said.
    known.or_else(|| matches!(port["port"].as_i64(), Some(25 | 53 | 3306 | 27017)).then_some("TCP"))
}

/// A port's `targetPort` as text (a number or a named port), or `None` when unset.
pub fn target_port_text(port: &Value) -> Option<String> {
    match &port["targetPort"] {
        Value::Number(n) if n.as_i64() != Some(0) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s != "0" => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything_and_values_must_be_equal() {
        let pod = labels(&[("app", "a"), ("version", "v1")]);
        assert!(selector_matches(&Labels::new(), &pod));
        assert!(selector_matches(&labels(&[("app", "a")]), &pod));
        assert!(!selector_matches(&labels(&[("app", "b")]), &pod));
        assert!(!selector_matches(&labels(&[("tier", "a")]), &pod));
    }

    #[test]
    fn unquoted_scalars_read_as_text() {
        let m = string_map(&json!({"a": true, "b": 3, "c": "x", "d": null}));
        assert_eq!(m, labels(&[("a", "true"), ("b", "3"), ("c", "x")]));
    }

    #[test]
    fn port_protocols_follow_istio_naming() {
        let p = |v: Value| service_port_protocol(&v);
        assert_eq!(p(json!({"name": "http-web", "port": 80})), Some("HTTP"));
        assert_eq!(
            p(json!({"name": "GRPC-Web-x", "port": 80})),
            Some("GRPC-Web")
        );
        assert_eq!(p(json!({"name": "foo", "port": 80})), None);
        assert_eq!(p(json!({"port": 8080})), None);
        assert_eq!(p(json!({"port": 3306})), Some("TCP"));
        assert_eq!(
            p(json!({"name": "foo", "port": 53, "protocol": "UDP"})),
            Some("UDP")
        );
        // appProtocol wins over the name
        assert_eq!(
            p(json!({"name": "foo", "appProtocol": "tcp", "port": 1})),
            Some("TCP")
        );
        assert_eq!(
            p(json!({"name": "http", "appProtocol": "kubernetes.io/h2c", "port": 1})),
            Some("HTTP2")
        );
        assert_eq!(
            p(json!({"name": "http", "appProtocol": "bogus", "port": 1})),
            None
        );
    }

    #[test]
    fn proxy_needs_an_image() {
        assert!(has_proxy(
            &json!({"containers": [{"name": "istio-proxy", "image": "proxyv2"}]})
        ));
        assert!(has_proxy(
            &json!({"initContainers": [{"name": "istio-proxy", "image": "proxyv2"}]})
        ));
        assert!(!has_proxy(
            &json!({"containers": [{"name": "istio-proxy"}]})
        ));
        assert!(!has_proxy(&json!({})));
    }
}
