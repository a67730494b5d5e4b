//! Who may talk to the control plane, tried as an attacker would, over real TLS on
//! loopback: the config stream without a workload certificate, a CSR without a
//! credential, a bootstrap token used twice (also after a restart), a Hello for a
//! workload the certificate does not name, a client that does not know the mesh
//! root, and the HTTP API without its token. Each is refused; the legitimate path
//! works.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use trellis_compile::{Inbound, ProxyIdentity};
use trellis_control::proto::mesh_config_client::MeshConfigClient;
use trellis_control::proto::{ProxyMessage, SignRequest, proxy_message::Message};
use trellis_control::security::SecurityOptions;
use trellis_control::security::tls;
use trellis_control::{Options, ProxySpec};
use trellis_identity::{SpiffeId, Trust};
use trellis_model::Role;

fn start(dir: &std::path::Path) -> trellis_control::Running {
    trellis_control::spawn(Options {
        config_dir: None,
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        state_file: None,
        security: SecurityOptions::new(dir.join("security")),
    })
    .expect("control plane")
}

fn control_plane_id() -> SpiffeId {
    SpiffeId::new("istio-system", "trellis-control-plane").expect("id")
}

fn trust(running: &trellis_control::Running) -> Arc<Trust> {
    Trust::from_pem("cluster.local", &running.security.ca.root_pem()).expect("trust")
}

/// A CSR for `id` with a fresh key.
fn csr(id: &SpiffeId) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    trellis_identity::manager::csr_for(id, &key).expect("csr")
}

fn spec(namespace: &str, service_account: &str) -> ProxySpec {
    ProxySpec {
        id: "productpage-0".into(),
        role: Role::Sidecar,
        identity: ProxyIdentity {
            name: "productpage".into(),
            namespace: namespace.into(),
            labels: BTreeMap::new(),
            service_account: service_account.into(),
            bind_ip: Some("127.0.0.1".parse().expect("ip")),
        },
        pod_ip: None,
        outbound: "127.0.0.1:15001".parse().expect("addr"),
        inbound: Vec::<Inbound>::new(),
        port_map: BTreeMap::new(),
        named_ports: BTreeMap::new(),
        admin: None,
        capture: false,
        capture_ipv6: false,
    }
}

/// A client that pins the mesh root but presents no certificate.
async fn anonymous(
    address: &str,
    trust: Arc<Trust>,
) -> MeshConfigClient<tonic::transport::Channel> {
    let config = trellis_identity::bootstrap_client_config(trust, &[control_plane_id()], &[b"h2"])
        .expect("config");
    MeshConfigClient::new(tls::connect(address, config).await.expect("connect"))
}

fn sign_with_token(csr_pem: String, token: &str) -> tonic::Request<SignRequest> {
    let mut request = tonic::Request::new(SignRequest { csr_pem });
    request.metadata_mut().insert(
        "authorization",
        format!("Bootstrap {token}").parse().expect("ascii"),
    );
    request
}

/// Opens the config stream and reads its first answer.
async fn open_stream(
    client: &mut MeshConfigClient<tonic::transport::Channel>,
    spec: &ProxySpec,
) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(ProxyMessage {
        message: Some(Message::Hello(spec.to_hello(0))),
    })
    .expect("send");
    let mut pushes = client
        .stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    pushes.message().await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_stream_and_the_ca_refuse_callers_without_a_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let address = running.grpc.to_string();
    let mut client = anonymous(&address, trust(&running)).await;

    // No workload certificate: the stream is refused.
    let refused = open_stream(&mut client, &spec("shop", "bookinfo")).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );

    // A CSR with no credential at all, and with a token that was never minted.
    let id = SpiffeId::new("shop", "bookinfo").expect("id");
    let refused = client.sign(SignRequest { csr_pem: csr(&id) }).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
    let forged = client
        .sign(sign_with_token(csr(&id), "made-up-token"))
        .await;
    assert_eq!(
        forged.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_token_works_once_for_its_own_identity_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let address = running.grpc.to_string();
    let who = trellis_identity::WorkloadIdentity::new("shop", "bookinfo").expect("who");
    let token = running
        .security
        .tokens
        .mint(&who, Duration::from_secs(60))
        .expect("mint");
    let mut client = anonymous(&address, trust(&running)).await;

    // The CSR asks for another service account's identity: the certificate names the
    // token's identity, not the CSR's.
    let admin = SpiffeId::new("shop", "admin").expect("id");
    let signed = client
        .sign(sign_with_token(csr(&admin), token.secret()))
        .await
        .expect("signed")
        .into_inner();
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(signed.chain_pem.as_bytes())
        .next()
        .expect("a leaf")
        .expect("pem");
    let ids = trellis_identity::cert::spiffe_id_of(&leaf).expect("spiffe id");
    assert_eq!(
        ids.to_string(),
        "spiffe://cluster.local/ns/shop/sa/bookinfo"
    );

    // Used again: refused.
    let reused = client
        .sign(sign_with_token(csr(&admin), token.secret()))
        .await;
    assert_eq!(
        reused.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );

    // A restarted control plane (same state directory) keeps its CA and still
    // refuses the spent token.
    let root = running.security.ca.root_pem();
    drop(running);
    let restarted = start(dir.path());
    assert_eq!(
        restarted.security.ca.root_pem(),
        root,
        "the CA survives a restart"
    );
    let mut client = anonymous(&restarted.grpc.to_string(), trust(&restarted)).await;
    let reused = client
        .sign(sign_with_token(csr(&admin), token.secret()))
        .await;
    assert_eq!(
        reused.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_opens_the_stream_only_for_its_own_workload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let address = running.grpc.to_string();
    let identity = running
        .security
        .client_identity(&address, "shop", "bookinfo")
        .expect("identity");
    tokio::time::timeout(Duration::from_secs(5), identity.manager.ready())
        .await
        .expect("a certificate");
    let channel = tls::connect(&address, identity.stream_config().expect("config"))
        .await
        .expect("connect");
    let mut client = MeshConfigClient::new(channel);
    // Another service account's Hello on this certificate: refused.
    let other = open_stream(&mut client, &spec("shop", "payments")).await;
    assert_eq!(
        other.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    // Its own: a config arrives.
    open_stream(&mut client, &spec("shop", "bookinfo"))
        .await
        .expect("the proxy's own config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_know_the_mesh_root_cannot_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    // Another mesh's root: the control plane's certificate does not verify.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other_ca =
        trellis_identity::Ca::load_or_create(&elsewhere.path().join("ca"), "cluster.local")
            .expect("ca");
    let other = Trust::from_pem("cluster.local", &other_ca.root_pem()).expect("trust");
    let config = trellis_identity::bootstrap_client_config(other, &[control_plane_id()], &[b"h2"])
        .expect("config");
    let result = tls::connect(&running.grpc.to_string(), config).await;
    let failed = match result {
        Err(_) => true,
        Ok(channel) => MeshConfigClient::new(channel)
            .sign(SignRequest {
                csr_pem: String::new(),
            })
            .await
            .is_err_and(|s| {
                s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown
            }),
    };
    assert!(failed, "a client pinning another root must not get through");
}

/// One HTTP/1.1 request to the API; (status, body).
async fn api(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_needs_its_token_and_says_where_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let file = running.security.api_token_file().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let token = std::fs::read_to_string(&file).expect("token");

    let (status, body) = api(running.http, "/api/v1/proxies", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(&file.display().to_string()), "{body}");
    let (status, _) = api(running.http, "/api/v1/resources", Some("not-the-token")).await;
    assert_eq!(status, 401);
    let (status, body) = api(running.http, "/api/v1/proxies", Some(token.trim())).await;
    assert_eq!(status, 200, "{body}");
    // Metrics stay open for Prometheus.
    let (status, _) = api(running.http, "/metrics", None).await;
    assert_eq!(status, 200);
}

/// A gateway whose HTTPS server takes its certificate from a Secret.
const HTTPS_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: app-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: app-tls}
    hosts: [app.example.com]
";

fn gateway_spec() -> ProxySpec {
    ProxySpec {
        id: "istio-ingressgateway".into(),
        role: Role::Gateway,
        identity: ProxyIdentity {
            name: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            labels: BTreeMap::from([("istio".into(), "ingressgateway".into())]),
            service_account: "istio-ingressgateway-service-account".into(),
            bind_ip: Some("127.0.0.1".parse().expect("ip")),
        },
        pod_ip: None,
        outbound: "127.0.0.1:15001".parse().expect("addr"),
        inbound: Vec::new(),
        port_map: BTreeMap::from([(443, 0)]),
        named_ports: BTreeMap::new(),
        admin: None,
        capture: false,
        capture_ipv6: false,
    }
}

/// A stream as `identity` for `spec`: every push message received within `limit`.
async fn pushes(
    address: &str,
    identity: &trellis_control::security::client::ClientIdentity,
    spec: &ProxySpec,
) -> (
    MeshConfigClient<tonic::transport::Channel>,
    Vec<trellis_control::proto::Push>,
    // The open stream (and its sender): the proxy stays connected while held.
    (
        tonic::Streaming<trellis_control::proto::Push>,
        tokio::sync::mpsc::UnboundedSender<ProxyMessage>,
    ),
) {
    tokio::time::timeout(Duration::from_secs(5), identity.manager.ready())
        .await
        .expect("a certificate");
    let channel = tls::connect(address, identity.stream_config().expect("config"))
        .await
        .expect("connect");
    let mut client = MeshConfigClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(ProxyMessage {
        message: Some(Message::Hello(spec.to_hello(0))),
    })
    .expect("send");
    let mut stream = client
        .stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut got = Vec::new();
    while let Ok(Ok(Some(push))) =
        tokio::time::timeout(Duration::from_millis(500), stream.message()).await
    {
        let more = push.more;
        got.push(push);
        if !more {
            break;
        }
    }
    (client, got, (stream, tx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_key_never_travels_in_a_push_and_only_that_gateway_may_fetch_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["app.example.com".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-tls, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {}\n  tls.key: {}\n",
        serde_json::to_string(&cert.pem()).expect("json"),
        serde_json::to_string(&key.serialize_pem()).expect("json"),
    );
    let mesh = dir.path().join("mesh");
    std::fs::create_dir(&mesh).expect("mkdir");
    std::fs::write(
        mesh.join("gateway.yaml"),
        format!("{HTTPS_GATEWAY}---\n{secret}"),
    )
    .expect("write");
    let running = trellis_control::spawn(Options {
        config_dir: Some(mesh),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        state_file: None,
        security: SecurityOptions::new(dir.path().join("security")),
    })
    .expect("control plane");
    let address = running.grpc.to_string();
    let spec = gateway_spec();
    let identity = running
        .security
        .client_identity(
            &address,
            "istio-system",
            "istio-ingressgateway-service-account",
        )
        .expect("identity");
    let (mut client, got, _connected) = pushes(&address, &identity, &spec).await;
    assert!(!got.is_empty(), "the gateway got its config");
    let pem_body: String = key
        .serialize_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut reference = None;
    for push in &got {
        for r in &push.resources {
            let text = String::from_utf8_lossy(&r.json);
            assert!(!text.contains("PRIVATE KEY"), "a key in a push: {text}");
            assert!(!text.contains(&pem_body[..40]), "a key's body in a push");
            if let Some(at) = text.find(trellis_control::keys::PREFIX) {
                let rest = &text[at..];
                reference = rest.split('"').next().map(str::to_string);
            }
        }
    }
    let reference = reference.expect("the listener names its key by reference");
    // The gateway itself gets the key over its authenticated connection.
    let answer = client
        .secrets(trellis_control::proto::SecretsRequest {
            names: vec![reference.clone()],
        })
        .await
        .expect("the gateway's own key")
        .into_inner();
    assert_eq!(answer.secrets.get(&reference), Some(&key.serialize_pem()));

    // Another workload's certificate may not fetch it.
    let other = running
        .security
        .client_identity(&address, "shop", "bookinfo")
        .expect("identity");
    tokio::time::timeout(Duration::from_secs(5), other.manager.ready())
        .await
        .expect("a certificate");
    let channel = tls::connect(&address, other.stream_config().expect("config"))
        .await
        .expect("connect");
    let refused = MeshConfigClient::new(channel)
        .secrets(trellis_control::proto::SecretsRequest {
            names: vec![reference],
        })
        .await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
}
