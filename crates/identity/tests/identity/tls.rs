//! Mesh mTLS over real handshakes on 127.0.0.1: who is accepted, who is refused,
//! and rotation while connections are open.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_identity::tls::{CurrentCertificate, SpiffeServerVerifier};
use trellis_identity::{
    ClientAuth, CurrentCredentials, Trust, bootstrap_client_config, client_config, provider,
    server_config,
};

use crate::common::{current, exchange, exchange_as, id, issue, new_ca};

const HOUR: Duration = Duration::from_secs(3600);
const H2: &[&[u8]] = &[b"h2"];

#[tokio::test]
async fn mutual_tls_both_sides_see_each_others_spiffe_id() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        client_config(&client, &[id("shop", "reviews")], H2).expect("client"),
    )
    .await;
    let server_saw = outcome.server.expect("server side");
    let client_saw = outcome.client.expect("client side");
    assert_eq!(server_saw.peer, Some(id("shop", "productpage")));
    assert_eq!(client_saw.peer, Some(id("shop", "reviews")));
}

#[tokio::test]
async fn any_identity_of_the_trust_domain_when_none_is_named() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        client_config(&client, &[], H2).expect("client"),
    )
    .await;
    assert_eq!(
        outcome.client.expect("client").peer,
        Some(id("shop", "reviews"))
    );
}

#[tokio::test]
async fn a_server_with_the_wrong_spiffe_id_is_refused() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "b"), HOUR));
    let client = current(issue(&ca, &id("shop", "client"), HOUR));
    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        client_config(&client, &[id("shop", "a")], H2).expect("client"),
    )
    .await;
    let err = outcome.client.expect_err("sa/b is not sa/a");
    assert!(
        err.contains("peer spiffe://cluster.local/ns/shop/sa/b is not one of the expected identities (spiffe://cluster.local/ns/shop/sa/a)"),
        "{err}"
    );
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let (_d1, mesh) = new_ca();
    let (_d2, other) = new_ca();
    let server = current(issue(&other, &id("shop", "reviews"), HOUR));
    let client = current(issue(&mesh, &id("shop", "productpage"), HOUR));
    let outcome = exchange(
        server_config(&server, ClientAuth::None, H2).expect("server"),
        client_config(&client, &[id("shop", "reviews")], H2).expect("client"),
    )
    .await;
    let err = outcome.client.expect_err("another CA");
    assert_other_ca(&err);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (_d1, mesh) = new_ca();
    let (_d2, other) = new_ca();
    let server = current(issue(&mesh, &id("shop", "reviews"), HOUR));
    // The client trusts the mesh root but presents a certificate from elsewhere.
    let foreign = issue(&other, &id("shop", "productpage"), HOUR);
    let config = foreign_client(foreign, mesh_trust(&mesh));
    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        config,
    )
    .await;
    let err = outcome.server.expect_err("another CA");
    assert_other_ca(&err);
    assert!(outcome.client.is_err());
}

/// Both meshes' roots have the same name (O=cluster.local), so webpki finds the
/// "issuer" and its signature fails; a differently named CA is an unknown issuer.
fn assert_other_ca(err: &str) {
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

fn mesh_trust(ca: &trellis_identity::Ca) -> Arc<Trust> {
    Trust::from_pem(ca.trust_domain(), &ca.root_pem()).expect("trust")
}

/// A client that presents `creds` but verifies the server with `trust`.
fn foreign_client(
    creds: trellis_identity::Credentials,
    trust: Arc<Trust>,
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::with_trust(trust, vec![])))
        .with_client_cert_resolver(Arc::new(CurrentCertificate(current(creds))));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn an_expired_certificate_is_refused_on_either_side() {
    let (_d, ca) = new_ca();
    let expiring_server = current(issue(&ca, &id("shop", "reviews"), Duration::from_secs(1)));
    let expiring_client = current(issue(
        &ca,
        &id("shop", "productpage"),
        Duration::from_secs(1),
    ));
    let good_server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let good_client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let outcome = exchange(
        server_config(&expiring_server, ClientAuth::Required, H2).expect("server"),
        client_config(&good_client, &[], H2).expect("client"),
    )
    .await;
    let err = outcome.client.expect_err("expired server certificate");
    assert!(err.to_lowercase().contains("expired"), "{err}");

    let outcome = exchange(
        server_config(&good_server, ClientAuth::Required, H2).expect("server"),
        client_config(&expiring_client, &[], H2).expect("client"),
    )
    .await;
    let err = outcome.server.expect_err("expired client certificate");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn no_client_certificate_is_refused_when_required_and_allowed_when_optional() {
    let (_d, ca) = new_ca();
    let server = current(issue(
        &ca,
        &id("istio-system", "trellis-control-plane"),
        HOUR,
    ));
    let bootstrap = bootstrap_client_config(
        mesh_trust(&ca),
        &[id("istio-system", "trellis-control-plane")],
        H2,
    )
    .expect("bootstrap client");

    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        bootstrap.clone(),
    )
    .await;
    let err = outcome.server.expect_err("no certificate under Required");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(outcome.client.is_err());

    let outcome = exchange(
        server_config(&server, ClientAuth::Optional, H2).expect("server"),
        bootstrap,
    )
    .await;
    assert_eq!(outcome.server.expect("optional").peer, None);
    assert_eq!(
        outcome.client.expect("pinned root").peer,
        Some(id("istio-system", "trellis-control-plane"))
    );
}

#[tokio::test]
async fn tls12_handshakes_verify_signatures_too() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            &client,
            vec![id("shop", "reviews")],
        )))
        .with_client_cert_resolver(Arc::new(CurrentCertificate(client.clone())));
    let outcome = exchange(
        server_config(&server, ClientAuth::Required, H2).expect("server"),
        Arc::new(config),
    )
    .await;
    assert_eq!(
        outcome.server.expect("server").peer,
        Some(id("shop", "productpage"))
    );
    assert_eq!(
        outcome.client.expect("client").peer,
        Some(id("shop", "reviews"))
    );
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_new_handshakes_present_the_new_certificate() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let server_cfg = server_config(&server, ClientAuth::Required, H2).expect("server");
    let client_cfg = client_config(&client, &[id("shop", "reviews")], H2).expect("client");
    let old_serial = server.load().expect("creds").serial().to_string();

    // An open connection, echoing.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server_cfg.clone());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        let mut buf = [0u8; 4];
        while tls.read_exact(&mut buf).await.is_ok() {
            tls.write_all(&buf).await.expect("echo");
        }
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut open = TlsConnector::from(client_cfg.clone())
        .connect(ServerName::try_from("reviews").expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(&echo(&mut open).await, b"ping");

    // Rotate both sides: one store each, no config rebuilt.
    server.store(Some(Arc::new(issue(&ca, &id("shop", "reviews"), HOUR))));
    client.store(Some(Arc::new(issue(&ca, &id("shop", "productpage"), HOUR))));
    let new_serial = server.load().expect("creds").serial().to_string();
    assert_ne!(old_serial, new_serial);

    assert_eq!(
        &echo(&mut open).await,
        b"ping",
        "the open connection keeps working"
    );
    let outcome = exchange(server_cfg, client_cfg).await;
    let client_saw = outcome.client.expect("new handshake");
    assert_eq!(client_saw.peer_serial.as_deref(), Some(new_serial.as_str()));
    assert_eq!(
        outcome.server.expect("server").peer_serial.as_deref(),
        Some(client.load().expect("creds").serial())
    );
}

async fn echo(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> [u8; 4] {
    tls.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.expect("read");
    buf
}

#[tokio::test]
async fn a_root_change_is_picked_up_by_running_configs() {
    let (_d1, old_ca) = new_ca();
    let (_d2, new_ca_) = new_ca();
    let server = current(issue(&old_ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&old_ca, &id("shop", "productpage"), HOUR));
    let server_cfg = server_config(&server, ClientAuth::Required, H2).expect("server");
    let client_cfg = client_config(&client, &[], H2).expect("client");
    exchange(server_cfg.clone(), client_cfg.clone())
        .await
        .client
        .expect("old roots");

    // Only the server moves to the new CA: the client still trusts the old root.
    server.store(Some(Arc::new(issue(
        &new_ca_,
        &id("shop", "reviews"),
        HOUR,
    ))));
    let outcome = exchange(server_cfg.clone(), client_cfg.clone()).await;
    assert!(
        outcome.client.is_err(),
        "the old root does not vouch for the new CA"
    );

    client.store(Some(Arc::new(issue(
        &new_ca_,
        &id("shop", "productpage"),
        HOUR,
    ))));
    let outcome = exchange(server_cfg, client_cfg).await;
    assert_eq!(
        outcome.client.expect("new roots").peer,
        Some(id("shop", "reviews"))
    );
    outcome.server.expect("server accepts the new client");
}

#[tokio::test]
async fn a_resumed_session_keeps_the_identity_verified_at_its_first_handshake() {
    let (_d, ca) = new_ca();
    let server = current(issue(&ca, &id("shop", "reviews"), HOUR));
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let server_cfg = server_config(&server, ClientAuth::Required, H2).expect("server");
    let client_cfg = client_config(&client, &[id("shop", "reviews")], H2).expect("client");
    let first = exchange_as(server_cfg.clone(), client_cfg.clone(), "reviews").await;
    assert!(!first.client.expect("first").resumed);
    let second = exchange_as(server_cfg, client_cfg, "reviews").await;
    let server_saw = second.server.expect("server");
    let client_saw = second.client.expect("client");
    assert!(client_saw.resumed, "sessions resume");
    assert_eq!(server_saw.peer, Some(id("shop", "productpage")));
    assert_eq!(client_saw.peer, Some(id("shop", "reviews")));
}

#[tokio::test]
async fn without_credentials_handshakes_fail_cleanly() {
    let (_d, ca) = new_ca();
    let empty = CurrentCredentials::empty();
    let client = current(issue(&ca, &id("shop", "productpage"), HOUR));
    let outcome = exchange(
        server_config(&empty, ClientAuth::Required, H2).expect("server"),
        client_config(&client, &[], H2).expect("client"),
    )
    .await;
    assert!(outcome.server.is_err());
    assert!(outcome.client.is_err());
}
