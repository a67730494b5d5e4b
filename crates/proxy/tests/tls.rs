//! TLS at the proxy on loopback with certificates made here (rcgen): a certificate per
//! SNI name, the https scheme seen by routes, a live certificate swap, plain bytes on a
//! TLS port, and passthrough routing by the ClientHello's server name.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_model::*;

/// A CA and leaves it signed: (CA PEM, [(chain PEM, key PEM)]).
fn pki(leaves: &[&[&str]]) -> (String, Vec<(String, String)>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "proxy test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaves = leaves
        .iter()
        .map(|names| {
            let key = KeyPair::generate().expect("key");
            // Host names, and URIs (SPIFFE IDs) as URI alternative names.
            let (uris, hosts): (Vec<&str>, Vec<&str>) =
                names.iter().partition(|n| n.contains("://"));
            let mut params =
                CertificateParams::new(hosts.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .expect("params");
            for uri in uris {
                params.subject_alt_names.push(rcgen::SanType::URI(
                    rcgen::string::Ia5String::try_from(uri).expect("uri"),
                ));
            }
            let cert = params.signed_by(&key, &issuer).expect("leaf");
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca_pem, leaves)
}

fn tls_server(certs: &[(String, String)], hosts: &[&[&str]]) -> TlsServer {
    TlsServer {
        mode: TlsMode::Simple,
        certificates: certs
            .iter()
            .zip(hosts)
            .map(|((cert, key), hosts)| TlsCertificate {
                sni_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                cert_chain_pem: cert.clone(),
                private_key_pem: key.clone(),
            })
            .collect(),
        alpn: vec!["h2".into(), "http/1.1".into()],
        client_ca_pem: None,
    }
}

fn client_config(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// An HTTP/1.1 GET over TLS with SNI `sni`; the status and x-upstream, or the handshake error.
async fn get_tls(
    addr: SocketAddr,
    ca: &str,
    sni: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca)));
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "reviews")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let _ = response.into_body().collect().await;
    Ok((status, upstream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_follow_sni_scheme_is_https_and_swaps_apply() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let port = 0; // the OS picks; `start` says which
    let (ca, leaves) = pki(&[&["app.example.com"], &["x.api.example.com"]]);
    let hosts: &[&[&str]] = &[&["app.example.com"], &["*.api.example.com"]];
    let routes = vec![
        Route {
            name: "https-only".into(),
            matches: vec![RouteMatch {
                scheme: Some(StringMatch::Exact("https".into())),
                ..Default::default()
            }],
            action: forward(&[("v2", 100)]),
            ..Default::default()
        },
        Route {
            name: "rest".into(),
            action: forward(&[("v1", 100)]),
            ..Default::default()
        },
    ];
    let clusters = vec![
        cluster("v1", vec![endpoint(v1.addr, "v1")]),
        cluster("v2", vec![endpoint(v2.addr, "v2")]),
    ];
    let mut cfg = config(port, routes, clusters);
    cfg.listeners[0].tls = Some(tls_server(&leaves, hosts));
    let (proxy, addr) = start(cfg.clone(), false).await;

    // Each name gets its own certificate (each leaf names only its host), and the
    // request is https to the routes.
    for sni in ["app.example.com", "x.api.example.com"] {
        let r = get_tls(addr, &ca, sni, "/").await.expect(sni);
        assert_eq!(r, (200, "v2".to_string()), "{sni}");
    }
    // An unknown name gets the first certificate, which does not name it.
    let err = get_tls(addr, &ca, "other.example.net", "/")
        .await
        .expect_err("default certificate");
    assert!(err.to_lowercase().contains("not valid for name"), "{err}");

    // Plain HTTP on the TLS port is closed without an answer; TLS keeps working.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        get_tls(addr, &ca, "app.example.com", "/")
            .await
            .expect("tls")
            .0,
        200
    );

    // A swapped config swaps certificates for new connections.
    let (ca2, leaves2) = pki(&[&["app.example.com"]]);
    let mut next = cfg.clone();
    next.version = 2;
    next.listeners[0].tls = Some(tls_server(&leaves2, &[&["app.example.com"]]));
    proxy.update(next).expect("update");
    assert_eq!(
        get_tls(addr, &ca2, "app.example.com", "/")
            .await
            .expect("new cert")
            .0,
        200
    );
    assert!(get_tls(addr, &ca, "app.example.com", "/").await.is_err());

    // A certificate whose key does not match is refused with the config (a NACK).
    let mut bad = cfg;
    bad.version = 3;
    if let Some(tls) = &mut bad.listeners[0].tls {
        tls.certificates[0].private_key_pem = leaves2[0].1.clone();
    }
    let err = proxy
        .update(bad)
        .expect_err("mismatched key refused")
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(proxy.version(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_https_drops_the_http_port() {
    let port = 0; // the OS picks; `start` says which
    let routes = vec![Route {
        name: "https-redirect".into(),
        action: Action::Redirect(Redirect {
            scheme: Some("https".into()),
            status: 301,
            ..Default::default()
        }),
        ..Default::default()
    }];
    let (_proxy, addr) = start(config(port, routes, vec![]), false).await;
    let mut client = Client::new(addr);
    let r = client
        .get("reviews:80", "/a?b=1", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").map(|v| v.as_bytes()),
        Some(&b"https://reviews/a?b=1"[..])
    );
}

/// A TCP server that answers any connection with its name.
async fn named_tcp(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(name.as_bytes()).await;
            });
        }
    });
    addr
}

/// Sends a real ClientHello for `sni` and returns what the upstream answered.
async fn passthrough(addr: SocketAddr, sni: &str) -> String {
    let mut conn = rustls::ClientConnection::new(
        Arc::new(client_config("")),
        ServerName::try_from(sni.to_string()).expect("name"),
    )
    .expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&hello).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_by_client_hello_server_name() {
    let (a, b) = (named_tcp("a").await, named_tcp("b").await);
    let port = 0; // the OS picks; `start` says which
    let mut cfg = config(
        port,
        vec![],
        vec![
            cluster("a", vec![endpoint(a, "a")]),
            cluster("b", vec![endpoint(b, "b")]),
        ],
    );
    let route = |sni: &str, c: &str| TcpRoute {
        name: c.into(),
        sni: vec![sni.into()],
        clusters: vec![WeightedCluster {
            cluster: c.into(),
            weight: 100,
            ..Default::default()
        }],
    };
    cfg.listeners[0].protocol = ListenerProtocol::Tcp;
    cfg.listeners[0].route_table = None;
    cfg.listeners[0].tcp_routes = vec![route("a.example.com", "a"), route("*.b.example.com", "b")];
    let (_proxy, addr) = start(cfg, false).await;
    assert_eq!(passthrough(addr, "a.example.com").await, "a");
    assert_eq!(passthrough(addr, "x.b.example.com").await, "b");
    // No route for this name: closed without reaching an upstream.
    assert_eq!(passthrough(addr, "c.example.com").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let client_id = "spiffe://cluster.local/ns/shop/sa/client";
    let (ca, leaves) = pki(&[&["app.example.com"], &["client.example.com", client_id]]);
    let mut cfg = config(
        port,
        vec![Route {
            action: forward(&[("v1", 100)]),
            ..Default::default()
        }],
        vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
    );
    let mut tls = tls_server(&leaves[..1], &[&["app.example.com"]]);
    tls.mode = TlsMode::Mutual;
    tls.client_ca_pem = Some(ca.clone());
    cfg.listeners[0].tls = Some(tls);
    cfg.listeners[0].direction = Direction::Gateway;
    let (_proxy, addr) = start(cfg, false).await;

    // Without a client certificate: refused (the error surfaces at the first read in TLS 1.3).
    let anonymous = get_tls(addr, &ca, "app.example.com", "/").await;
    assert!(anonymous.is_err(), "{anonymous:?}");

    // With a certificate from the CA: served.
    let (cert, key) = &leaves[1];
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client cert");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("app.example.com").expect("name"), tcp)
        .await
        .expect("mutual handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::builder()
                .uri("/")
                .header("host", "reviews")
                // What the client claims is replaced by what its certificate says.
                .header(
                    "x-forwarded-client-cert",
                    "URI=spiffe://cluster.local/ns/x/sa/admin",
                )
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let seen = response
        .headers()
        .get("x-seen-xfcc")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(seen.starts_with("Hash="), "{seen}");
    assert!(seen.contains(&format!(";URI={client_id}")), "{seen}");
    assert!(seen.contains(";DNS=client.example.com"), "{seen}");
    assert!(!seen.contains("sa/admin"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_drops_a_client_certificate_header_it_did_not_verify() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let mut cfg = config(
        port,
        vec![Route {
            action: forward(&[("v1", 100)]),
            ..Default::default()
        }],
        vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
    );
    cfg.listeners[0].direction = Direction::Gateway;
    let (_proxy, addr) = start(cfg, false).await;
    let reply = Client::new(addr)
        .get(
            "reviews",
            "/",
            &[(
                "x-forwarded-client-cert",
                "URI=spiffe://cluster.local/ns/x/sa/admin",
            )],
        )
        .await
        .expect("request");
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.get("x-seen-xfcc").is_none(),
        "{:?}",
        reply.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_off_after_the_handshake_timeout() {
    let port = 0; // the OS picks; `start` says which
    let (ca, leaves) = pki(&[&["app.example.com"]]);
    let mut cfg = config(port, vec![], vec![]);
    cfg.listeners[0].tls = Some(tls_server(&leaves, &[&["app.example.com"]]));
    let (_proxy, addr) = start(cfg, false).await;
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    // The proxy still serves TLS (404: no routes).
    assert_eq!(
        get_tls(addr, &ca, "app.example.com", "/")
            .await
            .expect("tls")
            .0,
        404
    );
}
