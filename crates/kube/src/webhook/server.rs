//! The webhook's HTTPS server: a certificate the mesh CA issues for the webhook's
//! Service names (and IPs), renewed at half-life by a [`CertificateManager`] that
//! every handshake reads (no restart on rotation); HTTP/1.1 and HTTP/2 by ALPN.
//! `POST /validate` answers admission reviews, `GET /ready` probes. Dropping the
//! [`WebhookServer`] closes the port and every open connection.

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
        let task = tokio::spawn(serve(listener, acceptor));
        tracing::info!(%address, names = ?options.dns_names, "validation webhook serving");
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

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                connections.spawn(connection(stream, peer, acceptor.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = hyper::service::service_fn(answer);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, %error, "webhook connection ended");
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::POST, PATH) => match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => {
                let review = super::admit::review(&body.to_bytes());
                match serde_json::to_vec(&review) {
                    Ok(json) => reply(StatusCode::OK, "application/json", json),
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string().into_bytes(),
                    ),
                }
            }
            Err(e) => reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("cannot read the review: {e}").into_bytes(),
            ),
        },
        (&Method::GET, "/ready") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("the webhook serves POST {PATH}\n").into_bytes(),
        ),
    };
    Ok(response)
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
