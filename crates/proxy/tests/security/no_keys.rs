//! No private key in any output of a proxy that holds three: its mesh identity's
//! (made here, as a proxy makes it), a gateway TLS listener's (a Secret named by
//! `credentialName`) and a DestinationRule MUTUAL client key (files). Every admin and
//! stats page is read and searched for a PEM key header and for each key's base64
//! body; each page is also checked to carry what it should (so an empty page passes
//! nothing vacuously).

use std::collections::BTreeMap;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use trellis_compile::ProxyIdentity;

use crate::common::*;

/// A self-signed certificate for `name`: (certificate PEM, key PEM).
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn indent(pem: &str, by: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// The base64 body lines of `pem` (long enough not to match by chance).
fn body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

fn assert_no_key(page: &str, text: &str, keys: &[&str]) {
    assert!(
        !text.contains("PRIVATE KEY"),
        "{page} shows a key header:\n{text}"
    );
    for key in keys {
        for line in body_lines(key) {
            assert!(
                !text.contains(line),
                "{page} shows key material {line:?}:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn no_output_of_a_proxy_shows_a_private_key() {
    let pki = Pki::new();
    let (mesh_creds, mesh_key) =
        pki.issue_with_key("istio-system", "istio-ingressgateway-service-account", HOUR);
    let mesh_serial = mesh_creds.serial().to_string();
    assert_no_key(
        "Credentials' Debug",
        &format!("{mesh_creds:?}"),
        &[&mesh_key],
    );

    let (gw_cert, gw_key) = self_signed("bookstore.example.com");
    let (client_cert, client_key) = self_signed("gateway.client");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (cert_file, key_file, ca_file) = (
        file("client.crt", &client_cert),
        file("client.key", &client_key),
        file("ca.crt", &client_cert),
    );
    let yaml = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: bookstore-tls, namespace: istio-system}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{gw_cert_yaml}  tls.key: |
{gw_key_yaml}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookstore, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["bookstore.example.com"]
    tls: {{mode: SIMPLE, credentialName: bookstore-tls}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments, namespace: istio-system}}
spec:
  hosts: ["payments.example.com"]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payments, namespace: istio-system}}
spec:
  host: payments.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: {cert_file}
      privateKey: {key_file}
      caCertificates: {ca_file}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookstore, namespace: istio-system}}
spec:
  hosts: ["bookstore.example.com"]
  gateways: ["bookstore"]
  http:
  - route:
    - destination: {{host: payments.example.com, port: {{number: 80}}}}
"#,
        gw_cert_yaml = indent(&gw_cert, 4),
        gw_key_yaml = indent(&gw_key, 4),
    );
    let mesh = trellis_compile::Mesh::new(&load(&yaml), vec![]);
    let who = ProxyIdentity {
        name: "istio-ingressgateway".into(),
        namespace: "istio-system".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        service_account: "istio-ingressgateway-service-account".into(),
        bind_ip: None,
    };
    let (config, notes) = trellis_compile::gateway(&mesh, &who, &BTreeMap::from([(443, 0)]), 1);
    assert!(notes.is_empty(), "{notes:?}");
    // The config really holds both keys, in the listener and in the cluster.
    let tls = config
        .listeners
        .iter()
        .find_map(|l| l.tls.as_ref())
        .expect("a TLS listener");
    assert_eq!(tls.certificates[0].private_key_pem, gw_key);
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.tls.as_ref().is_some_and(|t| t.client_key_pem.is_some()))
        .expect("a cluster with a client key");
    assert_eq!(
        cluster
            .tls
            .as_ref()
            .and_then(|t| t.client_key_pem.as_deref()),
        Some(client_key.as_str())
    );
    let listener = config.listeners[0].name.clone();
    let (proxy, https) = start(
        config,
        Some(trellis_identity::CurrentCredentials::with(mesh_creds)),
        &listener,
    )
    .await;

    // One TLS handshake, so the listener has been used.
    let tcp = tokio::net::TcpStream::connect(https)
        .await
        .expect("connect");
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from_pem_slice(gw_cert.as_bytes()).expect("pem"))
            .expect("root");
        r
    };
    let client = rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("bookstore.example.com").expect("name");
    tokio::time::timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)).connect(name, tcp),
    )
    .await
    .expect("in time")
    .expect("the gateway's certificate is served");

    let keys = [mesh_key.as_str(), gw_key.as_str(), client_key.as_str()];
    let admin = proxy.admin_addr().expect("admin");
    let stats = proxy.stats_addr().expect("stats");
    let gw_cert_line = body_lines(&gw_cert)[1].to_string();
    let checks: [(&str, std::net::SocketAddr, &str, Vec<String>); 8] = [
        (
            "/config_dump",
            admin,
            "/config_dump",
            vec![
                "[redacted]".into(),
                gw_cert_line,
                "payments.example.com".into(),
            ],
        ),
        (
            "/certs",
            admin,
            "/certs",
            vec![
                mesh_serial.clone(),
                "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
                    .into(),
            ],
        ),
        (
            "/clusters",
            admin,
            "/clusters",
            vec!["payments.example.com".into()],
        ),
        ("/listeners", admin, "/listeners", vec![https.to_string()]),
        (
            "admin /stats/prometheus",
            admin,
            "/stats/prometheus",
            vec!["trellis_tls_handshakes_total".into()],
        ),
        ("/", admin, "/", vec!["/config_dump".into()]),
        (
            "stats /stats/prometheus",
            stats,
            "/stats/prometheus",
            vec!["trellis_tls_handshakes_total".into()],
        ),
        (
            "stats /metrics",
            stats,
            "/metrics",
            vec!["trellis_tls_handshakes_total".into()],
        ),
    ];
    for (page, addr, path, wants) in &checks {
        let text = fetch(*addr, path).await;
        assert_no_key(page, &text, &keys);
        for want in wants {
            assert!(
                text.contains(want.as_str()),
                "{page} lacks {want:?}:\n{text}"
            );
        }
    }
    let dump = fetch(admin, "/config_dump").await;
    assert_eq!(dump.matches("[redacted]").count(), 2, "{dump}");
}
