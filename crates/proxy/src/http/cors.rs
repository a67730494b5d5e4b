//! Cross-origin resource sharing, as a VirtualService `corsPolicy` asks: preflight
//! requests from an allowed origin are answered by the proxy; actual requests from an
//! allowed origin get the response headers browsers look for. Requests from other
//! origins pass through untouched (Istio's `unmatchedPreflights: FORWARD`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use trellis_model::CorsPolicy;

use super::Decision;
use super::context::RequestContext;
use crate::body::ProxyBody;
use crate::matcher::Matcher;
use crate::snapshot::RouteRt;

/// The CORS stage: answers a preflight, or says which origin to echo in the response.
pub fn stage<B>(
    ctx: &mut RequestContext,
    route: &RouteRt,
    req: &http::Request<B>,
) -> Decision<Option<HeaderValue>> {
    let Some(policy) = &route.model.cors else {
        return Decision::Continue(None);
    };
    if let Some(reply) = preflight(policy, &route.cors_origins, req.method(), req.headers()) {
        return Decision::Reply(ctx.answer("cors_response", reply));
    }
    Decision::Continue(allowed_origin(&route.cors_origins, req.headers()).cloned())
}

/// The request's origin when the policy allows it.
fn allowed_origin<'a>(origins: &[Matcher], headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    origins.iter().any(|m| m.matches(text)).then_some(origin)
}

/// The proxy's own answer to a preflight from an allowed origin.
fn preflight(
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
