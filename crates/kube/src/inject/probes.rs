//! Istio's probe rewrite: with inbound traffic captured (and perhaps STRICT mutual
//! TLS), the kubelet's plaintext HTTP probes to the app would be refused, so each app
//! container's `httpGet` probes are pointed at the sidecar's stats port
//! (`/app-health/CONTAINER/readyz|livez|startupz` on 15020), and the originals go to
//! the sidecar in `ISTIO_KUBE_APP_PROBERS`, which asks the app itself on 127.0.0.1.
//! `sidecar.istio.io/rewriteAppHTTPProbers: "false"` leaves the probes alone.
//! TCP, gRPC and exec probes are left as written.

use serde_json::{Map, Value, json};

/// The sidecar's port that answers the rewritten probes.
pub const PROBE_PORT: u16 = 15020;
/// The annotation that turns the rewrite off.
pub const REWRITE_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// Whether the pod's annotations leave the rewrite on (Istio's default).
pub fn wanted(metadata: &Value) -> bool {
    metadata["annotations"][REWRITE_ANNOTATION]
        .as_str()
        .is_none_or(|v| !v.eq_ignore_ascii_case("false"))
}

/// Rewrites the HTTP probes of `containers` in place and returns the originals, keyed
/// by their new paths, as the JSON the sidecar reads; `None` when there were none.
pub fn rewrite(containers: &mut [Value]) -> Option<String> {
    let mut originals = Map::new();
    for container in containers.iter_mut() {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let ports = container["ports"].clone();
        for (field, suffix) in [
            ("readinessProbe", "readyz"),
            ("livenessProbe", "livez"),
            ("startupProbe", "startupz"),
        ] {
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(get) = probe.get("httpGet").and_then(Value::as_object).cloned() else {
                continue;
            };
            let Some(port) = resolve_port(&get["port"], &ports) else {
                continue;
            };
            let path = format!("/app-health/{name}/{suffix}");
            let mut original = get.clone();
            original.insert("port".into(), json!(port));
            original.remove("host");
            let mut entry = Map::new();
            entry.insert("httpGet".into(), Value::Object(original));
            if let Some(timeout) = probe.get("timeoutSeconds") {
                entry.insert("timeoutSeconds".into(), timeout.clone());
            }
            originals.insert(path.clone(), Value::Object(entry));
            let mut rewritten = Map::new();
            rewritten.insert("path".into(), json!(path));
            rewritten.insert("port".into(), json!(PROBE_PORT));
            rewritten.insert("scheme".into(), json!("HTTP"));
            probe.insert("httpGet".into(), Value::Object(rewritten));
        }
    }
    (!originals.is_empty()).then(|| Value::Object(originals).to_string())
}

/// A probe's port as a number: as written, or the container port of that name.
fn resolve_port(port: &Value, ports: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => name.parse().ok().or_else(|| {
            ports
                .as_array()?
                .iter()
                .find(|p| p["name"].as_str() == Some(name))?["containerPort"]
                .as_u64()
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_probes_go_to_the_sidecar_and_the_originals_to_its_environment() {
        let mut containers = vec![json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http",
                "httpHeaders": [{"name": "x", "value": "1"}]}, "timeoutSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"httpGet": {"path": "/started", "port": 8081}},
        })];
        let json = rewrite(&mut containers).expect("rewritten");
        let originals: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(
            originals["/app-health/web/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8080,
                "httpHeaders": [{"name": "x", "value": "1"}]}, "timeoutSeconds": 2})
        );
        assert_eq!(
            originals["/app-health/web/startupz"]["httpGet"]["port"],
            8081
        );
        let web = &containers[0];
        assert_eq!(
            web["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
        );
        assert_eq!(web["readinessProbe"]["timeoutSeconds"], 2);
        // A TCP probe is left as written.
        assert_eq!(web["livenessProbe"], json!({"tcpSocket": {"port": 8080}}));
    }

    #[test]
    fn no_http_probe_no_environment_and_the_annotation_turns_it_off() {
        let mut containers = vec![json!({"name": "web"})];
        assert_eq!(rewrite(&mut containers), None);
        assert!(wanted(&json!({})));
        assert!(!wanted(
            &json!({"annotations": {REWRITE_ANNOTATION: "false"}})
        ));
    }
}
