//! A Gateway `tcp:` route to a service whose DestinationRule sets `tls: SIMPLE`, as a
//! user runs it: the real `trellis proxy --standalone` in front of a real TLS server
//! made here. The proxy originates TLS (with the DestinationRule's SNI), verifies the
//! server against `caCertificates`, and a certificate from another CA fails the
//! connection with `UF` in Istio's TCP metrics, never falling back to plaintext.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod common;
use common::{spawn_proxy, wait_for_line};

/// A CA and a leaf for `name` it signed: (CA PEM, leaf PEM, leaf key PEM).
fn pki(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tcp tls test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// A TLS server that answers each line with `tls SNI LINE`; returns its address and
/// the number of handshakes it completed.
fn tls_line_server(cert: &str, key: &str) -> (SocketAddr, Arc<Mutex<u32>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(Mutex::new(0));
    let counted = handshakes.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    *counted.lock().expect("count") += 1;
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                    let (read, mut write) = tokio::io::split(tls);
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = format!("tls {sni} {line}\n");
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    (addr, handshakes)
}

fn mesh_yaml(upstream: SocketAddr, ca_file: &std::path::Path) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: default}}
spec:
  host: secure.local
  trafficPolicy:
    tls:
      mode: SIMPLE
      sni: secure.example.test
      caCertificates: {ca}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [tcp-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: secure.local, port: {{number: {port}}}}}
",
        port = upstream.port(),
        ca = ca_file.display(),
    )
}

/// Sends `ping` through the gateway; the line that came back, or `None` when the
/// connection was closed without one.
async fn ping(gateway: SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    stream.write_all(b"ping\n").await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.ends_with(b"\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gateway neither answered nor closed");
    let text = String::from_utf8_lossy(&answer).trim().to_string();
    (!text.is_empty()).then_some(text)
}

async fn metrics(stats: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(stats).await.expect("stats");
    stream
        .write_all(b"GET /stats/prometheus HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tcp_route_originates_verified_tls_and_a_wrong_ca_fails_with_uf() {
    let (ca, leaf, key) = pki("secure.example.test");
    let (other_ca, _, _) = pki("secure.example.test");
    let (upstream, handshakes) = tls_line_server(&leaf, &key);
    let dir = tempfile::tempdir().expect("tempdir");
    let (good, wrong) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&good, &ca).expect("write CA");
    std::fs::write(&wrong, &other_ca).expect("write CA");
    let mesh = dir.path().join("mesh");
    std::fs::create_dir(&mesh).expect("mesh dir");
    let file = mesh.join("mesh.yaml");
    std::fs::write(&file, mesh_yaml(upstream, &good)).expect("write mesh");
    let (_proxy, addrs, out) = spawn_proxy(&[
        "proxy",
        "--standalone",
        mesh.to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        "31400=0",
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
    ]);
    let gateway = addrs.listener();

    // Verified against the DestinationRule's CA, with its SNI.
    assert_eq!(
        ping(gateway).await.as_deref(),
        Some("tls secure.example.test ping")
    );
    assert_eq!(*handshakes.lock().expect("count"), 1);

    // A CA that did not sign the server's certificate: the handshake fails, the
    // connection is closed, nothing is sent in plaintext, and the flag is UF.
    std::fs::write(&file, mesh_yaml(upstream, &wrong)).expect("edit mesh");
    wait_for_line(&out, "reloaded");
    assert_eq!(ping(gateway).await, None);
    assert_eq!(*handshakes.lock().expect("count"), 1);
    let text = metrics(addrs.stats).await;
    let failed = text.lines().find(|l| {
        l.starts_with("istio_tcp_connections_closed_total{") && l.contains("response_flags=\"UF\"")
    });
    assert!(failed.is_some_and(|l| l.ends_with(" 1")), "{text}");
    let ok = text.lines().find(|l| {
        l.starts_with("istio_tcp_connections_closed_total{") && l.contains("response_flags=\"-\"")
    });
    assert!(ok.is_some_and(|l| l.ends_with(" 1")), "{text}");
}
