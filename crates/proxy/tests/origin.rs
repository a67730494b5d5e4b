//! TLS origination (DestinationRule `tls` SIMPLE and MUTUAL) against real TLS upstreams
//! on loopback, with certificates made here: the upstream is verified against the
//! given roots and names, a client certificate is presented for MUTUAL, and a change
//! of settings never reuses a connection made under the old ones.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use support::*;
use trellis_model::*;

/// A CA and leaves signed by it: (CA PEM, [(chain PEM, key PEM)]).
fn pki(leaves: &[&str]) -> (String, Vec<(String, String)>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "origin test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaves = leaves
        .iter()
        .map(|name| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_string()])
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("leaf");
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca_pem, leaves)
}

/// An HTTPS upstream (HTTP/1.1 and h2 by ALPN) answering `x-upstream: NAME` and
/// `x-client-cert: yes|no`; with `client_ca`, it requires a client certificate.
fn tls_upstream(
    name: &'static str,
    cert: &(String, String),
    client_ca: Option<&str>,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let mut config = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("pem")).expect("root");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    }
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
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
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            let version = format!("{:?}", req.version());
                            let mut response = http::Response::new(Full::new(Bytes::from(version)));
                            let headers = response.headers_mut();
                            headers.insert("x-upstream", http::HeaderValue::from_static(name));
                            headers.insert(
                                "x-client-cert",
                                http::HeaderValue::from_static(if client_cert {
                                    "yes"
                                } else {
                                    "no"
                                }),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn tls_cluster(name: &str, addr: SocketAddr, tls: UpstreamTls) -> Cluster {
    let mut c = cluster(name, vec![endpoint(addr, "v1")]);
    c.tls = Some(tls);
    c
}

fn route_to(cluster: &str) -> Vec<Route> {
    vec![Route {
        action: forward(&[(cluster, 100)]),
        ..Default::default()
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_verifies_the_upstream_and_settings_changes_take_new_connections() {
    let (ca, leaves) = pki(&["api.external.test"]);
    let (other_ca, _) = pki(&["unrelated.test"]);
    let upstream = tls_upstream("external", &leaves[0], None);
    let port = 0; // the OS picks; `start` says which
    let good = UpstreamTls {
        sni: "api.external.test".into(),
        ca_pem: Some(ca.clone()),
        ..Default::default()
    };
    let mut cfg = config(
        port,
        route_to("ext"),
        vec![tls_cluster("ext", upstream, good.clone())],
    );
    let (proxy, addr) = start(cfg.clone(), false).await;
    let mut client = Client::new(addr);

    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!((r.status, r.upstream.as_str()), (200, "external"), "{r:?}");
    assert_eq!(r.body, "HTTP/1.1", "HTTP/1.1 over TLS (ALPN http/1.1)");

    // The same endpoint under settings it cannot pass: the pooled connection is not
    // reused; the new handshake fails (503, UF) and says why.
    let mut version = 1;
    let mut swap = |tls: UpstreamTls, protocol: UpstreamProtocol| {
        version += 1;
        cfg.version = version;
        let mut c = tls_cluster("ext", upstream, tls);
        c.protocol = protocol;
        cfg.clusters = vec![c];
        proxy.update(cfg.clone()).expect("update");
    };
    swap(
        UpstreamTls {
            ca_pem: Some(other_ca.clone()),
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!((r.status, r.flags.as_str()), (503, "UF"), "{r:?}");
    assert!(r.body.contains("TLS handshake"), "{}", r.body);

    // A name the certificate does not carry fails; subjectAltNames name what to expect
    // instead of the SNI; insecureSkipVerify accepts any certificate.
    swap(
        UpstreamTls {
            sni: "wrong.external.test".into(),
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    assert_eq!(
        client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        503
    );
    swap(
        UpstreamTls {
            sni: "wrong.external.test".into(),
            subject_alt_names: vec!["api.external.test".into()],
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    assert_eq!(
        client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        200
    );
    swap(
        UpstreamTls {
            subject_alt_names: vec!["elsewhere.test".into()],
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    assert_eq!(
        client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        503
    );
    swap(
        UpstreamTls {
            ca_pem: Some(other_ca),
            insecure_skip_verify: true,
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    assert_eq!(
        client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        200
    );

    // HTTP/2 to the upstream negotiates h2 by ALPN.
    swap(good.clone(), UpstreamProtocol::Http2);
    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!((r.status, r.body.as_str()), (200, "HTTP/2.0"), "{r:?}");

    // Settings that named a missing file: refused connections with the reason, never
    // plaintext.
    swap(
        UpstreamTls {
            problem: Some("cannot read /nonexistent/ca.pem".into()),
            ..good.clone()
        },
        UpstreamProtocol::Http1,
    );
    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!((r.status, r.flags.as_str()), (503, "UF"), "{r:?}");
    assert!(r.body.contains("/nonexistent/ca.pem"), "{}", r.body);

    // A CA that is not PEM is refused with the config.
    let mut bad = cfg.clone();
    bad.version = 100;
    bad.clusters = vec![tls_cluster(
        "ext",
        upstream,
        UpstreamTls {
            ca_pem: Some("not a certificate".into()),
            ..good
        },
    )];
    let err = proxy.update(bad).expect_err("refused").to_string();
    assert!(
        err.contains("cluster ext") && err.contains("caCertificates"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_origination_presents_the_client_certificate() {
    let (ca, leaves) = pki(&["api.partner.test", "client.mesh.test"]);
    let upstream = tls_upstream("partner", &leaves[0], Some(&ca));
    let port = 0; // the OS picks; `start` says which
    let simple = UpstreamTls {
        sni: "api.partner.test".into(),
        ca_pem: Some(ca.clone()),
        ..Default::default()
    };
    let mut cfg = config(
        port,
        route_to("partner"),
        vec![tls_cluster("partner", upstream, simple.clone())],
    );
    let (proxy, addr) = start(cfg.clone(), false).await;
    let mut client = Client::new(addr);
    // Without a client certificate the upstream refuses the handshake.
    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!(r.status, 503, "{r:?}");

    cfg.version = 2;
    cfg.clusters = vec![tls_cluster(
        "partner",
        upstream,
        UpstreamTls {
            client_cert_pem: Some(leaves[1].0.clone()),
            client_key_pem: Some(leaves[1].1.clone()),
            ..simple
        },
    )];
    proxy.update(cfg).expect("update");
    let r = client.get("reviews", "/", &[]).await.expect("request");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.headers.get("x-client-cert").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
}
