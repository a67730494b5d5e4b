//! One attempt upstream: the request shaped for the upstream's HTTP version, the
//! cluster's request limit, an endpoint picked by the cluster's balancer (with the
//! request's hash key for consistent hashing), the send, and the outcome recorded
//! for outlier detection. Also the request body, buffered when it may be resent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use trellis_model::{HashKey, LoadBalancer, UpstreamProtocol};

use super::context::{InFlight, RequestContext};
use super::{authority_of, content_length};
use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::matcher::query_value;
use crate::rand;
use crate::snapshot::{ClusterRt, RouteRt};
use crate::state::{Outcome, record_outcome};
use crate::upstream::{self, HttpVersion};

/// Bodies up to this size are buffered when a retry or mirror may need to resend them.
const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// A request body: buffered (it can be sent again) or streaming (once).
pub enum Body {
    Replay(Bytes),
    Stream(Incoming),
}

impl Body {
    /// The bytes, when the body can be sent more than once.
    pub fn replayable(&self) -> Option<&Bytes> {
        match self {
            Body::Replay(b) => Some(b),
            Body::Stream(_) => None,
        }
    }
}

/// Buffers a small body when the route may resend it (retries, mirrors).
pub async fn prepare_body(
    body: Incoming,
    headers: &HeaderMap,
    route: &RouteRt,
) -> Result<Body, ProxyError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Body::Replay(Bytes::new()));
    }
    let needs_replay = route.retry.attempts > 0 || !route.mirrors.is_empty();
    let small = content_length(headers).is_some_and(|n| n <= MAX_REPLAY_BYTES);
    if needs_replay && small {
        let collected = body
            .collect()
            .await
            .map_err(|e| ProxyError::with(ErrorKind::DownstreamBody, e))?;
        return Ok(Body::Replay(collected.to_bytes()));
    }
    Ok(Body::Stream(body))
}

/// The HTTP version to speak to `cluster` for a request with this head.
pub fn upstream_version(cluster: &ClusterRt, parts: &http::request::Parts) -> HttpVersion {
    let h2 = match cluster.model.protocol {
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Http1 => false,
        _ => {
            parts.version == Version::HTTP_2
                || cluster.model.pool.h2_upgrade && !super::headers::is_upgrade(&parts.headers)
        }
    };
    if h2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    }
}

/// Shapes the request for the upstream hop: origin-form and Host for HTTP/1.1,
/// scheme and authority in the URI (and no Host) for HTTP/2.
pub fn upstream_request(
    mut parts: http::request::Parts,
    body: ProxyBody,
    version: HttpVersion,
) -> Request<ProxyBody> {
    if version == HttpVersion::Http2 {
        if parts.uri.authority().is_none() {
            let authority = authority_of(&parts.uri, &parts.headers).to_string();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
            {
                parts.uri = uri;
            }
        }
        parts.headers.remove(header::HOST);
        parts.version = Version::HTTP_2;
    } else {
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(authority_of(&parts.uri, &parts.headers))
        {
            parts.headers.insert(header::HOST, v);
        }
        if parts.uri.authority().is_some() {
            // Origin form: the path and query alone (shared, not parsed again).
            let mut origin = http::uri::Parts::default();
            origin.path_and_query = parts.uri.path_and_query().cloned();
            if let Ok(uri) = Uri::from_parts(origin) {
                parts.uri = uri;
            }
        }
        parts.version = Version::HTTP_11;
    }
    Request::from_parts(parts, body)
}

/// An endpoint picked for one request, holding its place in the cluster's request
/// count and the endpoint's in-flight count until dropped.
pub struct Picked {
    pub index: usize,
    pub in_flight: InFlight,
}

/// Admits one request under the cluster's request limit and picks an endpoint not in
/// `tried` (when another is left).
pub fn pick(
    cluster: &Arc<ClusterRt>,
    hash: Option<u64>,
    tried: &[usize],
) -> Result<Picked, ProxyError> {
    let state = &cluster.state;
    let max = cluster.model.pool.max_requests;
    if state.requests.fetch_add(1, Ordering::AcqRel) >= max && max > 0 {
        state.requests.fetch_sub(1, Ordering::AcqRel);
        state.overflows.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::new(ErrorKind::Overflow));
    }
    let Some(index) = cluster
        .balancer
        .pick(state, &cluster.endpoints, hash, tried)
    else {
        state.requests.fetch_sub(1, Ordering::AcqRel);
        return Err(ProxyError::new(ErrorKind::NoHealthyUpstream));
    };
    let endpoint = cluster.endpoints[index].clone();
    endpoint.active.fetch_add(1, Ordering::AcqRel);
    Ok(Picked {
        index,
        in_flight: InFlight {
            cluster: cluster.clone(),
            endpoint,
        },
    })
}

/// Sends `request` to the picked endpoint and records the outcome for outlier detection.
pub async fn exchange(
    cluster: &ClusterRt,
    picked: &Picked,
    request: Request<ProxyBody>,
    version: HttpVersion,
) -> Result<Response<Incoming>, ProxyError> {
    let endpoint = &picked.in_flight.endpoint;
    let (state, outlier) = (&cluster.state, cluster.model.outlier.as_ref());
    let result = upstream::send(cluster, endpoint, request, version).await;
    let outcome = match &result {
        Ok(response) => Some(Outcome::Status(response.status().as_u16())),
        Err(e) if e.kind.is_endpoint_failure() => Some(Outcome::ConnectFailure),
        Err(_) => None,
    };
    if let Some(outcome) = outcome {
        record_outcome(state, &cluster.endpoints, endpoint, outlier, outcome);
    }
    result
}

/// One attempt of the request: an endpoint picked (recorded in the context), the
/// request sent. On success the in-flight counts are held by the context until the
/// response ends; the endpoint's index comes back either way, once one was picked.
pub async fn attempt(
    ctx: &mut RequestContext,
    cluster: &Arc<ClusterRt>,
    request: Request<ProxyBody>,
    version: HttpVersion,
    hash: Option<u64>,
    tried: &[usize],
) -> Result<(Response<Incoming>, usize), (ProxyError, Option<usize>)> {
    let picked = pick(cluster, hash, tried).map_err(|e| (e, None))?;
    let index = picked.index;
    ctx.upstream = Some(picked.in_flight.endpoint.addr);
    ctx.peers = Some(ctx.conn.labels_for(cluster, index));
    match exchange(cluster, &picked, request, version).await {
        Ok(response) => {
            ctx.in_flight = Some(picked.in_flight);
            Ok((response, index))
        }
        Err(e) => Err((e, Some(index))),
    }
}

/// The consistent-hash key of a request, when the cluster hashes.
pub fn hash_key(
    cluster: &ClusterRt,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
) -> Option<u64> {
    let LoadBalancer::ConsistentHash(policy) = &cluster.model.lb else {
        return None;
    };
    match &policy.key {
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| rand::hash(v.as_bytes())),
        HashKey::Cookie { name, .. } => cookie(headers, name).map(|v| rand::hash(v.as_bytes())),
        HashKey::SourceIp => Some(rand::hash(peer.ip().to_string().as_bytes())),
        HashKey::QueryParameter(name) => query
            .and_then(|q| query_value(q, name))
            .map(|v| rand::hash(v.as_bytes())),
    }
}

/// The affinity cookie to mint when the cluster hashes on a cookie with a ttl.
pub fn new_affinity_cookie(cluster: &ClusterRt) -> Option<HeaderValue> {
    let LoadBalancer::ConsistentHash(policy) = &cluster.model.lb else {
        return None;
    };
    let HashKey::Cookie {
        name,
        path,
        ttl_secs: Some(ttl),
    } = &policy.key
    else {
        return None;
    };
    let path = path.as_deref().unwrap_or("/");
    HeaderValue::from_str(&format!(
        "{name}=\"{:016x}\"; Max-Age={ttl}; Path={path}; HttpOnly",
        rand::next_u64()
    ))
    .ok()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}
