//! The cluster source against the real API server: the control plane holds proxies
//! back until every watch has listed, then holds what the cluster holds; MeshConfig
//! `discoverySelectors` in the `istio` ConfigMap decide which namespaces it sees (a
//! namespace labelled later comes into view); a write that changes only what the API
//! server keeps (status, annotations kubectl writes) changes nothing in the store and
//! pushes nothing; a deleted resource leaves it.

use std::time::{Duration, Instant};

use trellis_control::ControlPlane;
use trellis_kube::source::{self, SourceOptions};
use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds, isolate};

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {mesh: 'on'}}
---
apiVersion: v1
kind: Namespace
metadata: {name: lab}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    discoverySelectors:
    - matchLabels: {mesh: 'on'}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: lab}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
";

#[test]
fn the_store_holds_what_the_cluster_holds_in_the_namespaces_it_sees() {
    if !isolate("the_store_holds_what_the_cluster_holds_in_the_namespaces_it_sees") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario());
}

fn names(control: &ControlPlane, kind: &str) -> Vec<String> {
    let mut out: Vec<String> = control
        .resources()
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| {
            format!(
                "{}/{}",
                r.meta.namespace.as_deref().unwrap_or_default(),
                r.meta.name
            )
        })
        .collect();
    out.sort();
    out
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario() {
    let name = "the_store_holds_what_the_cluster_holds_in_the_namespaces_it_sees";
    let Some(cluster) = Cluster::start_with(
        name,
        ClusterOptions {
            controller_manager: false,
        },
    )
    .await
    else {
        return;
    };
    if !install_istio_crds(&cluster, name, &[]) {
        return;
    }
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(SETUP));
    assert!(ok, "{err}");

    let control = ControlPlane::new();
    let running = source::start(
        cluster.client().await,
        control.clone(),
        SourceOptions::default(),
    );
    assert!(
        control.held().is_some(),
        "proxies are held back until the watches have listed"
    );
    until("the first list", || control.held().is_none()).await;
    assert_eq!(names(&control, "VirtualService"), ["shop/reviews"]);
    assert!(names(&control, "Namespace").contains(&"/shop".to_string()));
    assert!(!names(&control, "Namespace").contains(&"/lab".to_string()));

    // Labelled later: lab comes into view, with what it holds.
    let (ok, _, err) = cluster.kubectl_run(&["label", "namespace", "lab", "mesh=on"], None);
    assert!(ok, "{err}");
    until("lab in view", || {
        names(&control, "VirtualService") == ["lab/ratings", "shop/reviews"]
    })
    .await;

    // Writes that change only what the API server keeps for itself: no change.
    let before = running
        .stats()
        .updates
        .load(std::sync::atomic::Ordering::Relaxed);
    let resources = control.resources();
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "patch",
            "vs",
            "reviews",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"validationMessages":[{"type":{"code":"IST0101"}}]}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl_run(
        &["apply", "-f", "-"],
        Some(SETUP.split("---\n").nth(4).expect("the reviews document")),
    );
    assert!(ok, "{err}");
    until("the writes seen and found equal", || {
        running
            .stats()
            .unchanged
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        running
            .stats()
            .updates
            .load(std::sync::atomic::Ordering::Relaxed),
        before,
        "a status write or a re-apply of the same spec changed the store"
    );
    assert!(
        std::sync::Arc::ptr_eq(&resources, &control.resources()),
        "the store kept the same snapshot"
    );

    // A real change, then a deletion.
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "patch",
            "vs",
            "reviews",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"hosts":["reviews","reviews.shop.svc.cluster.local"]}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    until("the edit in the store", || {
        control.resources().iter().any(|r| {
            r.meta.name == "reviews"
                && r.raw["spec"]["hosts"]
                    .as_array()
                    .is_some_and(|h| h.len() == 2)
        })
    })
    .await;
    let (ok, _, err) = cluster.kubectl_run(&["delete", "vs", "ratings", "-n", "lab"], None);
    assert!(ok, "{err}");
    until("the deletion in the store", || {
        names(&control, "VirtualService") == ["shop/reviews"]
    })
    .await;
}
