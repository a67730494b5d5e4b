//! The test harness itself, against the real API server: a Deployment's Pods are
//! bound, given loopback IPs, run and reported Ready, so the Deployment becomes
//! available and the Service's EndpointSlice lists the addresses as ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use trellis_kube::testing::{Cluster, Kubelet, PodRunner};

const APP: &str = "apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: app
        image: example/hello
        ports: [{containerPort: 8080, name: http}]
";

#[test]
fn deployments_become_available_with_ready_endpoints() {
    if !trellis_kube::testing::isolate("deployments_become_available_with_ready_endpoints") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(scenario());
}

async fn scenario() {
    let Some(cluster) = Cluster::start("deployments_become_available_with_ready_endpoints").await
    else {
        return;
    };
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = started.clone();
    let runner: PodRunner = Arc::new(move |info| {
        let counter = counter.clone();
        Box::pin(async move {
            assert!(
                info.istio_token.exists(),
                "the pod's istio-ca token is written"
            );
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Vec::new()
        })
    });
    let _kubelet = Kubelet::start(&cluster, runner).await;
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(APP));
    assert!(ok, "kubectl apply: {err}");
    let client = cluster.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = deployments.get("hello").await.expect("the Deployment");
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        let ready: usize = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=hello"))
            .await
            .expect("EndpointSlices")
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .filter(|e| e.addresses.iter().all(|a| a.starts_with("10.244.")))
            .count();
        if available == 2 && ready == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "available {available}, ready endpoints {ready}\n{}",
            cluster.log_tail("kube-controller-manager")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(started.load(std::sync::atomic::Ordering::Relaxed), 2);
}
