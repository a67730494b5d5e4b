//! TLS termination at the gateway, as a user runs it: the seed's Gateway (an HTTPS
//! server with `credentialName: app-tls`), a Secret made here with rcgen, the real
//! `trellis proxy --standalone` and `trellis echo` processes, and real TLS clients on
//! loopback (HTTP/1.1 and h2 by ALPN, a wrong SNI, plain HTTP on the TLS port, and a
//! certificate rotated by editing the Secret).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{spawn_echo, spawn_proxy, wait_for_line};

/// A test CA and a leaf for `names` it signed: (CA PEM, leaf chain PEM, leaf key PEM).
fn pki(names: &[&str]) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "trellis test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

fn secret_yaml(cert: &str, key: &str) -> String {
    // JSON strings are YAML double-quoted scalars.
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {}\n  tls.key: {}\n",
        serde_json::to_string(cert).expect("json"),
        serde_json::to_string(key).expect("json"),
    )
}

fn routes_yaml(echo: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.example.com]
  gateways: [app-gateway]
  http:
  - route:
    - destination: {{host: echo.local}}
",
        port = echo.port()
    )
}

fn connector(ca_pem: &str, alpn: &[&str]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(addr: SocketAddr, ca: &str, sni: &str, alpn: &[&str]) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio::time::timeout(
        Duration::from_secs(10),
        connector(ca, alpn).connect(name, tcp),
    )
    .await
    .expect("handshake finishes")
}

/// GET `/tls` over an established TLS stream, HTTP/2 when ALPN chose it.
async fn get(stream: Tls) -> (u16, serde_json::Value) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("https://app.example.com/tls")
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender.send_request(req).await.expect("response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/tls")
            .header("host", "app.example.com")
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender.send_request(req).await.expect("response")
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: app.example.com\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_gateway_terminates_tls_by_sni_and_alpn_and_rotates_certificates() {
    let seed = std::path::Path::new("/work/shared/seed/examples/01-gateway.yaml");
    let Ok(gateway) = std::fs::read_to_string(seed) else {
        println!("skipped: {} not found", seed.display());
        return;
    };
    let (_echo, echo) = spawn_echo();
    let (ca, cert, key) = pki(&["app.example.com"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("01-gateway.yaml"), gateway).expect("write");
    std::fs::write(dir.path().join("routes.yaml"), routes_yaml(echo)).expect("write");
    let secret = dir.path().join("secret.yaml");
    std::fs::write(&secret, secret_yaml(&cert, &key)).expect("write");
    let (_proxy, addrs, out) = spawn_proxy(&[
        "proxy",
        "--standalone",
        dir.path().to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        "80=0",
        "--port-map",
        "443=0",
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
    ]);
    let tls_addr = addrs.listener_named("0.0.0.0_443");
    let http_addr = addrs.listener_named("0.0.0.0_80");
    // Workers bind just after the ready line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(tls_addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {tls_addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // HTTP/1.1 (ALPN http/1.1) with SNI app.example.com reaches the upstream as https.
    let stream = handshake(tls_addr, &ca, "app.example.com", &["http/1.1"])
        .await
        .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get(stream).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["path"], "/tls", "{body}");
    assert_eq!(
        body["request"]["headers"]["x-forwarded-proto"], "https",
        "{body}"
    );

    // HTTP/2 chosen by ALPN.
    let stream = handshake(tls_addr, &ca, "app.example.com", &["h2", "http/1.1"])
        .await
        .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get(stream).await;
    assert_eq!(status, 200, "{body}");

    // An unknown SNI gets the default (first) certificate, which the client then
    // refuses for the name it asked for: the server did not just drop it.
    let err = handshake(tls_addr, &ca, "wrong.example.org", &["h2"])
        .await
        .expect_err("the default certificate does not name wrong.example.org");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned();
    assert!(
        matches!(
            inner,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );

    // Plain HTTP on the TLS port: closed without an HTTP answer, and the proxy lives on.
    let reply = plain_get(tls_addr, "/").await;
    assert!(!reply.starts_with("HTTP/"), "{reply}");
    let stream = handshake(tls_addr, &ca, "app.example.com", &["http/1.1"])
        .await
        .expect("TLS still works");
    assert_eq!(get(stream).await.0, 200);

    // The plain HTTP server of the same Gateway keeps working.
    let reply = plain_get(http_addr, "/plain").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Handshakes are counted.
    let metrics = plain_get(addrs.stats, "/stats/prometheus").await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(counter("trellis_tls_handshakes_total "), 3);
    // The wrong SNI and the plain request, plus the readiness probes' empty connections.
    assert!(counter("trellis_tls_handshake_errors_total ") >= 2);

    // The admin config dump shows the TLS settings but not the private key.
    let dump = plain_get(addrs.admin, "/config_dump").await;
    assert!(dump.contains("certChainPem"), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");

    // Rotating the Secret: new connections get the new certificate.
    let (ca2, cert2, key2) = pki(&["app.example.com"]);
    std::fs::write(&secret, secret_yaml(&cert2, &key2)).expect("write");
    wait_for_line(&out, "reloaded");
    let stream = handshake(tls_addr, &ca2, "app.example.com", &["h2"])
        .await
        .expect("the new certificate is served");
    assert_eq!(get(stream).await.0, 200);
    assert!(
        handshake(tls_addr, &ca, "app.example.com", &["h2"])
            .await
            .is_err(),
        "the old certificate is gone"
    );

    // Removing the Secret skips the HTTPS server with a note and keeps port 80 serving.
    std::fs::remove_file(&secret).expect("remove");
    let note = wait_for_line(&out, "app-tls");
    assert!(note.contains("443"), "{note}");
    let reply = plain_get(http_addr, "/plain").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
