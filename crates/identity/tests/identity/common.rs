//! Shared helpers: a CA in a temporary directory, credentials issued by it, and a
//! TLS exchange over loopback that reports what each side saw.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_identity::{Ca, Credentials, CurrentCredentials, SpiffeId};

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(ns, sa).expect("valid id")
}

/// A fresh self-signed CA in its own temporary directory.
pub fn new_ca() -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("ca");
    (dir, ca)
}

/// Credentials for `identity` signed by `ca`, the way a proxy gets them.
pub fn issue(ca: &Ca, identity: &SpiffeId, lifetime: Duration) -> Credentials {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    let issued = ca.sign(csr.der(), identity, lifetime).expect("signed");
    Credentials::new(&key, &issued.chain_pem, &issued.root_pem, identity, None).expect("creds")
}

pub fn current(creds: Credentials) -> CurrentCredentials {
    CurrentCredentials::with(creds)
}

/// What one side of a handshake saw.
#[derive(Debug)]
pub struct Seen {
    /// Whether the session was resumed (no certificates exchanged).
    pub resumed: bool,
    /// The peer's SPIFFE id, if it presented a certificate.
    pub peer: Option<SpiffeId>,
    /// The serial of the peer's leaf.
    pub peer_serial: Option<String>,
}

pub struct Outcome {
    pub server: Result<Seen, String>,
    pub client: Result<Seen, String>,
}

fn seen(conn: &rustls::CommonState) -> Seen {
    Seen {
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        peer: trellis_identity::peer_spiffe_id(conn),
        peer_serial: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| {
                trellis_identity::cert::summarize(leaf)
                    .expect("leaf parses")
                    .serial
            }),
    }
}

/// Handshakes once and exchanges a byte each way, so a late refusal (TLS 1.3
/// client certificates) surfaces on the client too. Each call uses a new server
/// name, so the client never resumes a session: every call verifies certificates.
pub async fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Outcome {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "endpoint-{}.mesh.internal",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    exchange_as(server, client, &name).await
}

/// [`exchange`] with the server name `name` (the key of the client's session cache).
pub async fn exchange_as(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Outcome {
    let name = ServerName::try_from(name.to_string()).expect("name");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let seen = seen(tls.get_ref().1);
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(b"s").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(seen)
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let seen = seen(tls.get_ref().1);
        tls.write_all(b"c").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok(seen)
    };
    let limit = Duration::from_secs(10);
    let client = tokio::time::timeout(limit, client_side)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server = tokio::time::timeout(limit, server_side)
        .await
        .map_err(|_| "server timed out".to_string())
        .and_then(|joined| joined.map_err(|e| e.to_string()))
        .and_then(|r| r);
    Outcome { server, client }
}

/// No private key PEM or its base64 body in `text`.
pub fn assert_no_key(text: &str, key_pem: Option<&str>) {
    assert!(!text.contains("PRIVATE KEY"), "a key header in: {text}");
    if let Some(pem) = key_pem {
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            assert!(!text.contains(line), "key material in: {text}");
        }
    }
}
