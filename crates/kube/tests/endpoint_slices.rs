//! EndpointSlices from the real API server (with the real controller-manager, which
//! writes slices for every Service with a selector): a Service without a selector
//! gets its endpoints from the slices written for it, ready addresses only; slices
//! Kubernetes makes from a selector are not watched (the Pods are); a slice edit
//! that changes nothing the mesh reads (a node name) is no change; a deleted slice
//! takes its endpoints with it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trellis_compile::Mesh;
use trellis_control::ControlPlane;
use trellis_kube::source::{self, SourceOptions};
use trellis_kube::testing::{Cluster, ClusterOptions, isolate};

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  ports: [{name: tcp-db, port: 5432, targetPort: 6432}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: ops}
addressType: IPv4
endpoints:
- addresses: [10.20.0.1]
  conditions: {ready: true}
  nodeName: node-a
- addresses: [10.20.0.2]
  conditions: {ready: false}
ports: [{name: tcp-db, port: 6432, protocol: TCP}]
";

#[test]
fn selectorless_services_take_their_endpoints_from_endpoint_slices() {
    let name = "selectorless_services_take_their_endpoints_from_endpoint_slices";
    if !isolate(name) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario(name));
}

/// The addresses the compiled mesh gives `host`, sorted.
fn endpoints(control: &ControlPlane, host: &str) -> Vec<String> {
    let mesh = Mesh::new(&control.resources(), vec![]);
    let Some(service) = mesh.service(host) else {
        return vec!["no such service".into()];
    };
    let mut out: Vec<String> = mesh
        .endpoints_of(service, &Default::default())
        .filter_map(|w| w.address)
        .map(|a| a.to_string())
        .collect();
    out.sort();
    out
}

fn slices(control: &ControlPlane) -> Vec<String> {
    let mut out: Vec<String> = control
        .resources()
        .iter()
        .filter(|r| r.kind == "EndpointSlice")
        .map(|r| r.meta.name.clone())
        .collect();
    out.sort();
    out
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(name: &str) {
    let Some(cluster) = Cluster::start_with(name, ClusterOptions::default()).await else {
        return;
    };
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(SETUP));
    assert!(ok, "{err}");
    // The controller-manager has written web's slice (selector-made) before we look.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = cluster.kubectl_run(
            &[
                "get",
                "endpointslices",
                "-n",
                "shop",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "name",
            ],
            None,
        );
        if ok && !out.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller-manager made no slice for web"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let control = ControlPlane::new();
    let running = source::start(
        cluster.client().await,
        control.clone(),
        SourceOptions::default(),
    );
    until("the first list", || control.held().is_none()).await;
    let db = "db.shop.svc.cluster.local";
    until("db's ready endpoint", || {
        endpoints(&control, db) == ["10.20.0.1"]
    })
    .await;
    assert_eq!(
        slices(&control),
        ["db-1"],
        "only the hand-written slice is read; web's selector-made one is not"
    );

    // A node name is nothing the mesh reads: no change.
    let unchanged = running.stats().unchanged.load(Ordering::Relaxed);
    let updates = running.stats().updates.load(Ordering::Relaxed);
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "patch",
            "endpointslice",
            "db-1",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/endpoints/0/nodeName","value":"node-b"}]"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    until("the node-name edit seen", || {
        running.stats().unchanged.load(Ordering::Relaxed) > unchanged
    })
    .await;
    assert_eq!(
        running.stats().updates.load(Ordering::Relaxed),
        updates,
        "a node-name edit changed the store"
    );

    // The second endpoint turns ready: both are endpoints.
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "patch",
            "endpointslice",
            "db-1",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/endpoints/1/conditions/ready","value":true}]"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    until("both endpoints ready", || {
        endpoints(&control, db) == ["10.20.0.1", "10.20.0.2"]
    })
    .await;

    let (ok, _, err) =
        cluster.kubectl_run(&["delete", "endpointslice", "db-1", "-n", "shop"], None);
    assert!(ok, "{err}");
    until("no endpoints after the delete", || {
        endpoints(&control, db).is_empty()
    })
    .await;
}
