//! The status port (Istio's 15021): `/healthz/ready` for the orchestrator's readiness
//! probe, and nothing else. It starts before the proxy has a config, on a thread of
//! its own, so the probe says 503 from the first moment until the proxy is ready and
//! again while it drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::ConfigError;
use crate::body::ProxyBody;
use crate::lifecycle::Health;

/// A running status server; it serves until the process ends.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
}

impl StatusServer {
    /// Binds `addr` (port 0: the OS picks) and answers probes from `health`.
    pub fn start(addr: SocketAddr, health: Arc<Health>) -> Result<StatusServer, ConfigError> {
        let admin_error = |source| ConfigError::Admin { addr, source };
        let socket = std::net::TcpListener::bind(addr).map_err(admin_error)?;
        socket.set_nonblocking(true).map_err(admin_error)?;
        let local = socket.local_addr().map_err(admin_error)?;
        crate::spawn_thread("trellis-status", move || async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(socket) => serve(socket, health).await,
                Err(e) => tracing::error!(error = %e, "status socket"),
            }
        })?;
        Ok(StatusServer { addr: local })
    }

    /// Where it listens (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(socket: tokio::net::TcpListener, health: Arc<Health>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                std::future::ready(Ok::<_, Infallible>(answer(&health, &req)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(health: &Health, req: &Request<Incoming>) -> Response<ProxyBody> {
    let (status, body) = match req.uri().path() {
        "/healthz/ready" => readiness(health),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    text(status, body)
}

/// The probe's answer: 200 and `LIVE`, or 503 and why not.
pub(crate) fn readiness(health: &Health) -> (StatusCode, String) {
    let state = health.readiness();
    let status = if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", state.as_str()))
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}
