//! The webhook's HTTPS server: a certificate the mesh CA issues for the webhook's
//! Service names (and IPs), renewed at half-life by a [`CertificateManager`] that
//! every handshake reads (no restart on rotation); HTTP/1.1 and HTTP/2 by ALPN.
//! `POST /validate` answers admission reviews, `POST /inject` (with an [`Injector`])
//! injects sidecars, `GET /ready` probes. Dropping the [`WebhookServer`] closes the
//! port and every open connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use trellis_identity::{Ca, CaSigner, CertificateManager, Credentials, RenewalPolicy};

use super::configuration::PATH;
use super::inject::{INJECT_PATH, Injector};

/// The largest review accepted (an object is at most ~1.5 MiB in etcd; a review
/// carries it twice on UPDATE).
const MAX_BODY: usize = 8 << 20;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the webhook's certificate names.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The names the API server connects to (`SERVICE.NAMESPACE.svc`).
    pub dns_names: Vec<String>,
    /// Addresses it may be reached at directly (tests, out-of-cluster runs).
    pub ip_addresses: Vec<IpAddr>,
    /// How long each certificate lives (renewed at about half of it).
    pub lifetime: Duration,
    /// Serves `POST /inject` (sidecar injection) when set.
    pub injector: Option<Injector>,
}

impl WebhookOptions {
    /// For a control plane in `namespace` whose Service is `service`: that name and
    /// Istio's (`istiod`), so configurations written for istiod reach it too.
    pub fn for_service(namespace: &str, service: &str) -> WebhookOptions {
        let mut dns_names = Vec::new();
        for name in [service, "istiod"] {
            dns_names.push(format!("{name}.{namespace}.svc"));
            dns_names.push(format!("{name}.{namespace}.svc.cluster.local"));
        }
        dns_names.dedup();
        WebhookOptions {
            dns_names,
            ip_addresses: Vec::new(),
            lifetime: Duration::from_secs(24 * 3600),
            injector: None,
        }
    }
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook's TLS: {0}")]
    Tls(#[from] trellis_identity::TlsConfigError),
    #[error("the webhook's socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// The running webhook; dropping it stops it.
pub struct WebhookServer {
    address: SocketAddr,
    certificate: CertificateManager,
    task: JoinHandle<()>,
}

impl WebhookServer {
    /// Gets a certificate from `ca` for `options`' names, then serves on `listener`.
    /// Needs a tokio runtime.
    pub async fn start(
        ca: Arc<Ca>,
        listener: TcpListener,
        options: WebhookOptions,
    ) -> Result<WebhookServer, WebhookError> {
        let address = listener.local_addr()?;
        let signer = CaSigner::new(
            ca.clone(),
            options.dns_names.clone(),
            options.ip_addresses.clone(),
            options.lifetime,
        );
        let certificate = CertificateManager::start(
            ca.control_plane_identity(),
            signer,
            RenewalPolicy::default(),
        );
        certificate.ready().await;
        let config = trellis_identity::server_config(
            &certificate.credentials(),
            trellis_identity::ClientAuth::None,
            &[b"h2", b"http/1.1"],
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(serve(listener, acceptor, options.injector.clone()));
        tracing::info!(%address, names = ?options.dns_names, inject = options.injector.is_some(), "webhook serving");
        Ok(WebhookServer {
            address,
            certificate,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `https://ADDRESS/validate`, for a configuration that calls it by URL.
    pub fn url(&self) -> String {
        format!("https://{}{PATH}", self.address)
    }

    /// `https://ADDRESS/inject`, for an injection configuration that calls it by URL.
    pub fn inject_url(&self) -> String {
        format!("https://{}{INJECT_PATH}", self.address)
    }

    /// Each certificate it serves with (its roots are what the API server must
    /// trust: hand this to [`super::keep_ca_bundle`]).
    pub fn certificates(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.certificate.subscribe()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        // The accept loop owns every connection's task: aborting it ends them all.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    injector: Option<Injector>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                connections.spawn(connection(stream, peer, acceptor.clone(), injector.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    injector: Option<Injector>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = hyper::service::service_fn(move |req| answer(req, injector.clone()));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, %error, "webhook connection ended");
    }
}

async fn answer(
    req: Request<Incoming>,
    injector: Option<Injector>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path(), &injector) {
        (&Method::POST, PATH, _) => match read(req).await {
            Ok(body) => json_reply(serde_json::to_vec(&super::admit::review(&body))),
            Err(refused) => refused,
        },
        (&Method::POST, INJECT_PATH, Some(injector)) => match read(req).await {
            Ok(body) => json_reply(serde_json::to_vec(&injector.review(&body).await)),
            Err(refused) => refused,
        },
        (&Method::GET, "/ready", _) => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("the webhook serves POST {PATH} and POST {INJECT_PATH}\n").into_bytes(),
        ),
    };
    Ok(response)
}

/// The review's body, or the answer refusing it.
async fn read(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) => Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            format!("cannot read the review: {e}").into_bytes(),
        )),
    }
}

fn json_reply(json: Result<Vec<u8>, serde_json::Error>) -> Response<Full<Bytes>> {
    match json {
        Ok(json) => reply(StatusCode::OK, "application/json", json),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string().into_bytes(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
