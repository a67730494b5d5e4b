//! Analysis written into a real API server: a VirtualService routing to a subset no
//! DestinationRule defines shows IST0101 in `status.validationMessages` (Istio's
//! shape, with the generation it is about), the message goes when the subset is
//! fixed (also when it was fixed while no writer ran), and an unchanged snapshot
//! writes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use tokio::sync::watch;
use trellis_api::Resource;
use trellis_kube::source::{to_resource, watched};
use trellis_kube::status::{StatusOptions, StatusWriter};
use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds, isolate};

const APP: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn virtual_service(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"
    )
}

/// The mesh's resources as the cluster source would hand them over.
async fn snapshot(client: &kube::Client) -> Arc<Vec<Resource>> {
    let mut resources = Vec::new();
    for kind in watched() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => panic!("listing {}: {e}", kind.resource.plural),
        };
        resources.extend(
            list.items
                .into_iter()
                .filter_map(|o| to_resource(&kind, o).ok()),
        );
    }
    Arc::new(resources)
}

fn apply(cluster: &Cluster, yaml: &str) {
    let (ok, out, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply: {out}{err}");
}

/// `kubectl get vs reviews -o json`.
fn reviews(cluster: &Cluster) -> Value {
    let (ok, out, err) =
        cluster.kubectl_run(&["get", "virtualservice", "reviews", "-o", "json"], None);
    assert!(ok, "kubectl get: {err}");
    serde_json::from_str(&out).expect("JSON")
}

/// Waits until the VirtualService's status satisfies `done`.
async fn status_until(cluster: &Cluster, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let vs = reviews(cluster);
        if done(&vs) {
            return vs;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; the VirtualService: {vs:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has_ist0101(vs: &Value) -> bool {
    vs["status"]["validationMessages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["type"]["code"] == "IST0101"))
}

fn cleared(vs: &Value) -> bool {
    vs["status"].get("validationMessages").is_none()
}

fn options() -> StatusOptions {
    let mut options = StatusOptions::new("istio-system");
    options.quiet = Duration::from_millis(100);
    options.max_delay = Duration::from_millis(500);
    options
}

#[test]
fn analysis_is_written_to_status_and_cleared_when_fixed() {
    if !isolate("analysis_is_written_to_status_and_cleared_when_fixed") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(scenario());
}

async fn scenario() {
    let test = "analysis_is_written_to_status_and_cleared_when_fixed";
    let Some(cluster) = Cluster::start_with(
        test,
        ClusterOptions {
            controller_manager: false,
        },
    )
    .await
    else {
        return;
    };
    if !install_istio_crds(&cluster, test, &[]) {
        return;
    }
    let client = cluster.client().await;
    apply(&cluster, APP);
    apply(&cluster, &virtual_service("v3"));
    let (feed, snapshots) = watch::channel(snapshot(&client).await);
    let writer = StatusWriter::start(client.clone(), snapshots, options());

    let vs = status_until(&cluster, "IST0101 appears", has_ist0101).await;
    let messages = vs["status"]["validationMessages"]
        .as_array()
        .expect("a list");
    assert!(
        messages.contains(&json!({
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
            "level": "ERROR",
            "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"},
        })),
        "{messages:?}"
    );
    assert_eq!(
        vs["status"]["observedGeneration"], vs["metadata"]["generation"],
        "the messages say which generation they are about"
    );
    let (ok, yaml, _) = cluster.kubectl_run(&["get", "vs", "reviews", "-o", "yaml"], None);
    assert!(ok && yaml.contains("code: IST0101"), "{yaml}");

    // Fixed while no writer runs: the next one finds the old message and clears it.
    drop(writer);
    drop(feed);
    apply(&cluster, &virtual_service("v1"));
    let (feed, snapshots) = watch::channel(snapshot(&client).await);
    let writer = StatusWriter::start(client.clone(), snapshots, options());
    status_until(&cluster, "a fixed subset clears the status", cleared).await;

    // Broken and fixed again under the same writer.
    apply(&cluster, &virtual_service("v3"));
    feed.send_replace(snapshot(&client).await);
    let vs = status_until(&cluster, "IST0101 comes back", has_ist0101).await;
    assert_eq!(
        vs["status"]["observedGeneration"],
        vs["metadata"]["generation"]
    );
    apply(&cluster, &virtual_service("v2"));
    feed.send_replace(snapshot(&client).await);
    status_until(&cluster, "fixed again, cleared again", cleared).await;

    // The same content again (a relist) is analysed and writes nothing.
    let patches = writer.stats().patches.load(Ordering::Relaxed);
    let passes = writer.stats().passes.load(Ordering::Relaxed);
    feed.send_replace(snapshot(&client).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.stats().passes.load(Ordering::Relaxed) == passes {
        assert!(Instant::now() < deadline, "the writer runs a pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(writer.stats().patches.load(Ordering::Relaxed), patches);
    assert_eq!(writer.stats().failures.load(Ordering::Relaxed), 0);
}
