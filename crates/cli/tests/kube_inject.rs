//! `trellis kube-inject` as a user runs it: workloads' pod templates and bare pods get
//! the capture init container and the native sidecar (so they run 2 containers: the
//! app and the proxy), an opted-out template and other kinds come out as they went in,
//! a second pass changes nothing, and a bad annotation is an error naming it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn trellis(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for trellis")
}

const MANIFESTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, labels: {app: reviews}}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
        ports: [{containerPort: 9080}]
        env: [{name: LOG_DIR, value: /tmp/logs}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy}
spec:
  selector: {matchLabels: {app: legacy}}
  template:
    metadata:
      labels: {app: legacy}
      annotations: {sidecar.istio.io/inject: \"false\"}
    spec:
      containers: [{name: legacy, image: legacy:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: curl, labels: {app: curl}}
spec:
  containers: [{name: curl, image: curlimages/curl, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: \"0 3 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: report, image: report:1}]
";

fn documents(yaml: &str) -> Vec<Value> {
    trellis_api::yaml::parse(yaml)
        .expect("YAML")
        .iter()
        .map(|d| d.root.to_json())
        .collect()
}

/// The pod spec inside a document of any kind.
fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => &doc["spec"],
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

/// Containers that run beside each other for the pod's life: the app containers and
/// native sidecars (what `kubectl get pods` counts as READY x/2).
fn running_containers(spec: &Value) -> Vec<String> {
    let mut names: Vec<String> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .chain(spec["containers"].as_array().into_iter().flatten())
        .map(|c| c["name"].as_str().expect("a name").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn pods_and_templates_get_the_native_sidecar_and_the_rest_passes_through() {
    let out = trellis(&["kube-inject", "-f", "-"], Some(MANIFESTS));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let before = documents(MANIFESTS);
    let after = documents(&stdout);
    assert_eq!(after.len(), 5);

    let reviews = pod_spec(&after[0]);
    assert_eq!(running_containers(reviews), ["istio-proxy", "reviews"]);
    let init = reviews["initContainers"]
        .as_array()
        .expect("init containers");
    assert_eq!(init[0]["name"], "istio-init");
    assert_eq!(init[0]["args"][0], "proxy");
    assert_eq!(init[0]["args"][1], "init");
    assert_eq!(init[1]["name"], "istio-proxy");
    assert_eq!(init[1]["restartPolicy"], "Always");
    assert_eq!(
        init[1]["image"],
        format!("ghcr.io/trellis-mesh/trellis:{}", env!("CARGO_PKG_VERSION"))
    );
    // The app's container, the Deployment's own fields and its metadata are as written.
    assert_eq!(reviews["containers"], pod_spec(&before[0])["containers"]);
    assert_eq!(after[0]["metadata"], before[0]["metadata"]);
    assert_eq!(after[0]["spec"]["replicas"], 2);
    assert_eq!(
        after[0]["spec"]["template"]["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );

    assert_eq!(after[1], before[1], "the opted-out Deployment is untouched");
    assert_eq!(
        running_containers(pod_spec(&after[2])),
        ["curl", "istio-proxy"]
    );
    assert_eq!(after[3], before[3], "a Service passes through");
    assert_eq!(
        running_containers(pod_spec(&after[4])),
        ["istio-proxy", "report"]
    );

    // Injected once: a second pass is the identity.
    let again = trellis(&["kube-inject", "-f", "-"], Some(&stdout));
    assert!(again.status.success());
    assert_eq!(documents(&String::from_utf8_lossy(&again.stdout)), after);
}

#[test]
fn files_in_and_out_with_another_hub_and_tag() {
    let dir = tempfile::tempdir().expect("a directory");
    let input = dir.path().join("in.yaml");
    let output = dir.path().join("out.yaml");
    std::fs::write(&input, MANIFESTS).expect("write");
    let out = trellis(
        &[
            "kube-inject",
            "-f",
            &input.display().to_string(),
            "-o",
            &output.display().to_string(),
            "--hub",
            "example.org/mesh",
            "--tag",
            "9.9",
            "-i",
            "mesh-system",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let after = documents(&std::fs::read_to_string(&output).expect("the output file"));
    let proxy = &pod_spec(&after[0])["initContainers"][1];
    assert_eq!(proxy["image"], "example.org/mesh/trellis:9.9");
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--control-plane", "istiod.mesh-system.svc:15012"]),
        "{args:?}"
    );
}

#[test]
fn a_mesh_config_file_sets_the_discovery_address_and_trust_domain() {
    let dir = tempfile::tempdir().expect("a directory");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "trustDomain: example.org\ndefaultConfig:\n  discoveryAddress: istiod-canary.mesh.svc:15012\n",
    )
    .expect("write");
    let out = trellis(
        &[
            "kube-inject",
            "-f",
            "-",
            "--meshConfigFile",
            &mesh.display().to_string(),
        ],
        Some(MANIFESTS),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = documents(&String::from_utf8_lossy(&out.stdout));
    let proxy = &pod_spec(&after[0])["initContainers"][1];
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--control-plane", "istiod-canary.mesh.svc:15012"]),
        "{args:?}"
    );
    assert!(
        proxy["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "TRUST_DOMAIN" && e["value"] == "example.org"),
        "{proxy}"
    );
    std::fs::write(&mesh, "trustDomain: [a, b]\n").expect("write");
    let bad = trellis(
        &[
            "kube-inject",
            "-f",
            "-",
            "--mesh-config-file",
            &mesh.display().to_string(),
        ],
        Some(MANIFESTS),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("trustDomain: [\"a\",\"b\"] is not a non-empty string"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn a_bad_annotation_is_an_error_naming_it_and_the_document() {
    let bad = MANIFESTS.replace(
        "metadata: {labels: {app: reviews, version: v1}}",
        "metadata: {labels: {app: reviews, version: v1}, annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: mysql}}",
    );
    let out = trellis(&["kube-inject", "-f", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: -:1: annotation `traffic.sidecar.istio.io/excludeOutboundPorts`: \"mysql\" is not a comma-separated list of ports"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing half-written");
    let missing = trellis(&["kube-inject", "-f", "/nonexistent/x.yaml"], None);
    assert_eq!(missing.status.code(), Some(2));
}
