//! The validating webhook against a real kube-apiserver, which calls it over TLS at
//! `https://127.0.0.1:PORT/validate` (from inside the test's network namespace):
//! kubectl's refusals carry `trellis validate`'s line, the API server trusts the
//! webhook only once the caBundle is the mesh root, and with the webhook down Istio
//! writes are refused (failurePolicy Fail) while deletes go through.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use trellis_identity::Ca;
use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds, isolate};
use trellis_kube::webhook::{
    ConfigurationOptions, WebhookOptions, WebhookServer, keep_ca_bundle,
    validating_webhook_configuration,
};

const CONFIGURATION: &str = "trellis-validator-test";

const MISSPELT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      wieght: 100
";

const BAD_REGEX: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: \"(\"}
    route:
    - destination: {host: reviews}
";

const VALID: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
";

const CUSTOM_POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules:
  - to:
    - operation: {paths: [/admin]}
";

fn run(test: &str, scenario: impl std::future::Future<Output = ()>) {
    if !isolate(test) {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(scenario);
}

/// A cluster with Istio's CRDs (VirtualService's spec keeping unknown fields, as
/// Trellis's CRDs do), or `None` where the fixtures or the corpus are missing.
async fn cluster(test: &str) -> Option<Cluster> {
    let cluster = Cluster::start_with(
        test,
        ClusterOptions {
            controller_manager: false,
        },
    )
    .await?;
    install_istio_crds(&cluster, test, &["VirtualService"]).then_some(cluster)
}

struct Webhook {
    ca: Arc<Ca>,
    server: WebhookServer,
    _dir: tempfile::TempDir,
}

async fn start_webhook() -> Webhook {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Arc::new(Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("a CA"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let mut options = WebhookOptions::for_service("istio-system", "trellis-control-plane");
    options.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let server = WebhookServer::start(ca.clone(), listener, options)
        .await
        .expect("the webhook starts");
    Webhook {
        ca,
        server,
        _dir: dir,
    }
}

async fn create_configuration(cluster: &Cluster, url: &str, ca_bundle: Option<String>) {
    let mut options = ConfigurationOptions::at_url(CONFIGURATION, url);
    options.ca_bundle = ca_bundle;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client().await);
    api.create(
        &PostParams::default(),
        &validating_webhook_configuration(&options),
    )
    .await
    .expect("the configuration is created");
}

/// `kubectl apply` of `yaml` (server-side dry run unless `store`).
fn apply(cluster: &Cluster, yaml: &str, store: bool) -> (bool, String) {
    let mut args = vec!["apply", "-f", "-"];
    if !store {
        args.push("--dry-run=server");
    }
    let (ok, out, err) = cluster.kubectl_run(&args, Some(yaml));
    (ok, format!("{out}{err}"))
}

/// Applies `yaml` until kubectl's output satisfies `done` (the API server picks up
/// webhook configurations and their caBundle within a second or two).
async fn apply_until(
    cluster: &Cluster,
    yaml: &str,
    what: &str,
    done: impl Fn(bool, &str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = apply(cluster, yaml, false);
        if done(ok, &out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}; kubectl said: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn denied(ok: bool, out: &str) -> bool {
    !ok && out.contains("admission webhook \"validation.istio.io\" denied the request")
}

fn call_failed(ok: bool, out: &str) -> bool {
    !ok && out.contains("failed calling webhook")
}

#[test]
fn api_server_trusts_the_webhook_once_the_ca_bundle_is_the_mesh_root() {
    run(
        "api_server_trusts_the_webhook_once_the_ca_bundle_is_the_mesh_root",
        async {
            let test = "api_server_trusts_the_webhook_once_the_ca_bundle_is_the_mesh_root";
            let Some(cluster) = cluster(test).await else {
                return;
            };
            let webhook = start_webhook().await;
            let stranger = tempfile::tempdir().expect("a temporary directory");
            let other = Ca::load_or_create(stranger.path(), "cluster.local").expect("a CA");
            create_configuration(&cluster, &webhook.server.url(), Some(other.root_pem())).await;
            let out = apply_until(
                &cluster,
                VALID,
                "a wrong caBundle fails the call",
                call_failed,
            )
            .await;
            assert!(
                out.contains("x509") || out.contains("certificate"),
                "the call fails on the certificate: {out}"
            );
            let task = tokio::spawn(keep_ca_bundle(
                cluster.client().await,
                CONFIGURATION.into(),
                webhook.server.certificates(),
            ));
            apply_until(
                &cluster,
                VALID,
                "the mesh root makes the call succeed",
                |ok, _| ok,
            )
            .await;
            let api: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client().await);
            let config = api.get(CONFIGURATION).await.expect("the configuration");
            let bundle = config.webhooks.expect("webhooks")[0]
                .client_config
                .ca_bundle
                .clone()
                .expect("a caBundle");
            assert_eq!(String::from_utf8_lossy(&bundle.0), webhook.ca.root_pem());
            task.abort();
        },
    );
}

#[test]
fn kubectl_apply_is_refused_with_validates_message() {
    run("kubectl_apply_is_refused_with_validates_message", async {
        let test = "kubectl_apply_is_refused_with_validates_message";
        let Some(cluster) = cluster(test).await else {
            return;
        };
        let webhook = start_webhook().await;
        create_configuration(&cluster, &webhook.server.url(), Some(webhook.ca.root_pem())).await;
        let out = apply_until(&cluster, MISSPELT, "the misspelt field is refused", denied).await;
        assert!(
            out.contains(
                "VirtualService default/reviews: spec.http[0].route[0].wieght: unknown field `wieght` (did you mean `weight`?)"
            ),
            "{out}"
        );
        let (ok, out) = apply(&cluster, BAD_REGEX, true);
        assert!(denied(ok, &out), "{out}");
        assert!(
            out.contains("VirtualService default/reviews: spec.http[0].match[0].uri.regex: "),
            "{out}"
        );
        let (ok, out) = apply(&cluster, VALID, true);
        assert!(ok, "a valid VirtualService is accepted: {out}");
        let (ok, out) = apply(&cluster, CUSTOM_POLICY, true);
        assert!(ok, "a CUSTOM policy is accepted: {out}");
        assert!(
            out.contains("Warning: AuthorizationPolicy default/ext-authz: spec"),
            "with validate's warning: {out}"
        );
        let (ok, out, err) =
            cluster.kubectl_run(&["get", "virtualservice", "reviews", "-o", "name"], None);
        assert!(ok && out.contains("reviews"), "{out}{err}");
    });
}

#[test]
fn the_webhook_answers_a_review_over_tls_with_validates_line() {
    // Istio's CRDs as they are refuse `wieght` in the API server itself, before any
    // webhook; the webhook's own answer is checked here, over the same TLS.
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let webhook = start_webhook().await;
            let vs: serde_json::Value = serde_json::json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [
                    {"destination": {"host": "reviews"}, "wieght": 100}]}]},
            });
            let review = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "3d1f0b62-5d59-4a3c-9d7e-6c1c2b1a0001",
                    "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                    "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                    "name": "reviews",
                    "namespace": "default",
                    "operation": "CREATE",
                    "userInfo": {"username": "admin"},
                    "object": vs,
                },
            });
            let answer = post(&webhook, &review).await;
            assert_eq!(answer["kind"], "AdmissionReview");
            let response = &answer["response"];
            assert_eq!(response["uid"], "3d1f0b62-5d59-4a3c-9d7e-6c1c2b1a0001");
            assert_eq!(response["allowed"], false);
            assert_eq!(
                response["status"]["message"],
                "VirtualService default/reviews: spec.http[0].route[0].wieght: unknown field `wieght` (did you mean `weight`?)"
            );
        });
}

/// POSTs `review` to the webhook over TLS, trusting only the mesh root.
async fn post(webhook: &Webhook, review: &serde_json::Value) -> serde_json::Value {
    use http_body_util::{BodyExt, Full};
    let mut roots = rustls::RootCertStore::empty();
    for root in webhook.ca.roots() {
        roots.add(root.clone()).expect("the mesh root");
    }
    let config = rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(webhook.server.local_addr())
        .await
        .expect("the webhook's port");
    let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the certificate names 127.0.0.1 and chains to the mesh root");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/1.1");
    tokio::spawn(connection);
    let request = http::Request::post("/validate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(review.to_string())))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

#[test]
fn with_the_webhook_down_istio_writes_fail_and_deletes_work() {
    run(
        "with_the_webhook_down_istio_writes_fail_and_deletes_work",
        async {
            let test = "with_the_webhook_down_istio_writes_fail_and_deletes_work";
            let Some(cluster) = cluster(test).await else {
                return;
            };
            let webhook = start_webhook().await;
            create_configuration(&cluster, &webhook.server.url(), Some(webhook.ca.root_pem()))
                .await;
            apply_until(&cluster, MISSPELT, "the webhook is called", denied).await;
            let (ok, out) = apply(&cluster, VALID, true);
            assert!(ok, "{out}");
            drop(webhook);
            let changed = VALID.replace("hosts: [reviews]", "hosts: [reviews, ratings]");
            let out = apply_until(&cluster, &changed, "an update fails closed", call_failed).await;
            assert!(
                !out.contains("denied the request"),
                "refused for want of the webhook, not judged: {out}"
            );
            let (ok, out, err) = cluster.kubectl_run(
                &["delete", "virtualservice", "reviews", "--wait=false"],
                None,
            );
            assert!(ok, "a delete needs no webhook: {out}{err}");
        },
    );
}
