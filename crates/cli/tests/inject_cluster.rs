//! `trellis control-plane --kubeconfig … --inject` against a real kube-apiserver and
//! controller-manager (in the test's own network namespace; needs root, or a user
//! namespace, for `unshare`): the leader writes `istio-sidecar-injector` pointing at
//! its webhook and keeps its caBundle equal to the mesh root, so the API server's pod
//! creations in a namespace labelled `istio-injection=enabled` come back with the
//! sidecar of the image given by `--proxy-image`.

mod common;

use std::time::{Duration, Instant};

use trellis_kube::testing::{Cluster, isolate};

const WORKLOADS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details, namespace: shop}
spec:
  selector: {matchLabels: {app: details}}
  template:
    metadata: {labels: {app: details}}
    spec:
      containers: [{name: details, image: details:1}]
";

#[test]
fn the_control_plane_injects_pods_in_labelled_namespaces() {
    let test = "the_control_plane_injects_pods_in_labelled_namespaces";
    if !isolate(test) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(cluster) = runtime.block_on(Cluster::start(test)) else {
        return;
    };
    let (ok, out, err) = cluster.kubectl_run(&["create", "namespace", "istio-system"], None);
    assert!(ok, "{out}{err}");
    let state = cluster.dir().join("control-plane");
    let (_control_plane, _ready, _log) = common::spawn(
        &[
            "control-plane",
            "--kubeconfig",
            &cluster.kubeconfig.display().to_string(),
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--state-dir",
            &state.display().to_string(),
            "--webhook",
            "127.0.0.1:0",
            "--inject",
            "--proxy-image",
            "example.org/trellis:e2e",
        ],
        "ready",
    );
    let (ok, out, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(WORKLOADS));
    assert!(ok, "{out}{err}");
    // The leader writes the configuration, then its caBundle; until both are in, pods
    // made by the ReplicaSet controller are refused and retried (failurePolicy Fail).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = cluster.kubectl_run(
            &[
                "get",
                "pods",
                "-n",
                "shop",
                "-l",
                "app=details",
                "-o",
                "jsonpath={.items[0].spec.initContainers[*].name} {.items[0].spec.initContainers[1].image}",
            ],
            None,
        );
        if ok && out.trim() == "istio-init istio-proxy example.org/trellis:e2e" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no injected pod: {out}{err}\ncontroller-manager:\n{}",
            cluster.log_tail("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (ok, out, err) = cluster.kubectl_run(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "istio-sidecar-injector",
            "-o",
            "jsonpath={.webhooks[*].name}",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "rev.namespace.sidecar-injector.istio.io rev.object.sidecar-injector.istio.io \
         namespace.sidecar-injector.istio.io object.sidecar-injector.istio.io"
    );
}
