//! Mirroring (VirtualService `mirror`/`mirrors`): a copy of a share of requests goes
//! to another cluster, in the mirror cluster's own protocol, with `-shadow` added to
//! its host (as Envoy does); the answer is read and dropped, and never delays or
//! changes the original request's.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;

use super::authority_of;
use super::forward::{exchange, pick, upstream_request, upstream_version};
use crate::body::ProxyBody;
use crate::rand;
use crate::snapshot::{ClusterRt, RouteRt};

/// Sends the copies the route's mirrors ask for, each on its own task.
pub fn send(route: &RouteRt, parts: &http::request::Parts, body: &Bytes) {
    for (cluster, percent) in &route.mirrors {
        if !rand::chance(*percent) {
            continue;
        }
        let version = upstream_version(cluster, parts);
        let mut request = upstream_request(parts.clone(), ProxyBody::full(body.clone()), version);
        let shadow = shadow_host(authority_of(&parts.uri, &parts.headers));
        if request.uri().authority().is_some() {
            // HTTP/2: the authority is in the URI.
            let mut uri = request.uri().clone().into_parts();
            uri.authority = shadow.parse().ok();
            if let Ok(u) = http::Uri::from_parts(uri) {
                *request.uri_mut() = u;
            }
        } else if let Ok(v) = HeaderValue::from_str(&shadow) {
            request.headers_mut().insert(header::HOST, v);
        }
        let cluster: Arc<ClusterRt> = cluster.clone();
        tokio::spawn(async move {
            let Ok(picked) = pick(&cluster, None, &[]) else {
                return;
            };
            match exchange(&cluster, &picked, request, version).await {
                Ok(response) => {
                    let _ = response.into_body().collect().await;
                }
                Err(e) => {
                    tracing::debug!(cluster = %cluster.model.name, error = %e, "mirrored request failed");
                }
            }
        });
    }
}

/// `host` with `-shadow` appended to its name (before the port, if any).
fn shadow_host(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_goes_before_the_port() {
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
    }
}
