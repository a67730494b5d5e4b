//! Cross-origin resource sharing, as a VirtualService `corsPolicy` asks: preflight
//! requests from an allowed origin are answered by the proxy; actual requests from an
//! allowed origin get the response headers browsers look for. Requests from other
//! origins pass through untouched (Istio's `unmatchedPreflights: FORWARD`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use trellis_model::CorsPolicy;

use crate::body::ProxyBody;
use crate::matcher::Matcher;

/// The request's origin when the policy allows it.
pub fn allowed_origin<'a>(origins: &[Matcher], headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    origins.iter().any(|m| m.matches(text)).then_some(origin)
}

/// The proxy's own answer to a preflight from an allowed origin.
pub fn preflight(
    policy: &CorsPolicy,
    origins: &[Matcher],
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<ProxyBody>> {
    if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = allowed_origin(origins, headers)?.clone();
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set_list(
        h,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &policy.allow_methods,
    );
    set_list(
        h,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        &policy.allow_headers,
    );
    set_list(
        h,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &policy.expose_headers,
    );
    if let Some(age) = policy.max_age_secs {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    if policy.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Some(response)
}

/// Adds the CORS response headers for an actual request from an allowed origin.
pub fn decorate(policy: &CorsPolicy, origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set_list(
        headers,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &policy.expose_headers,
    );
    if policy.allow_credentials == Some(true) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn set_list(headers: &mut HeaderMap, name: header::HeaderName, values: &[String]) {
    if !values.is_empty()
        && let Ok(v) = HeaderValue::from_str(&values.join(","))
    {
        headers.insert(name, v);
    }
}
