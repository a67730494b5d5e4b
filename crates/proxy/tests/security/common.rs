//! Shared helpers: a mesh CA in a temporary directory and identities it issues; a
//! backend sidecar compiled from the YAML users write (through `trellis_compile`) and
//! started with the backend's certificate; clients that speak plaintext or mutual TLS
//! with a given identity; a TCP echo app. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_compile::{Inbound, ProxyIdentity};
use trellis_identity::{Ca, Credentials, CurrentCredentials, SpiffeId, Trust};
use trellis_model::ProxyConfig;
use trellis_proxy::{Options, Proxy};

use crate::support::{Reply, read_reply};

pub const HOUR: Duration = Duration::from_secs(3600);
/// The longest any one exchange with a proxy may take.
pub const LIMIT: Duration = Duration::from_secs(10);
pub const NS: &str = "production";

/// The seed's AuthorizationPolicy (examples/07-authorizationpolicy.yaml), verbatim.
pub const SEED_POLICY: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend
  namespace: production
spec:
  selector:
    matchLabels:
      app: backend
  rules:
  - from:
    - source:
        principals:
        - "cluster.local/ns/production/sa/frontend"
    to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/api/*"]
"#;

/// A namespace-wide PeerAuthentication for `production` in `mode`.
pub fn peer_authentication(mode: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: production\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// A mesh CA and the identities it issues.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("CA");
        Pki { _dir: dir, ca }
    }

    /// Credentials for `ns/sa` living `lifetime`, made as a proxy makes them (its own
    /// key, a CSR, the CA's signature), and the key's PEM (to look for in outputs).
    pub fn issue_with_key(&self, ns: &str, sa: &str, lifetime: Duration) -> (Credentials, String) {
        let id = id(ns, sa);
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = trellis_identity::manager::csr_for(&id, &key).expect("CSR");
        let issued = self.ca.sign(csr.as_bytes(), &id, lifetime).expect("signed");
        let creds = Credentials::new(&key, &issued.chain_pem, &issued.root_pem, &id, None)
            .expect("credentials");
        (creds, key.serialize_pem())
    }

    pub fn issue(&self, ns: &str, sa: &str, lifetime: Duration) -> CurrentCredentials {
        CurrentCredentials::with(self.issue_with_key(ns, sa, lifetime).0)
    }

    /// A client presenting a certificate for `ns/sa` (valid for an hour).
    pub fn who(&self, ns: &str, sa: &str) -> Who {
        Who::Mesh(self.issue(ns, sa, HOUR))
    }

    pub fn trust(&self) -> Arc<Trust> {
        Trust::from_pem(self.ca.trust_domain(), &self.ca.root_pem()).expect("trust")
    }
}

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(ns, sa).expect("valid id")
}

/// Who a test client is.
#[derive(Clone)]
pub enum Who {
    /// No TLS at all (a workload without a sidecar).
    Plain,
    /// Mutual TLS with this certificate, checking the server is the backend.
    Mesh(CurrentCredentials),
    /// TLS with this client config as it is (forged or missing client certificates);
    /// its ALPN list is replaced by the one the request needs.
    Tls(Arc<ClientConfig>),
}

/// What came back.
#[derive(Debug)]
pub enum Outcome {
    /// An HTTP answer.
    Reply(Reply),
    /// The connection failed or closed without an HTTP answer.
    Closed(String),
    /// Nothing within [`LIMIT`].
    TimedOut,
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Reply(r) => Some(r.status),
            _ => None,
        }
    }
}

/// Which protocol the client speaks (and offers in ALPN over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
    /// Opaque bytes: no ALPN, so the inbound side treats the connection as TCP.
    Tcp,
}

fn alpn(proto: Proto) -> Vec<Vec<u8>> {
    match proto {
        Proto::Http1 => vec![b"http/1.1".to_vec()],
        Proto::Http2 => vec![b"h2".to_vec()],
        Proto::Tcp => vec![],
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Connects to `addr` as `who`; a TLS handshake failure is an error.
pub async fn connect(addr: SocketAddr, who: &Who, proto: Proto) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let config = match who {
        Who::Plain => return Ok(Box::new(tcp)),
        Who::Mesh(creds) => trellis_identity::client_config(creds, &[id(NS, "backend")], &[])
            .expect("client config"),
        Who::Tls(config) => config.clone(),
    };
    let mut config = (*config).clone();
    config.alpn_protocols = alpn(proto);
    let name = ServerName::try_from("backend.production.svc.cluster.local").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(tls))
}

/// One request on a new connection.
pub async fn request(
    addr: SocketAddr,
    who: &Who,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Outcome {
    request_with(addr, who, Proto::Http1, method, path, headers).await
}

pub async fn request_with(
    addr: SocketAddr,
    who: &Who,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Outcome {
    let exchange = async {
        let io = connect(addr, who, proto).await?;
        let mut req = Request::builder().method(method);
        req = if proto == Proto::Http2 {
            req.uri(format!("http://backend.production.svc.cluster.local{path}"))
        } else {
            req.uri(path)
                .header("host", "backend.production.svc.cluster.local")
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = if proto == Proto::Http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await
        };
        let response = response.map_err(|e| format!("{e:?}"))?;
        Ok::<Reply, String>(read_reply(response).await)
    };
    match tokio::time::timeout(LIMIT, exchange).await {
        Ok(Ok(reply)) => Outcome::Reply(reply),
        Ok(Err(e)) => Outcome::Closed(e),
        Err(_) => Outcome::TimedOut,
    }
}

/// Sends `payload` as opaque bytes and reads until the other side closes or `want`
/// bytes came back: Ok(what came back, possibly nothing), Err on a failed connect.
pub async fn tcp_exchange(addr: SocketAddr, who: &Who, payload: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut io = connect(addr, who, Proto::Tcp).await?;
        io.write_all(payload).await.map_err(|e| e.to_string())?;
        io.flush().await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < payload.len() {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        Ok(got)
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// An app that echoes every byte back (a TCP service), on its own thread.
pub fn tcp_echo() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Loads `yaml` as `trellis apply` would; any error fails the test.
pub fn load(yaml: &str) -> Vec<trellis_api::Resource> {
    let loaded = trellis_api::load_str("test.yaml", yaml);
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == trellis_api::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    loaded.resources
}

pub fn backend_identity() -> ProxyIdentity {
    ProxyIdentity {
        name: "backend-v1".into(),
        namespace: NS.into(),
        labels: [("app", "backend"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "backend".into(),
        bind_ip: None,
    }
}

/// The backend sidecar's config compiled from `yaml`: an inbound listener on a port
/// the OS picks, in front of the app at `app`.
pub fn backend_config(yaml: &str, app: SocketAddr) -> ProxyConfig {
    let mesh = trellis_compile::Mesh::new(&load(yaml), vec![]);
    let (config, _notes) = trellis_compile::sidecar(
        &mesh,
        &backend_identity(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[Inbound {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            app,
            port: app.port(),
        }],
        1,
    );
    config
}

/// Starts a proxy with `identity` as its mesh certificate, metrics and admin on ports
/// the OS picks; returns it and the address of listener `name`.
pub async fn start(
    config: ProxyConfig,
    identity: Option<CurrentCredentials>,
    name: &str,
) -> (Proxy, SocketAddr) {
    let options = Options {
        workers: 1,
        admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        stats: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        header_read_timeout: Duration::from_secs(2),
        mesh_identity: identity,
        ..Options::default()
    };
    // `start` returns once the workers listen; no probe connection, which would be
    // counted (refused plaintext, a TCP denial) in the metrics tests read.
    let proxy = Proxy::start(config, options).expect("proxy starts");
    let addr = proxy.listener_addr(name).expect("listener bound");
    (proxy, addr)
}

/// A running backend sidecar.
pub struct Backend {
    pub proxy: Proxy,
    /// Its inbound listener.
    pub addr: SocketAddr,
}

/// The backend sidecar with the `production/sa/backend` identity from `pki`, its
/// config compiled from `yaml`, in front of `app`.
pub async fn backend(pki: &Pki, yaml: &str, app: SocketAddr) -> Backend {
    let config = backend_config(yaml, app);
    let name = format!("inbound|{}", app.port());
    let (proxy, addr) = start(config, Some(pki.issue(NS, "backend", HOUR)), &name).await;
    Backend { proxy, addr }
}

/// GET `path` from a plain HTTP surface (admin or stats).
pub async fn fetch(addr: SocketAddr, path: &str) -> String {
    let mut client = crate::support::Client::new(addr);
    let reply = tokio::time::timeout(LIMIT, client.get("admin", path, &[]))
        .await
        .expect("in time")
        .expect("admin answers");
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.body
}

/// The proxy's Prometheus text.
pub async fn metrics(proxy: &Proxy) -> String {
    fetch(proxy.stats_addr().expect("stats"), "/stats/prometheus").await
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// 200 from the app.
    Allowed,
    /// 403 `RBAC: access denied`, flag RBAC, the app not reached.
    Denied,
    /// 401 (an invalid token), the app not reached.
    Unauthenticated,
}

/// One request of an authorization matrix.
pub struct Case {
    pub name: &'static str,
    pub who: Who,
    pub proto: Proto,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub expect: Expect,
}

impl Case {
    pub fn new(
        name: &'static str,
        who: &Who,
        method: &'static str,
        path: &'static str,
        expect: Expect,
    ) -> Case {
        Case {
            name,
            who: who.clone(),
            proto: Proto::Http1,
            method,
            path,
            headers: vec![],
            expect,
        }
    }

    pub fn over(mut self, proto: Proto) -> Case {
        self.proto = proto;
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Case {
        self.headers.push((name, value));
        self
    }
}

/// Why `outcome` is not what `expect` asks for, if it is not.
pub fn judge(outcome: &Outcome, method: &str, expect: Expect) -> Option<String> {
    let Outcome::Reply(r) = outcome else {
        return Some(format!("no HTTP answer: {outcome:?}"));
    };
    let wrong = |what: &str| {
        Some(format!(
            "{what}: {} {:?} flags={} upstream={:?}",
            r.status, r.body, r.flags, r.upstream
        ))
    };
    match expect {
        Expect::Allowed if r.status != 200 || r.upstream != "backend" => wrong("not let through"),
        Expect::Denied
            if r.status != 403
                || (method != "HEAD" && r.body != "RBAC: access denied")
                || !r.flags.split(',').any(|f| f == "RBAC")
                || !r.upstream.is_empty() =>
        {
            wrong("not denied by RBAC")
        }
        Expect::Unauthenticated if r.status != 401 || !r.upstream.is_empty() => {
            wrong("not refused as unauthenticated")
        }
        _ => None,
    }
}

/// Runs every case against `addr` (each on a new connection) and fails listing every
/// case that went wrong; the app behind must have been reached exactly once per
/// allowed case.
pub async fn run_cases(addr: SocketAddr, app_hits: &std::sync::atomic::AtomicU32, cases: &[Case]) {
    use std::sync::atomic::Ordering;
    let before = app_hits.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for case in cases {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let outcome = request_with(
            addr,
            &case.who,
            case.proto,
            case.method,
            case.path,
            &headers,
        )
        .await;
        if let Some(why) = judge(&outcome, case.method, case.expect) {
            failures.push(format!("{}: expected {:?}, {why}", case.name, case.expect));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let allowed = cases.iter().filter(|c| c.expect == Expect::Allowed).count() as u32;
    assert_eq!(
        app_hits.load(Ordering::Relaxed) - before,
        allowed,
        "the app saw a request that was not allowed"
    );
}
