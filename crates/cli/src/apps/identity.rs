//! Who a sample workload is (service, version, pod) and the responses it sends:
//! every answer is stamped with `x-trellis-service` and `x-trellis-version`, the
//! header values built once at start-up rather than per request.

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::body::Body;

/// Header naming the service that answered.
pub const SERVICE_HEADER: &str = "x-trellis-service";
/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "x-trellis-version";

/// A workload's identity, with its response headers ready to copy.
#[derive(Debug)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
    service_header: HeaderValue,
    version_header: HeaderValue,
}

impl Identity {
    /// Checks that the names can be sent as header values.
    pub fn new(service: String, version: String, pod: Option<String>) -> anyhow::Result<Self> {
        let service_header = HeaderValue::from_str(&service)
            .with_context(|| format!("service name {service:?} cannot be sent in a header"))?;
        let version_header = HeaderValue::from_str(&version)
            .with_context(|| format!("version {version:?} cannot be sent in a header"))?;
        Ok(Identity {
            pod: pod.unwrap_or_else(hostname),
            service,
            version,
            service_header,
            version_header,
        })
    }

    /// A response with the identity headers and `content_type` (none when `body` is empty).
    pub fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Body,
    ) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(SERVICE_HEADER, self.service_header.clone());
        headers.insert(VERSION_HEADER, self.version_header.clone());
        if !matches!(response.body(), Body::Full(None)) {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        response
    }

    /// A JSON response; `json` is already serialized.
    pub fn json(&self, status: StatusCode, json: Vec<u8>) -> Response<Body> {
        self.respond(status, "application/json", Body::full(Bytes::from(json)))
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(&self, status: StatusCode, message: &str) -> Response<Body> {
        let json = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .expect("a map of strings always serializes");
        self.json(status, json)
    }
}

/// The pod name when `POD_NAME` is unset: `HOSTNAME`, else the kernel's host name.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
