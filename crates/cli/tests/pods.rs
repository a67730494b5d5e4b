//! The test kubelet's container runtime, which the injection and capture tests stand
//! on, against the real API server and controller-manager: a Pod spec runs as
//! written, in a network namespace of its own. A regular init container runs to
//! completion first; a native sidecar (`restartPolicy: Always`) is started and its
//! startup probe passed before the app starts; volumes are shared between them; the
//! Pod is Ready when its readiness probe passes. Another Pod reaches it by its
//! Service's DNS name and cluster IP (the kubelet plays cluster DNS and kube-proxy).
//! A Job's Pod with a native sidecar completes; a deleted Pod's app is stopped with
//! SIGTERM.

mod common;
use common::install_pods::diagnose;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use trellis_kube::testing::runtime::ContainerRuntime;
use trellis_kube::testing::{Cluster, ClusterOptions, Kubelet, isolate};

fn manifests(trellis: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: apps}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: apps}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: apps}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes: [{{name: shared, emptyDir: {{}}}}]
      initContainers:
      - name: prepare
        image: debian
        command: [sh, -c, 'echo prepared > /run/shared/marker']
        volumeMounts: [{{name: shared, mountPath: /run/shared}}]
      - name: helper
        image: ghcr.io/trellis-mesh/trellis:test
        args: [echo, --name, helper]
        restartPolicy: Always
        env: [{{name: PORT, value: "9000"}}]
        startupProbe: {{httpGet: {{path: /status/200, port: 9000}}, periodSeconds: 1}}
      containers:
      - name: web
        image: debian
        # Starts only once `prepare` has written the marker and `helper` answers.
        command: [sh, -c, 'test "$(cat /run/shared/marker)" = prepared && curl -sf http://127.0.0.1:9000/ >/dev/null && exec {trellis} echo --name web --pod "$POD_NAME"']
        env:
        - {{name: PORT, value: "8080"}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        volumeMounts: [{{name: shared, mountPath: /run/shared}}]
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe: {{httpGet: {{path: /status/200, port: http}}, periodSeconds: 1}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: apps}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - name: helper
        image: ghcr.io/trellis-mesh/trellis:test
        args: [echo, --name, helper]
        restartPolicy: Always
        env: [{{name: PORT, value: "9000"}}]
        startupProbe: {{httpGet: {{path: /status/200, port: 9000}}, periodSeconds: 1}}
      containers:
      - name: call
        image: curlimages/curl
        # By the Service's name, as cluster DNS answers it, through its cluster IP.
        command: [sh, -c, 'for i in $(seq 1 50); do curl -sf -m 2 http://web.apps.svc.cluster.local/ | grep -q "\"service\":\"web\"" && exit 0; sleep 0.2; done; exit 1']
"#
    )
}

#[test]
fn the_test_kubelet_runs_pod_specs_in_network_namespaces() {
    let name = "the_test_kubelet_runs_pod_specs_in_network_namespaces";
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

async fn until<T>(
    cluster: &Cluster,
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            diagnose(cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scenario(name: &str) {
    let Some(cluster) = Cluster::start_with(name, ClusterOptions::default()).await else {
        return;
    };
    let trellis = env!("CARGO_BIN_EXE_trellis");
    let _kubelet = Kubelet::start(
        &cluster,
        ContainerRuntime {
            trellis: trellis.into(),
        },
    )
    .await;
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(&manifests(trellis)));
    assert!(ok, "{err}");
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");

    let web = until(
        &cluster,
        "web's pod Ready",
        Duration::from_secs(60),
        async || {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        },
    )
    .await;
    let status = web.status.clone().expect("a status");
    let init = status.init_container_statuses.clone().unwrap_or_default();
    let state = |name: &str| {
        init.iter()
            .find(|s| s.name == name)
            .and_then(|s| s.state.clone())
            .unwrap_or_else(|| panic!("no status for {name}: {init:?}"))
    };
    assert_eq!(
        state("prepare").terminated.map(|t| t.exit_code),
        Some(0),
        "the init container ran to completion"
    );
    assert!(
        state("helper").running.is_some(),
        "the native sidecar keeps running"
    );
    let ip = status.pod_ip.clone().expect("a pod IP");
    assert!(ip.starts_with("10.246."), "a namespaced pod address: {ip}");

    // The Job's pod reached web by name and completed, its sidecar stopped after.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "apps");
    until(
        &cluster,
        "the Job complete",
        Duration::from_secs(60),
        async || {
            let job = jobs.get("once").await.ok()?;
            let conditions = job.status?.conditions?;
            if let Some(failed) = conditions
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
            {
                panic!("the Job failed: {failed:?}");
            }
            conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some(())
        },
    )
    .await;

    // Deleted: the app is stopped with SIGTERM (trellis echo exits on it, logging
    // nothing alarming) and the Pod goes within its grace period.
    let web_name = web.metadata.name.clone().expect("a name");
    let (ok, _, err) = cluster.kubectl_run(
        &["delete", "pod", &web_name, "-n", "apps", "--wait=false"],
        None,
    );
    assert!(ok, "{err}");
    until(
        &cluster,
        "the deleted pod gone",
        Duration::from_secs(20),
        async || match pods.get_opt(&web_name).await {
            Ok(None) => Some(()),
            _ => None,
        },
    )
    .await;
}
