//! Just enough gRPC for the echo server: the standard health check
//! (`grpc.health.v1.Health/Check`), with its two tiny protobuf messages encoded by
//! hand, and `UNIMPLEMENTED` for any other gRPC method.
//!
//! A gRPC message on the wire is a 5-byte prefix (compressed flag, big-endian
//! length) and the protobuf bytes; the status travels in trailers.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::body::Body;
use super::identity::Identity;

/// The health-check method path.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse { status: SERVING }`: field 1, varint, value 1; prefixed.
const SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

/// Largest request message read.
const MAX_REQUEST: usize = 64 * 1024;

/// gRPC status codes used here.
const OK: &str = "0";
const INVALID_ARGUMENT: &str = "3";
const NOT_FOUND: &str = "5";
const UNIMPLEMENTED: &str = "12";

/// Whether `request` is a gRPC call (its content type says so).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
}

/// Answers a gRPC call: the health check, or `UNIMPLEMENTED`.
pub async fn handle(identity: &Identity, request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() != HEALTH_CHECK {
        return status_only(identity, UNIMPLEMENTED, "only the health check is served");
    }
    let Ok(body) = Limited::new(request.into_body(), MAX_REQUEST)
        .collect()
        .await
    else {
        return status_only(identity, INVALID_ARGUMENT, "unreadable request");
    };
    match requested_service(&body.to_bytes()) {
        None => status_only(identity, INVALID_ARGUMENT, "malformed HealthCheckRequest"),
        Some(service) if service.is_empty() || service == identity.service.as_bytes() => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(OK));
            let body = Body::grpc(Bytes::from_static(SERVING), trailers);
            identity.respond(StatusCode::OK, "application/grpc", body)
        }
        Some(_) => status_only(identity, NOT_FOUND, "unknown service"),
    }
}

/// A trailers-only response: the gRPC status in the headers, no body.
fn status_only(identity: &Identity, code: &'static str, message: &'static str) -> Response<Body> {
    let mut response = identity.respond(StatusCode::OK, "", Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static(code));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

/// The `service` field of a length-prefixed `HealthCheckRequest`; `None` if malformed.
/// An empty body (no message at all) asks about the server as a whole, like `""`.
fn requested_service(body: &[u8]) -> Option<&[u8]> {
    if body.is_empty() {
        return Some(b"");
    }
    let (prefix, mut message) = body.split_at_checked(5)?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if prefix[0] != 0 || len != message.len() {
        return None;
    }
    let mut service: &[u8] = b"";
    while let Some((&tag, rest)) = message.split_first() {
        let (value_len, rest) = varint(rest)?;
        match tag {
            // Field 1, length-delimited: the service name.
            0x0a => {
                let (value, rest) = rest.split_at_checked(usize::try_from(value_len).ok()?)?;
                service = value;
                message = rest;
            }
            // Any other varint field: skip it (the varint was its value).
            t if t < 0x80 && t & 0x07 == 0 => message = rest,
            _ => return None,
        }
    }
    Some(service)
}

/// Decodes a protobuf varint, returning it and the rest.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_request_service_name_is_decoded() {
        assert_eq!(requested_service(b""), Some(&b""[..]));
        assert_eq!(requested_service(&[0, 0, 0, 0, 0]), Some(&b""[..]));
        assert_eq!(
            requested_service(&[0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']),
            Some(&b"echo"[..])
        );
        assert_eq!(requested_service(&[0, 0, 0, 0, 3, 0x0a, 4, b'e']), None);
        assert_eq!(requested_service(&[1, 0, 0, 0, 0]), None);
    }
}
