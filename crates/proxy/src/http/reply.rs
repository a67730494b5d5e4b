//! Replies the proxy makes itself: local replies for errors, VirtualService
//! `directResponse` and `redirect`, and fault aborts (HTTP or gRPC status).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use trellis_model::Redirect;

use super::authority_of;
use crate::body::ProxyBody;
use crate::metrics::Protocol;

/// A response made by the proxy itself.
pub fn local_reply(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    if !body.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// VirtualService `directResponse`.
pub fn direct(status: u16, body: Option<&str>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    local_reply(status, body.unwrap_or(""))
}

/// VirtualService `redirect`: the Location is the request's URL with the parts the
/// redirect names replaced.
pub fn redirect<B>(r: &Redirect, req: &Request<B>, conn_scheme: &str) -> Response<ProxyBody> {
    let authority = authority_of(req.uri(), req.headers());
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or_else(|| req.uri().scheme_str().unwrap_or(conn_scheme));
    let host = r.authority.as_deref().unwrap_or(authority);
    let host = match r.port {
        Some(port) => format!("{}:{port}", host.rsplit_once(':').map_or(host, |(h, _)| h)),
        // A switch to https drops the http default port, as Envoy's https_redirect does.
        None if scheme == "https" && host.ends_with(":80") => host[..host.len() - 3].to_string(),
        None => host.to_string(),
    };
    let path = r
        .uri
        .as_deref()
        .unwrap_or_else(|| req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut response = local_reply(status, "");
    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{path}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A fault abort: the gRPC status for gRPC callers when one is configured, else the
/// HTTP status.
pub fn fault(
    http_status: Option<u16>,
    grpc_status: Option<u32>,
    protocol: Protocol,
) -> Response<ProxyBody> {
    if let (Some(code), Protocol::Grpc) = (grpc_status, protocol) {
        let mut response = local_reply(StatusCode::OK, "");
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(super::GRPC_STATUS, HeaderValue::from(code));
        h.insert(
            HeaderName::from_static("grpc-message"),
            HeaderValue::from_static("fault%20injected"),
        );
        return response;
    }
    let status = http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    local_reply(status, "fault filter abort")
}
