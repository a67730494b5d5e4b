//! The HTTP API (JSON) that `trellis apply`, `delete`, `get`, `proxy-status` and
//! `proxy-config` speak, and `/metrics` in Prometheus text, on one port (15014).
//!
//! | method and path                    | body / answer                                   |
//! |------------------------------------|-------------------------------------------------|
//! | `POST /api/v1/apply`               | `{"files":[{"name","text"}]}` → applied, or 422 with problems |
//! | `POST /api/v1/delete`              | same body → deleted / not found                 |
//! | `GET /api/v1/resources?kind=&namespace=` | the resources in force                    |
//! | `GET /api/v1/proxies`              | each connected proxy's sync status              |
//! | `GET /api/v1/proxies/ID/config`    | the config last pushed to proxy ID              |
//! | `GET /api/v1/proxies/ID/secret`    | proxy ID's certificates, read from its admin `/certs` (no keys) |
//! | `GET /metrics`                     | Prometheus text                                 |
//!
//! Every `/api/` call needs `Authorization: Bearer TOKEN`, the token in the control
//! plane's `api-token` file (mode 0600); without it the answer is 401 and says where
//! the token is. `/metrics` and `/ready` are open, as Prometheus and probes expect.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use trellis_api::Diagnostic;

use crate::plane::ControlPlane;
use crate::security::Security;

/// Largest request body accepted (an apply of many files).
const MAX_BODY: usize = 64 << 20;

/// A file sent by `trellis apply` or `delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// The body of apply and delete.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Files {
    pub files: Vec<File>,
}

/// One problem, as `trellis validate -o json` writes it, plus the text line.
pub fn problem_json(p: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "severity": p.severity,
        "file": &*p.file,
        "line": p.line,
        "resource": p.resource,
        "field": p.path,
        "message": p.message,
        "text": p.to_string(),
    })
}

/// Serves the API on `socket` until the task is dropped.
pub async fn serve(
    control: ControlPlane,
    socket: tokio::net::TcpListener,
    security: std::sync::Arc<Security>,
) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let (control, security) = (control.clone(), security.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (control, security) = (control.clone(), security.clone());
                async move {
                    if req.uri().path().starts_with("/api/") && !authorized(&req, &security) {
                        return Ok(unauthorized(&security));
                    }
                    answer(control, req).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The header that carries the token where `Authorization` cannot: the Kubernetes
/// API server's proxy (how the CLI reaches a replica in a cluster) consumes that one.
pub const TOKEN_HEADER: &str = "x-trellis-token";

/// The bearer token of `req` (or its `x-trellis-token`) is the API's.
fn authorized(req: &Request<Incoming>, security: &Security) -> bool {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let proxied = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    bearer
        .or(proxied)
        .is_some_and(|token| security.api_token_matches(token.trim()))
}

fn unauthorized(security: &Security) -> Response<Full<Bytes>> {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        &format!(
            "this control plane's API needs its token: send `Authorization: Bearer TOKEN` with the token in {} (trellis reads it from there, or from --token-file / TRELLIS_TOKEN)",
            security.api_token_file().display()
        ),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"trellis\""),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

fn query<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

async fn answer(
    control: ControlPlane,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            let mut text = control.metrics().render();
            text.push_str(&format!(
                "# TYPE trellis_control_jwks_fetch_failures_total counter\ntrellis_control_jwks_fetch_failures_total {}\n",
                control
                    .jwks()
                    .failures
                    .load(std::sync::atomic::Ordering::Relaxed)
            ));
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        // Not ready while a source is still reading its first state (proxies are
        // refused meanwhile), so a readiness probe keeps traffic away.
        (&Method::GET, "/ready") => match control.held() {
            None => json(StatusCode::OK, &serde_json::json!({"ready": true})),
            Some(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"ready": false, "reason": reason}),
            ),
        },
        (&Method::GET, "/api/v1/proxies") => json(
            StatusCode::OK,
            &serde_json::to_value(control.status()).unwrap_or_default(),
        ),
        (&Method::GET, "/api/v1/resources") => {
            let kind = query(&req, "kind").map(str::to_ascii_lowercase);
            let namespace = query(&req, "namespace").map(str::to_string);
            let list: Vec<serde_json::Value> = control
                .resources()
                .iter()
                .filter(|r| kind.as_deref().is_none_or(|k| kind_matches(&r.kind, k)))
                .filter(|r| {
                    namespace.as_deref().is_none_or(|n| {
                        r.kind == "Namespace" || r.meta.namespace_or_default() == n
                    })
                })
                .map(|r| {
                    serde_json::json!({
                        "kind": r.kind,
                        "namespace": if r.kind == "Namespace" { "" } else { r.meta.namespace_or_default() },
                        "name": r.meta.name,
                        "source": format!("{}:{}", r.source.file, r.source.line),
                        "resource": r.raw,
                    })
                })
                .collect();
            json(StatusCode::OK, &serde_json::Value::Array(list))
        }
        (&Method::POST, "/api/v1/apply") | (&Method::POST, "/api/v1/delete") => {
            let apply = path.ends_with("apply");
            match read_files(req).await {
                Err(r) => r,
                Ok(files) => {
                    let files: Vec<(String, String)> =
                        files.files.into_iter().map(|f| (f.name, f.text)).collect();
                    if apply {
                        match control.apply(&files) {
                            Ok(changes) => json(
                                StatusCode::OK,
                                &serde_json::json!({
                                    "applied": changes.iter().map(|((kind, ns, name), change)| serde_json::json!({
                                        "kind": kind, "namespace": ns, "name": name, "change": change,
                                    })).collect::<Vec<_>>()
                                }),
                            ),
                            Err(problems) => refused(&problems),
                        }
                    } else {
                        match control.delete(&files) {
                            Ok(out) => json(
                                StatusCode::OK,
                                &serde_json::json!({
                                    "deleted": out.iter().map(|((kind, ns, name), found)| serde_json::json!({
                                        "kind": kind, "namespace": ns, "name": name, "found": found,
                                    })).collect::<Vec<_>>()
                                }),
                            ),
                            Err(problems) => refused(&problems),
                        }
                    }
                }
            }
        }
        (&Method::GET, p) if p.starts_with("/api/v1/proxies/") && p.ends_with("/config") => {
            let id = &p["/api/v1/proxies/".len()..p.len() - "/config".len()];
            match control.proxy_config(id) {
                // Private keys (gateway certificates, client certificates) are never shown.
                Some(c) => json(
                    StatusCode::OK,
                    &serde_json::to_value(c.redacted()).unwrap_or_default(),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no connected proxy `{id}` has been sent a configuration"),
                ),
            }
        }
        (&Method::GET, p) if p.starts_with("/api/v1/proxies/") && p.ends_with("/secret") => {
            let id = &p["/api/v1/proxies/".len()..p.len() - "/secret".len()];
            match control.proxy_admin(id) {
                Some(admin) => match fetch_certs(admin).await {
                    Ok(value) => json(StatusCode::OK, &value),
                    Err(e) => error(
                        StatusCode::BAD_GATEWAY,
                        &format!("proxy `{id}`'s admin endpoint {admin}: {e}"),
                    ),
                },
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no connected proxy `{id}` with an admin endpoint"),
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no {method} {path}")),
    };
    Ok(response)
}

/// `GET /certs` from a proxy's admin endpoint (bounded in time and size).
async fn fetch_certs(admin: std::net::SocketAddr) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /certs HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(bytes)
    };
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    let text = String::from_utf8_lossy(&bytes);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|e| format!("not the JSON /certs answers: {e}"))
}

fn refused(problems: &[Diagnostic]) -> Response<Full<Bytes>> {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({
            "error": "the configuration is invalid; nothing was changed",
            "problems": problems.iter().map(problem_json).collect::<Vec<_>>(),
        }),
    )
}

async fn read_files(req: Request<Incoming>) -> Result<Files, Response<Full<Bytes>>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("expected {{\"files\":[{{\"name\",\"text\"}}]}}: {e}"),
        )
    })
}

/// `virtualservice`, `virtualservices`, `vs` and `VirtualService` all name one kind.
pub fn kind_matches(kind: &str, asked: &str) -> bool {
    let k = kind.to_ascii_lowercase();
    let asked = asked.to_ascii_lowercase();
    if asked == k
        || asked == format!("{k}s")
        || (k.ends_with('y') && asked == format!("{}ies", &k[..k.len() - 1]))
    {
        return true;
    }
    let short: &[(&str, &str)] = &[
        ("virtualservice", "vs"),
        ("destinationrule", "dr"),
        ("gateway", "gw"),
        ("serviceentry", "se"),
        ("workloadentry", "we"),
        ("peerauthentication", "pa"),
        ("authorizationpolicy", "ap"),
        ("requestauthentication", "ra"),
        ("service", "svc"),
        ("deployment", "deploy"),
        ("namespace", "ns"),
        ("serviceaccount", "sa"),
        ("pod", "po"),
    ];
    short.iter().any(|(long, s)| *long == k && *s == asked)
}
