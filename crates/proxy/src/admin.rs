//! The admin endpoint (Envoy's :15000 habits: /config_dump, /clusters, /listeners,
//! /ready) and the merged stats port (:15020 /stats/prometheus, /healthz/ready, and the
//! app's rewritten probes, /app-health/...: app_probes.rs); both readiness paths give
//! the status port's answer (status.rs). It runs on its own
//! thread so that a scrape never competes with the data plane's event loop.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::Shared;
use crate::body::ProxyBody;

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything, for the operator (bind to localhost).
    Admin,
    /// Only metrics and readiness, for Prometheus and the orchestrator.
    Stats,
}

/// Serves `surface` on `socket` until the process ends.
pub async fn serve(shared: Arc<Shared>, socket: tokio::net::TcpListener, surface: Surface) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| answer(shared.clone(), surface, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    surface: Surface,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = req.uri().path();
    let admin = surface == Surface::Admin;
    if let Some(probes) = shared.app_probes.as_ref().filter(|p| p.knows(path)) {
        let (status, body) = probes.probe(path).await;
        let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
        *response.status_mut() = status;
        return Ok(response);
    }
    let (status, content_type, body) = match path {
        "/stats/prometheus" | "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        "/ready" | "/healthz/ready" => {
            let (status, body) = crate::status::readiness(&shared.health);
            (status, "text/plain", body)
        }
        "/config_dump" if admin => {
            let snapshot = shared.snapshot.load();
            (
                StatusCode::OK,
                "application/json",
                config_dump(&snapshot.config),
            )
        }
        "/clusters" if admin => (StatusCode::OK, "text/plain", clusters(&shared)),
        "/listeners" if admin => {
            let snapshot = shared.snapshot.load();
            let mut out = String::new();
            for l in &snapshot.config.listeners {
                let bind = l.bind.map_or("-".to_string(), |a| a.to_string());
                let _ = writeln!(
                    out,
                    "{}::{}::{:?}::{:?}",
                    l.name, bind, l.direction, l.protocol
                );
            }
            (StatusCode::OK, "text/plain", out)
        }
        "/certs" if admin => (StatusCode::OK, "application/json", certs(&shared)),
        "/" if admin => (
            StatusCode::OK,
            "text/plain",
            "trellis proxy admin: /config_dump /clusters /listeners /certs /ready /stats/prometheus\n"
                .to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Envoy's `/clusters` text: one line per endpoint fact.
fn clusters(shared: &Shared) -> String {
    let snapshot = shared.snapshot.load();
    let mut names: Vec<&String> = snapshot.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let c = &snapshot.clusters[name];
        let s = &c.state;
        let _ = writeln!(
            out,
            "{name}::circuit_breakers::rq_active::{}",
            s.requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}::circuit_breakers::rq_pending::{}",
            s.pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}::circuit_breakers::cx_active::{}",
            s.connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}::overflows::{}",
            s.overflows.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}::outlier_ejections::{}",
            s.ejections_total.load(Ordering::Relaxed)
        );
        for e in &c.endpoints {
            let health = if e.is_ejected() {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let prefix = format!("{name}::{}", e.addr);
            let _ = writeln!(out, "{prefix}::health_flags::{health}");
            let _ = writeln!(
                out,
                "{prefix}::rq_active::{}",
                e.active.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "{prefix}::cx_active::{}",
                e.connections.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "{prefix}::rq_total::{}",
                e.requests_total.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "{prefix}::rq_error::{}",
                e.errors_total.load(Ordering::Relaxed)
            );
            let _ = writeln!(out, "{prefix}::ejected_ms_left::{}", e.ejected_for_ms());
        }
    }
    out
}

/// The workload certificate in force and the mesh roots, as Envoy's `/certs` lists
/// them: identity, serial, validity and when it renews (about half its life). Keys are
/// not reachable from here: they live in rustls' signing key only.
fn certs(shared: &Shared) -> String {
    let Some(current) = shared.mesh_identity.as_ref().and_then(|c| c.load()) else {
        return serde_json::json!({ "workload": null, "roots": [] }).to_string();
    };
    let describe = |der: &[u8]| match trellis_identity::cert::summarize(der) {
        Ok(c) => serde_json::json!({
            "serial": c.serial,
            "notBefore": crate::access_log::timestamp(c.not_before),
            "notAfter": crate::access_log::timestamp(c.not_after),
            "uris": c.uris,
            "ca": c.is_ca,
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let now = std::time::SystemTime::now();
    let (before, after) = (current.not_before(), current.not_after());
    let renews = before + after.duration_since(before).unwrap_or_default() / 2;
    let seconds = |t: std::time::SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs());
    let value = serde_json::json!({
        "workload": {
            "identity": current.identity().to_string(),
            "serial": current.serial(),
            "notBefore": crate::access_log::timestamp(before),
            "notAfter": crate::access_log::timestamp(after),
            "expiresInSeconds": seconds(after),
            "renewsInSeconds": seconds(renews),
            "chain": current.chain().iter().map(|c| describe(c)).collect::<Vec<_>>(),
        },
        "roots": current.trust().roots().iter().map(|c| describe(c)).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The config in force as JSON, private keys redacted (as Envoy's config_dump does).
fn config_dump(config: &trellis_model::ProxyConfig) -> String {
    if !config.has_private_keys() {
        return serde_json::to_string_pretty(config).unwrap_or_default();
    }
    serde_json::to_string_pretty(&config.redacted()).unwrap_or_default()
}
