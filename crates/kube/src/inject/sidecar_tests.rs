use super::*;
use crate::inject::patch;
use serde_json::json;

fn settings() -> InjectSettings {
    InjectSettings::for_control_plane("istio-system", "istiod", "example.org/trellis:1")
}

/// A pod as the ReplicaSet controller makes it (no name yet), with a field Trellis
/// does not type.
fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "reviews-v1-5d8f7c9b4-", "namespace": "shop",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "5d8f7c9b4"},
            "annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
                "sidecar.istio.io/proxyMemory": "64Mi", "sidecar.istio.io/logLevel": "debug",
                "proxy.istio.io/config": "terminationDrainDuration: 20s"}},
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "containers": [{"name": "reviews", "image": "reviews:1",
                "ports": [{"containerPort": 9080}], "x-unknown": {"kept": true}}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no init container {name} in {pod}"))
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect()
}

fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

#[test]
fn the_proxy_is_a_native_sidecar_after_capture_and_before_the_apps_init() {
    let out = inject_pod(&pod(), None, &settings()).expect("injects");
    let init: Vec<&str> = out["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(init, ["istio-init", "istio-proxy", "migrate"]);
    assert_eq!(
        out["spec"]["containers"],
        pod()["spec"]["containers"],
        "the app's containers are untouched"
    );
    let proxy = container(&out, "istio-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["image"], "example.org/trellis:1");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    for probe in ["startupProbe", "readinessProbe"] {
        assert_eq!(
            proxy[probe]["httpGet"],
            json!({"path": "/healthz/ready", "port": 15021})
        );
    }
    assert_eq!(
        proxy["resources"]["requests"],
        json!({"cpu": "100m", "memory": "64Mi"})
    );
    let env: Vec<&str> = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("a name"))
        .collect();
    for var in [
        "POD_NAME",
        "POD_NAMESPACE",
        "INSTANCE_IP",
        "SERVICE_ACCOUNT",
        "TRELLIS_LOG",
        "PROXY_CONFIG",
    ] {
        assert!(env.contains(&var), "{var} in {env:?}");
    }
    let proxy_config = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "PROXY_CONFIG");
    assert_eq!(
        proxy_config.map(|e| &e["value"]),
        Some(&json!("terminationDrainDuration: 20s"))
    );
    let a = args(proxy);
    // Readiness on Istio's status port, metrics on its merged-metrics port.
    assert_eq!(flag(&a, "--status-port"), Some("15021"));
    // Capture mode: the init container's redirects land on its capture listeners.
    assert!(a.contains(&"--capture"), "{a:?}");
    assert_eq!(flag(&a, "--stats"), Some("0.0.0.0:15020"));
    assert_eq!(
        flag(&a, "--control-plane"),
        Some("istiod.istio-system.svc:15012")
    );
    assert_eq!(
        flag(&a, "--token-file"),
        Some("/var/run/secrets/tokens/istio-token")
    );
    assert_eq!(
        flag(&a, "--ca-root"),
        Some("/var/run/secrets/istio/root-cert.pem")
    );
    assert_eq!(flag(&a, "--name"), Some("reviews-v1"));
    assert_eq!(
        flag(&a, "--labels"),
        Some("app=reviews,pod-template-hash=5d8f7c9b4,version=v1")
    );
    let mounts = &proxy["volumeMounts"];
    assert_eq!(mounts[0]["mountPath"], "/var/run/secrets/tokens");
    assert_eq!(mounts[1]["mountPath"], "/var/run/secrets/istio");
}

#[test]
fn capture_takes_istios_traffic_annotations() {
    let out = inject_pod(&pod(), None, &settings()).expect("injects");
    let init = container(&out, "istio-init");
    let a = args(init);
    assert_eq!(&a[..2], ["proxy", "init"]);
    assert_eq!(flag(&a, "--proxy-uid"), Some("1337"));
    assert_eq!(flag(&a, "--outbound-port"), Some("15001"));
    assert_eq!(flag(&a, "--inbound-port"), Some("15006"));
    assert_eq!(flag(&a, "--include-outbound-ip-ranges"), Some("*"));
    assert_eq!(flag(&a, "--include-inbound-ports"), Some("*"));
    assert_eq!(flag(&a, "--exclude-inbound-ports"), Some("15020,15021"));
    assert_eq!(flag(&a, "--exclude-outbound-ports"), Some("5432"));
    assert_eq!(flag(&a, "--exclude-outbound-ip-ranges"), None);
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
}

#[test]
fn volumes_labels_and_status_are_added_beside_the_pods_own() {
    let out = inject_pod(&pod(), None, &settings()).expect("injects");
    let volumes = out["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[0]["name"], "data");
    assert_eq!(
        volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "istio-ca"
    );
    assert_eq!(volumes[2]["configMap"]["name"], "istio-ca-root-cert");
    let labels = &out["metadata"]["labels"];
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
    let status: Value = serde_json::from_str(
        out["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .expect("a status"),
    )
    .expect("JSON");
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    assert_eq!(status["revision"], "default");
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "reviews"
    );
}

#[test]
fn the_patch_turns_the_pod_into_the_injected_pod() {
    let before = pod();
    let after = inject_pod(&before, None, &settings()).expect("injects");
    let p = patch(&before, &after);
    let mut patched = before.clone();
    json_patch::patch(&mut patched, &p).expect("the patch applies");
    assert_eq!(patched, after);
    // Through JSON and back, as the API server receives it.
    let wire: json_patch::Patch =
        serde_json::from_str(&serde_json::to_string(&p).expect("JSON")).expect("a patch");
    let mut again = before;
    json_patch::patch(&mut again, &wire).expect("the patch applies");
    assert_eq!(again, after);
}

#[test]
fn a_pod_names_its_own_image_and_a_bare_pod_its_workload() {
    let mut p = json!({"metadata": {"name": "curl",
        "annotations": {"sidecar.istio.io/proxyImage": "example.org/other:2"}},
        "spec": {"containers": [{"name": "curl", "image": "curl"}]}});
    let out = inject_pod(&p, None, &settings()).expect("injects");
    assert_eq!(
        container(&out, "istio-proxy")["image"],
        "example.org/other:2"
    );
    assert_eq!(
        container(&out, "istio-init")["image"],
        "example.org/other:2"
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-name"],
        "curl"
    );
    assert_eq!(
        out["metadata"]["labels"]["service.istio.io/canonical-revision"],
        "latest"
    );
    p["spec"] = json!({});
    assert!(matches!(
        inject_pod(&p, None, &settings()),
        Err(InjectError::Shape(_))
    ));
}

#[test]
fn dns_capture_asked_in_proxy_metadata_redirects_the_apps_dns() {
    let plain = inject_pod(&pod(), None, &settings()).expect("injects");
    assert!(!args(container(&plain, INIT_CONTAINER)).contains(&"--redirect-dns"));
    let mut asked = pod();
    asked["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n");
    let injected = inject_pod(&asked, None, &settings()).expect("injects");
    assert!(args(container(&injected, INIT_CONTAINER)).contains(&"--redirect-dns"));
}

#[test]
fn the_apps_http_probes_are_asked_through_the_sidecar() {
    let mut probed = pod();
    probed["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/health", "port": 9080}});
    let injected = inject_pod(&probed, None, &settings()).expect("injects");
    let app = &injected["spec"]["containers"][0];
    assert_eq!(
        app["readinessProbe"]["httpGet"],
        json!({"path": "/app-health/reviews/readyz", "port": 15020, "scheme": "HTTP"})
    );
    let proxy = container(&injected, PROXY_CONTAINER);
    let probers = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS")
        .and_then(|e| e["value"].as_str())
        .expect("the originals handed to the sidecar");
    let probers: Value = serde_json::from_str(probers).expect("JSON");
    assert_eq!(
        probers["/app-health/reviews/readyz"]["httpGet"],
        json!({"path": "/health", "port": 9080})
    );
    // Turned off by Istio's annotation.
    probed["metadata"]["annotations"]["sidecar.istio.io/rewriteAppHTTPProbers"] = json!("false");
    let injected = inject_pod(&probed, None, &settings()).expect("injects");
    assert_eq!(
        injected["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        9080
    );
}
