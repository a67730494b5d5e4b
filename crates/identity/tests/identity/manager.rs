//! The certificate manager: ready once the first certificate is in, renewal at
//! about half-life with a new key, backoff keeping the old certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use trellis_identity::{
    Ca, CaSigner, CertificateManager, ClientAuth, Credentials, RenewalPolicy, SignError,
    SignedChain, Signer, SpiffeId, cert, client_config, server_config,
};

use crate::common::{assert_no_key, exchange, id, new_ca};

/// Signs in-process for a fixed identity; can be told to fail.
#[derive(Clone)]
struct TestSigner {
    ca: Arc<Ca>,
    identity: SpiffeId,
    lifetime: Duration,
    fail: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl TestSigner {
    fn new(ca: Arc<Ca>, identity: SpiffeId, lifetime: Duration) -> TestSigner {
        TestSigner {
            ca,
            identity,
            lifetime,
            fail: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Signer for TestSigner {
    async fn sign(&self, csr_pem: String) -> Result<SignedChain, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(SignError::Unavailable("the test says no".into()));
        }
        self.ca
            .sign(csr_pem.as_bytes(), &self.identity, self.lifetime)
            .map(SignedChain::from)
            .map_err(|e| SignError::Refused(e.to_string()))
    }
}

fn fast() -> RenewalPolicy {
    RenewalPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..RenewalPolicy::default()
    }
}

/// Waits (bounded) until the watched value satisfies `f`.
async fn wait_until(
    updates: &mut watch::Receiver<Option<Arc<Credentials>>>,
    what: &str,
    f: impl FnMut(&Option<Arc<Credentials>>) -> bool,
) -> Option<Arc<Credentials>> {
    tokio::time::timeout(Duration::from_secs(15), updates.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("manager alive")
        .clone()
}

fn public_key(creds: &Credentials) -> Vec<u8> {
    cert::summarize(&creds.chain()[0]).expect("leaf").public_key
}

#[tokio::test]
async fn ready_only_once_the_first_certificate_is_in() {
    let (_d, ca) = new_ca();
    let signer = TestSigner::new(Arc::new(ca), id("shop", "web"), Duration::from_secs(3600));
    signer.fail.store(true, Ordering::SeqCst);
    let manager = CertificateManager::start(id("shop", "web"), signer.clone(), fast());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!manager.is_ready());
    assert!(manager.credentials().load().is_none());
    assert!(signer.calls.load(Ordering::SeqCst) >= 2, "retried");

    signer.fail.store(false, Ordering::SeqCst);
    let creds = tokio::time::timeout(Duration::from_secs(5), manager.ready())
        .await
        .expect("ready in time");
    assert!(manager.is_ready());
    assert_eq!(creds.identity(), &id("shop", "web"));
    assert_eq!(
        manager.credentials().load().expect("in").serial(),
        creds.serial()
    );
}

#[tokio::test]
async fn renews_at_about_half_life_with_a_new_key_each_time() {
    let (_d, ca) = new_ca();
    let signer = TestSigner::new(Arc::new(ca), id("shop", "web"), Duration::from_secs(4));
    let manager = CertificateManager::start(id("shop", "web"), signer, fast());
    let first = manager.ready().await;
    let started = Instant::now();
    let mut updates = manager.subscribe();
    let serial = first.serial().to_string();
    let second = wait_until(&mut updates, "a renewal", |c| {
        c.as_ref().is_some_and(|c| c.serial() != serial)
    })
    .await
    .expect("renewed");
    let took = started.elapsed();
    // 4 s certificates (3 to 4 s remaining once seconds are truncated), renewed at
    // half of that, give or take the jitter: well before expiry.
    assert!(took < Duration::from_millis(3000), "renewed after {took:?}");
    assert!(took > Duration::from_millis(800), "renewed after {took:?}");
    assert_ne!(public_key(&first), public_key(&second), "a new key pair");
}

#[tokio::test]
async fn a_failing_ca_leaves_the_old_certificate_until_it_expires() {
    let (_d, ca) = new_ca();
    let signer = TestSigner::new(Arc::new(ca), id("shop", "web"), Duration::from_secs(3));
    let manager = CertificateManager::start(id("shop", "web"), signer.clone(), fast());
    let first = manager.ready().await;
    signer.fail.store(true, Ordering::SeqCst);
    let mut updates = manager.subscribe();

    // Renewals fail from about half-life on; the old certificate serves meanwhile.
    let calls = signer.calls.load(Ordering::SeqCst);
    while signer.calls.load(Ordering::SeqCst) < calls + 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(now) = manager.credentials().load() {
            assert_eq!(now.serial(), first.serial());
        }
    }
    // Then it expires and is withdrawn.
    wait_until(&mut updates, "expiry", Option::is_none).await;
    assert!(!manager.is_ready());
    assert!(std::time::SystemTime::now() > first.not_after());

    // The CA comes back: a new certificate.
    signer.fail.store(false, Ordering::SeqCst);
    let back = wait_until(&mut updates, "recovery", Option::is_some)
        .await
        .expect("new");
    assert_ne!(back.serial(), first.serial());
}

#[tokio::test]
async fn a_certificate_for_another_identity_is_not_accepted() {
    let (_d, ca) = new_ca();
    // The CA signs for sa/admin; the manager is sa/web.
    let signer = TestSigner::new(Arc::new(ca), id("shop", "admin"), Duration::from_secs(3600));
    let manager = CertificateManager::start(id("shop", "web"), signer.clone(), fast());
    while signer.calls.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!manager.is_ready());
}

#[tokio::test]
async fn nothing_private_in_debug_output() {
    let (_d, ca) = new_ca();
    let signer = TestSigner::new(Arc::new(ca), id("shop", "web"), Duration::from_secs(3600));
    let manager = CertificateManager::start(id("shop", "web"), signer, fast());
    let creds = manager.ready().await;
    let shown = format!(
        "{manager:?} {manager:#?} {creds:?} {:?} {:?}",
        manager.credentials(),
        creds.certified_key().key
    );
    assert_no_key(&shown, None);
    assert!(shown.contains("spiffe://cluster.local/ns/shop/sa/web"));
    assert!(!creds.chain_pem().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn the_control_plane_rotates_its_serving_certificate_through_the_same_manager() {
    let (_d, ca) = new_ca();
    let ca = Arc::new(ca);
    let identity = ca.control_plane_identity();
    let signer = CaSigner::new(
        ca.clone(),
        vec!["localhost".into()],
        vec!["127.0.0.1".parse().expect("ip")],
        Duration::from_secs(3600),
    );
    let manager = CertificateManager::start(identity.clone(), signer, fast());
    let creds = manager.ready().await;
    assert_eq!(creds.identity(), &identity);
    let summary = cert::summarize(&creds.chain()[0]).expect("leaf");
    assert_eq!(summary.uris, [identity.to_string()]);
}

#[tokio::test]
async fn rotation_under_steady_handshakes_and_an_open_connection_fails_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, ca) = new_ca();
    let ca = Arc::new(ca);
    let lifetime = Duration::from_secs(3);
    let server = CertificateManager::start(
        id("shop", "reviews"),
        TestSigner::new(ca.clone(), id("shop", "reviews"), lifetime),
        fast(),
    );
    let client = CertificateManager::start(
        id("shop", "productpage"),
        TestSigner::new(ca.clone(), id("shop", "productpage"), lifetime),
        fast(),
    );
    let first = server.ready().await;
    client.ready().await;
    let server_cfg =
        server_config(&server.credentials(), ClientAuth::Required, &[b"h2"]).expect("server");
    let client_cfg =
        client_config(&client.credentials(), &[id("shop", "reviews")], &[b"h2"]).expect("client");

    // One connection opened before any rotation, echoing throughout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg.clone());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        let mut buf = [0u8; 4];
        while tls.read_exact(&mut buf).await.is_ok() {
            tls.write_all(&buf).await.expect("echo");
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("long-lived").expect("name");
    let mut open = tokio_rustls::TlsConnector::from(client_cfg.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");

    let mut serials = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_millis(4500);
    let mut handshakes = 0;
    while Instant::now() < deadline {
        let outcome = exchange(server_cfg.clone(), client_cfg.clone()).await;
        let seen = outcome.client.expect("no handshake fails across rotations");
        outcome.server.expect("server side too");
        serials.insert(seen.peer_serial.expect("a certificate"));
        handshakes += 1;
        open.write_all(b"ping")
            .await
            .expect("the open connection writes");
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.expect("and reads");
        assert_eq!(&buf, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serials.len() >= 2, "rotated during the run: {serials:?}");
    assert!(serials.contains(first.serial()));
    assert!(handshakes > 10);
}
