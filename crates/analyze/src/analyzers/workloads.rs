//! Pods, Services and Namespaces as the mesh sees them: which pods a selector picks
//! and which Services front a pod, whether a workload runs the sidecar (or ambient
//! mode), and the protocol Istio gives a Service port.

use std::collections::HashMap;

use serde_json::Value;
use trellis_api::Resource;

use super::json::{scalar_text, string_map};
use super::names::{full_name, ns_of};
use super::selectors::{Labels, selector_matches};
use crate::Context;

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

/// The Pods of the input (core Kubernetes).
pub fn pods<'c>(cx: &'c Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of("", "Pod")
}

/// How a message names a pod: `pod NAMESPACE/NAME`; `the pods of Deployment
/// NAMESPACE/NAME` for a pod made from a workload's template (that pod is not among the
/// inputs; its workload is); for the stand-in of the ingress gateway an Istio install
/// runs (`Options::add_ingress_gateway`, no file), those pods.
pub fn pod_in_text(cx: &Context<'_>, pod: &Resource) -> String {
    match cx.origin(pod) {
        Some(origin) => format!(
            "the pods of {} {}",
            origin.owner.kind,
            full_name(origin.owner)
        ),
        None if pod.source.file.is_empty() => format!(
            "the ingress gateway pods of the Istio install (namespace {})",
            ns_of(pod)
        ),
        None => format!("pod {}", full_name(pod)),
    }
}

/// The Services of the input (core Kubernetes).
pub fn services<'c>(cx: &'c Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of("", "Service")
}

/// Pods in any namespace whose labels match `selector`.
pub fn pods_selected<'a>(
    cx: &'a Context<'_>,
    selector: &'a Labels,
) -> impl Iterator<Item = &'a Resource> + 'a {
    pods(cx).filter(move |p| selector_matches(selector, &p.meta.labels))
}

/// Pods in `namespace` whose labels match `selector`.
pub fn pods_matching<'a>(
    cx: &'a Context<'_>,
    namespace: &'a str,
    selector: &'a Labels,
) -> impl Iterator<Item = &'a Resource> + 'a {
    pods_selected(cx, selector).filter(move |p| ns_of(p) == namespace)
}

/// Services in `namespace` whose (non-empty) selector matches `pod_labels`.
/// A Service without a selector is backed by hand-made endpoints, not by these pods.
pub fn services_selecting<'a>(
    cx: &'a Context<'_>,
    namespace: &'a str,
    pod_labels: &'a Labels,
) -> impl Iterator<Item = &'a Resource> + 'a {
    services(cx).filter(move |s| {
        let selector = string_map(&s.raw["spec"]["selector"]);
        ns_of(s) == namespace && !selector.is_empty() && selector_matches(&selector, pod_labels)
    })
}

/// The `metadata.name` → Namespace resource index (a repeated name keeps the last).
pub fn namespaces<'a>(cx: &'a Context<'_>) -> HashMap<&'a str, &'a Resource> {
    cx.of("", "Namespace")
        .map(|n| (n.meta.name.as_str(), n))
        .collect()
}

/// The first Namespace resource called `name`, when the input has one.
pub fn namespace_named<'a>(cx: &'a Context<'_>, name: &str) -> Option<&'a Resource> {
    cx.of("", "Namespace").find(|n| n.meta.name == name)
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
/// or a revision label, `Some(false)` for another value of `istio-injection`, `None`
/// when it says nothing.
pub fn namespace_injection(ns: &Resource) -> Option<bool> {
    let labels = &ns.meta.labels;
    match labels.get(INJECTION_LABEL) {
        Some(v) => Some(v == "enabled"),
        None => labels.contains_key(REVISION_LABEL).then_some(true),
    }
}

/// Whether a workload (a pod, or a pod template: its raw `metadata` and `spec`) runs
/// with the sidecar: it has one already, or its `sidecar.istio.io/inject` label (else
/// annotation) says `true`; when the workload says nothing, `namespace_injects` decides.
pub fn workload_in_mesh(
    meta: &Value,
    pod_spec: &Value,
    namespace_injects: impl FnOnce() -> bool,
) -> bool {
    if has_proxy(pod_spec) {
        return true;
    }
    for source in ["labels", "annotations"] {
        if let Some(v) = meta[source].get(INJECT_KEY).and_then(scalar_text) {
            return v == "true";
        }
    }
    namespace_injects()
}

/// True when the pod's traffic is redirected to ztunnel (ambient mode).
pub fn pod_in_ambient(pod: &Resource) -> bool {
    pod.meta
        .annotations
        .get("ambient.istio.io/redirection")
        .is_some_and(|v| v == "enabled")
}

/// True when the namespace is labelled for ambient mode and not also for sidecar
/// injection (an injection or revision label wins).
pub fn namespace_in_ambient(ns: &Resource) -> bool {
    let labels = &ns.meta.labels;
    if labels.get(INJECTION_LABEL).is_some_and(|v| v == "enabled") {
        return false;
    }
    if labels.get(REVISION_LABEL).is_some_and(|v| !v.is_empty()) {
        return false;
    }
    labels
        .get(DATAPLANE_MODE_LABEL)
        .is_some_and(|v| v == "ambient")
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
    fn texts_name_pods_that_are_among_the_inputs_or_say_where_they_come_from() {
        let yaml = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop}
spec: {containers: [{name: web, image: web}]}
";
        let resources = trellis_api::load_str("app.yaml", yaml).resources;
        let options = crate::Options::default();
        let cx = Context::new(&resources, &options);
        let mut named: Vec<String> = pods(&cx).map(|p| pod_in_text(&cx, p)).collect();
        named.sort();
        assert_eq!(
            named,
            [
                "pod shop/web-1",
                "the ingress gateway pods of the Istio install (namespace istio-system)",
                "the pods of Deployment shop/web",
            ]
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

    #[test]
    fn the_workload_speaks_before_its_namespace() {
        let spec = json!({"containers": [{"name": "app", "image": "app"}]});
        let meta = |labels: Value, annotations: Value| json!({"labels": labels, "annotations": annotations});
        let opt_out = meta(json!({INJECT_KEY: "false"}), json!({INJECT_KEY: "true"}));
        assert!(!workload_in_mesh(&opt_out, &spec, || true));
        let opt_in = meta(json!({}), json!({INJECT_KEY: true}));
        assert!(workload_in_mesh(&opt_in, &spec, || false));
        let silent = meta(json!({}), json!({}));
        assert!(workload_in_mesh(&silent, &spec, || true));
        assert!(!workload_in_mesh(&silent, &spec, || false));
    }
}
