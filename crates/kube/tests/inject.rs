//! Sidecar injection against a real kube-apiserver and controller-manager: the API
//! server calls the injection webhook over TLS at `https://127.0.0.1:PORT/inject` (in
//! the test's network namespace; needs root, or a user namespace, for `unshare`) as
//! the ReplicaSet controller creates a Deployment's pods. In a labelled namespace they
//! get the native sidecar and the capture init container; opted out, or in an
//! unlabelled namespace, neither. With the webhook down (failurePolicy Fail), a pod in
//! an unlabelled namespace is still created and one in a labelled namespace is refused.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use trellis_identity::Ca;
use trellis_kube::inject::InjectSettings;
use trellis_kube::testing::{Cluster, isolate};
use trellis_kube::webhook::{
    ConfigurationOptions, INJECTOR_CONFIGURATION, Injector, WebhookOptions, WebhookServer,
    mutating_webhook_configuration,
};

const NAMESPACES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
";

fn deployment(namespace: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}, version: v1}}, annotations: {{{annotations}}}}}
    spec:
      containers:
      - {{name: {name}, image: {name}:1, ports: [{{containerPort: 9080}}]}}
"
    )
}

fn bare_pod(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  containers: [{{name: app, image: app:1}}]
"
    )
}

fn run(test: &str, scenario: impl std::future::Future<Output = ()>) {
    if !isolate(test) {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(scenario);
}

struct Webhook {
    ca: Arc<Ca>,
    server: WebhookServer,
    _dir: tempfile::TempDir,
}

async fn start_webhook(cluster: &Cluster) -> Webhook {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Arc::new(Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("a CA"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let mut options = WebhookOptions::for_service("istio-system", "istiod");
    options.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    options.injector = Some(Injector::new(
        cluster.client().await,
        InjectSettings::for_control_plane("istio-system", "istiod", "example.org/trellis:test"),
    ));
    let server = WebhookServer::start(ca.clone(), listener, options)
        .await
        .expect("the webhook starts");
    Webhook {
        ca,
        server,
        _dir: dir,
    }
}

async fn configure(cluster: &Cluster, webhook: &Webhook) {
    let mut options =
        ConfigurationOptions::at_url(INJECTOR_CONFIGURATION, &webhook.server.inject_url());
    options.ca_bundle = Some(webhook.ca.root_pem());
    let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client().await);
    api.create(
        &PostParams::default(),
        &mutating_webhook_configuration(&options, "default"),
    )
    .await
    .expect("the configuration is created");
}

fn apply(cluster: &Cluster, yaml: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["apply", "-f", "-"];
    args.extend(extra);
    let (ok, out, err) = cluster.kubectl_run(&args, Some(yaml));
    (ok, format!("{out}{err}"))
}

/// Applies `yaml` until kubectl's output satisfies `done` (the API server picks up a
/// webhook configuration, and the controller-manager the namespaces' service
/// accounts, within seconds).
async fn apply_until(
    cluster: &Cluster,
    yaml: &str,
    extra: &[&str],
    what: &str,
    done: impl Fn(bool, &str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = apply(cluster, yaml, extra);
        if done(ok, &out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}; kubectl said: {out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pod the ReplicaSet controller made for Deployment `app` in `namespace`.
async fn pod_of(cluster: &Cluster, namespace: &str, app: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(cluster.client().await, namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = api
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("pods list");
        if let Some(pod) = pods.items.into_iter().next() {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "no pod for {namespace}/{app}; controller-manager log:\n{}",
            cluster.log_tail("kube-controller-manager")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect()
}

/// A cluster with the namespaces applied and the webhook configured, once the API
/// server calls it: a dry run of a pod in the labelled namespace comes back injected
/// (it has read the configuration and the namespace's default service account exists).
async fn injecting_cluster(test: &str) -> Option<(Cluster, Webhook)> {
    let cluster = Cluster::start(test).await?;
    let webhook = start_webhook(&cluster).await;
    configure(&cluster, &webhook).await;
    let (ok, out) = apply(&cluster, NAMESPACES, &[]);
    assert!(ok, "{out}");
    apply_until(
        &cluster,
        &bare_pod("mesh", "probe"),
        &["--dry-run=server", "-o", "json"],
        "a pod in the labelled namespace is injected",
        |ok, out| ok && out.contains("\"istio-proxy\""),
    )
    .await;
    Some((cluster, webhook))
}

#[test]
fn deployments_get_the_sidecar_only_where_injection_is_asked_for() {
    let test = "deployments_get_the_sidecar_only_where_injection_is_asked_for";
    run(test, async {
        let Some((cluster, _webhook)) = injecting_cluster(test).await else {
            return;
        };

        let workloads = [
            deployment("mesh", "reviews", ""),
            deployment("mesh", "legacy", "sidecar.istio.io/inject: \"false\""),
            deployment("plain", "ratings", ""),
        ]
        .join("---\n");
        let (ok, out) = apply(&cluster, &workloads, &[]);
        assert!(ok, "{out}");

        let reviews = pod_of(&cluster, "mesh", "reviews").await;
        assert_eq!(init_names(&reviews), ["istio-init", "istio-proxy"]);
        let spec = reviews.spec.as_ref().expect("a spec");
        let proxy = &spec.init_containers.as_ref().expect("init containers")[1];
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        assert_eq!(proxy.image.as_deref(), Some("example.org/trellis:test"));
        assert_eq!(spec.containers.len(), 1, "the app's container alone");
        assert_eq!(spec.containers[0].name, "reviews");
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(volumes.contains(&"istio-token"), "{volumes:?}");
        assert!(volumes.contains(&"istiod-ca-cert"), "{volumes:?}");
        let labels = reviews.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("security.istio.io/tlsMode").map(String::as_str),
            Some("istio")
        );
        assert_eq!(
            labels
                .get("service.istio.io/canonical-name")
                .map(String::as_str),
            Some("reviews")
        );
        let status = reviews
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get("sidecar.istio.io/status")
            .cloned()
            .expect("the status annotation");
        assert!(status.contains("istio-proxy"), "{status}");
        // The proxy is named for the Deployment, not the ReplicaSet.
        let args = proxy.args.clone().unwrap_or_default();
        assert!(
            args.windows(2).any(|w| w == ["--name", "reviews"]),
            "{args:?}"
        );

        let legacy = pod_of(&cluster, "mesh", "legacy").await;
        assert!(init_names(&legacy).is_empty(), "opted out");
        let ratings = pod_of(&cluster, "plain", "ratings").await;
        assert!(init_names(&ratings).is_empty(), "unlabelled namespace");
        assert_eq!(ratings.spec.expect("a spec").containers.len(), 1);
    });
}

#[test]
fn with_the_webhook_down_only_pods_that_asked_for_a_sidecar_are_refused() {
    let test = "with_the_webhook_down_only_pods_that_asked_for_a_sidecar_are_refused";
    run(test, async {
        let Some((cluster, webhook)) = injecting_cluster(test).await else {
            return;
        };
        drop(webhook);

        let out = apply_until(
            &cluster,
            &bare_pod("mesh", "refused"),
            &[],
            "a pod in the labelled namespace is refused",
            |ok, out| !ok && out.contains("failed calling webhook"),
        )
        .await;
        assert!(
            out.contains("sidecar-injector.istio.io"),
            "refused by the injector's webhook: {out}"
        );
        let out = apply_until(
            &cluster,
            &bare_pod("plain", "unaffected"),
            &[],
            "a pod in an unlabelled namespace is created",
            |ok, _| ok,
        )
        .await;
        assert!(out.contains("pod/unaffected created"), "{out}");
        let (ok, out, err) = cluster.kubectl_run(
            &["get", "pod", "unaffected", "-n", "plain", "-o", "name"],
            None,
        );
        assert!(ok && out.contains("pod/unaffected"), "{out}{err}");
        // An opted-out pod in the labelled namespace never reaches the webhook either.
        let opted_out = bare_pod("mesh", "optout").replace(
            "labels: {app: optout}",
            "labels: {app: optout, sidecar.istio.io/inject: \"false\"}",
        );
        let (ok, out) = apply(&cluster, &opted_out, &[]);
        assert!(ok, "{out}");
    });
}
