//! The HTTP request path, in the order traffic flows: route → fault → retry/timeout →
//! balance → upstream, then the response on its way back (header edits, metrics,
//! access log). Everything decided per config was prepared in the snapshot; this
//! file only reads it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use trellis_model::{Action, HashKey, HeaderOps, LoadBalancer, Redirect, RetryPolicy};

use crate::Shared;
use crate::body::{Ended, Metered, ProxyBody};
use crate::flags::Flags;
use crate::matcher::{RequestView, query_value};
use crate::metrics::{Protocol, RequestRecord};
use crate::rand;
use crate::snapshot::{ClusterRt, ListenerRt, RouteRt};
use crate::state::{EndpointState, Outcome, record_outcome};
use crate::upstream::{self, UpstreamError};

/// Bodies up to this size are buffered when a retry or mirror may need to resend them.
const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// What a downstream connection knows about itself.
pub struct Connection {
    pub shared: Arc<Shared>,
    pub listener: Arc<ListenerRt>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// TLS was terminated on this connection (the request scheme is https).
    pub tls: bool,
    /// Request framing seen on the raw HTTP/1 stream (see [`crate::framing`]).
    pub framing: Arc<crate::framing::Framing>,
    /// The peer's IP as a header value (for X-Forwarded-For), made when first needed.
    pub peer_ip: std::sync::OnceLock<HeaderValue>,
    /// The verified client certificate (mutual TLS), and its X-Forwarded-Client-Cert value.
    pub peer_cert: std::sync::OnceLock<(crate::peer::PeerCert, HeaderValue)>,
}

impl Connection {
    /// The scheme requests arrived with, when the request line does not say.
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Handles one request; never fails (errors become local replies with flags).
pub async fn handle(
    conn: Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let snapshot = conn.shared.snapshot.load_full();
    let listener = snapshot
        .listeners
        .iter()
        .find(|l| l.model.name == conn.listener.model.name)
        .cloned()
        .unwrap_or_else(|| conn.listener.clone());
    let mut log = Log::start(&req, start, conn.shared.access_log);
    if conn.framing.refuse() {
        // Content-Length and Transfer-Encoding together: refused, never forwarded
        // (hyper closes the connection after this answer).
        log.flags.insert(Flags::DOWNSTREAM_PROTOCOL_ERROR);
        let reply = local_reply(
            StatusCode::BAD_REQUEST,
            "request has both Content-Length and Transfer-Encoding",
        );
        return Ok(log.finish(&conn.shared, reply));
    }
    // Boxed: HTTP/2 spawns a task per request, and moving this large future into it
    // (and through hyper's wrappers) cost a memmove per request; a box is moved as a
    // pointer.
    let response = Box::pin(route_and_forward(&conn, &listener, req, &mut log)).await;
    Ok(log.finish(&conn.shared, response))
}

/// Facts gathered along the way for metrics and the access log.
struct Log {
    start: Instant,
    method: Method,
    path: String,
    authority: Arc<str>,
    version: Version,
    protocol: Protocol,
    request_bytes: u64,
    flags: Flags,
    peers: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    /// The cluster picked (its name goes to the access log).
    cluster: Option<Arc<crate::snapshot::ClusterRt>>,
    request_id: Option<HeaderValue>,
    /// Something to release when the response completes (in-flight counters).
    in_flight: Option<InFlight>,
}

impl Log {
    fn start(req: &Request<Incoming>, start: Instant, access_log: bool) -> Self {
        Log {
            start,
            method: req.method().clone(),
            // Kept only for the access log.
            path: if access_log {
                req.uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string()
            } else {
                String::new()
            },
            authority: Arc::from(authority_of(req.uri(), req.headers())),
            version: req.version(),
            protocol: if is_grpc(req.headers()) {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            request_bytes: content_length(req.headers()).unwrap_or(0),
            flags: Flags::NONE,
            peers: None,
            upstream: None,
            cluster: None,
            request_id: None,
            in_flight: None,
        }
    }

    /// Adds the flags header and wraps the body so metrics are recorded when it ends.
    fn finish(
        mut self,
        shared: &Arc<Shared>,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let flags = self.flags;
        let value = if flags.is_empty() {
            Ok(HeaderValue::from_static("-"))
        } else {
            HeaderValue::from_str(&flags.to_string())
        };
        if let Ok(v) = value {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-response-flags"), v);
        }
        let code = response.status().as_u16();
        let header_grpc = response
            .headers()
            .get(GRPC_STATUS)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let shared = shared.clone();
        let peers = self.peers.take();
        let in_flight = self.in_flight.take();
        let (parts, body) = response.into_parts();
        let body = Metered::wrap(
            body,
            Box::new(move |ended: Ended| {
                drop(in_flight);
                let mut flags = flags;
                if !ended.complete {
                    flags.insert(Flags::DOWNSTREAM_DISCONNECT);
                }
                let duration = self.start.elapsed();
                if let Some(peers) = peers {
                    shared.metrics.record_request(RequestRecord {
                        peers,
                        protocol: self.protocol,
                        code,
                        grpc_status: ended.grpc_status.or(header_grpc),
                        flags,
                        duration_ms: duration.as_secs_f64() * 1e3,
                        request_bytes: self.request_bytes,
                        response_bytes: ended.bytes,
                    });
                }
                if shared.access_log {
                    crate::access_log::write(
                        shared.access_log_json,
                        &crate::access_log::Entry {
                            method: &self.method,
                            path: &self.path,
                            version: self.version,
                            code,
                            flags,
                            request_bytes: self.request_bytes,
                            response_bytes: ended.bytes,
                            duration,
                            authority: &self.authority,
                            upstream: self.upstream,
                            cluster: self.cluster.as_ref().map(|c| c.model.name.as_str()),
                            request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
                        },
                    );
                }
            }),
        );
        Response::from_parts(parts, body)
    }
}

/// Releases the cluster's and endpoint's in-flight counts.
struct InFlight {
    cluster: Arc<ClusterRt>,
    endpoint: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.state.requests.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.active.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn route_and_forward(
    conn: &Connection,
    listener: &ListenerRt,
    mut req: Request<Incoming>,
    log: &mut Log,
) -> Response<ProxyBody> {
    let authority = log.authority.clone();
    let route = {
        let (path, query) = split_path(req.uri());
        let view = RequestView {
            path,
            query,
            method: req.method().as_str(),
            authority: &authority,
            scheme: req.uri().scheme_str().unwrap_or(conn.scheme()),
            headers: req.headers(),
            port: conn.local.port(),
        };
        listener
            .table
            .as_ref()
            .and_then(|t| t.find(&authority))
            .and_then(|vh| {
                vh.routes
                    .iter()
                    .find(|r| r.matchers.is_empty() || r.matchers.iter().any(|m| m.matches(&view)))
            })
    };
    let Some(route) = route else {
        log.flags.insert(Flags::NO_ROUTE);
        log.peers = Some(listener.unrouted_labels.clone());
        return local_reply(StatusCode::NOT_FOUND, "");
    };
    log.peers = Some(listener.unrouted_labels.clone());

    let cors_origin = match &route.model.cors {
        Some(policy) => {
            if let Some(reply) =
                crate::cors::preflight(policy, &route.cors_origins, req.method(), req.headers())
            {
                return reply;
            }
            crate::cors::allowed_origin(&route.cors_origins, req.headers()).cloned()
        }
        None => None,
    };

    if let Some(fault) = &route.model.fault {
        if let Some(delay) = &fault.delay
            && rand::chance(delay.percent)
        {
            log.flags.insert(Flags::DELAY_INJECTED);
            tokio::time::sleep(Duration::from_millis(delay.delay_ms)).await;
        }
        if let Some(abort) = &fault.abort
            && rand::chance(abort.percent)
        {
            log.flags.insert(Flags::FAULT_INJECTED);
            if let Some(peers) = first_cluster_labels(route) {
                log.peers = Some(peers);
            }
            return fault_reply(abort.http_status, abort.grpc_status, log.protocol);
        }
    }

    let forward = match &route.model.action {
        Action::DirectResponse { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return local_reply(status, body.as_deref().unwrap_or(""));
        }
        Action::Redirect(r) => return redirect(r, &req, &authority, conn.scheme()),
        Action::Forward(f) => f,
    };
    let Some((index, cluster)) = route.pick.as_ref().and_then(|p| p.pick()) else {
        log.flags.insert(Flags::NO_HEALTHY_UPSTREAM);
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    let cluster = cluster.clone();
    log.cluster = Some(cluster.clone());
    log.peers = Some(cluster.service_labels.clone());
    let weighted = &forward.clusters[index];

    // WebSocket and other HTTP/1.1 upgrades are tunnelled once the upstream agrees.
    let downstream_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    prepare_request_headers(&mut parts.headers, conn, route, &weighted.request_headers);
    if let Some(rewrite) = &forward.rewrite {
        apply_rewrite(&mut parts, route, rewrite, &authority);
    }
    let request_id = parts
        .headers
        .entry(HeaderName::from_static("x-request-id"))
        .or_insert_with(new_request_id)
        .clone();
    log.request_id = Some(request_id);

    let policy = route.model.retry.clone().unwrap_or_default();
    let needs_replay = policy.attempts > 0 || !route.mirrors.is_empty();
    let body = match prepare_body(body, &parts.headers, needs_replay).await {
        Ok(b) => b,
        Err(()) => {
            log.flags.insert(Flags::DOWNSTREAM_DISCONNECT);
            return local_reply(StatusCode::BAD_REQUEST, "request body could not be read");
        }
    };
    if let (Body::Replay(bytes), false) = (&body, route.mirrors.is_empty()) {
        mirror(route, &parts, bytes.clone());
    }
    let hash = hash_key(&cluster, &parts.headers, parts.uri.query(), conn.peer);
    let timeout = route
        .model
        .timeout_ms
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let deadline = timeout.map(|t| log.start + t);
    let outcome = retry_loop(&cluster, &policy, parts, body, hash, deadline, log).await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(reply) => return reply,
    };
    if let Some(downstream) = downstream_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(down), Ok(up)) = (downstream.await, upstream.await) {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
        });
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(
        &mut parts.headers,
        parts.status == StatusCode::SWITCHING_PROTOCOLS,
    );
    apply_header_ops(&mut parts.headers, &route.model.response_headers);
    apply_header_ops(&mut parts.headers, &weighted.response_headers);
    if let (Some(policy), Some(origin)) = (&route.model.cors, cors_origin) {
        crate::cors::decorate(policy, origin, &mut parts.headers);
    }
    if let Some(cookie) = new_affinity_cookie(&cluster) {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    Response::from_parts(parts, ProxyBody::Streaming(body))
}

enum Body {
    Replay(Bytes),
    Stream(Incoming),
}

async fn prepare_body(body: Incoming, headers: &HeaderMap, needs_replay: bool) -> Result<Body, ()> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(Body::Replay(Bytes::new()));
    }
    let small = content_length(headers).is_some_and(|n| n <= MAX_REPLAY_BYTES);
    if needs_replay && small {
        let collected = body.collect().await.map_err(|_| ())?;
        return Ok(Body::Replay(collected.to_bytes()));
    }
    Ok(Body::Stream(body))
}

#[allow(clippy::too_many_arguments)]
async fn retry_loop(
    cluster: &Arc<ClusterRt>,
    policy: &RetryPolicy,
    parts: http::request::Parts,
    body: Body,
    hash: Option<u64>,
    deadline: Option<Instant>,
    log: &mut Log,
) -> Result<Response<Incoming>, Response<ProxyBody>> {
    let (replay, mut stream) = match body {
        Body::Replay(b) => (Some(b), None),
        Body::Stream(s) => (None, Some(s)),
    };
    let mut parts = Some(parts);
    let max_attempts = if replay.is_some() {
        1 + policy.attempts
    } else {
        1
    };
    let h2 = match cluster.model.protocol {
        trellis_model::UpstreamProtocol::Http2 => true,
        trellis_model::UpstreamProtocol::Http1 => false,
        _ => parts.as_ref().is_some_and(|p| {
            p.version == Version::HTTP_2
                || cluster.model.pool.h2_upgrade && !is_upgrade_parts(&p.headers)
        }),
    };
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<Response<ProxyBody>> = None;
    for attempt in 0..max_attempts {
        if attempt > 0 {
            let retries = &cluster.state.retries;
            let max = cluster.model.pool.max_retries;
            if max > 0 && retries.load(Ordering::Acquire) >= max {
                log.flags.insert(Flags::UPSTREAM_OVERFLOW);
                break;
            }
            retries.fetch_add(1, Ordering::AcqRel);
            let backoff = Duration::from_millis(25u64 << (attempt - 1).min(3));
            let jitter = Duration::from_millis(rand::below(backoff.as_millis() as u64 + 1));
            tokio::time::sleep(jitter).await;
            retries.fetch_sub(1, Ordering::AcqRel);
        }
        let body = match (&replay, stream.take()) {
            (Some(b), _) => ProxyBody::full(b.clone()),
            (None, Some(s)) => ProxyBody::Streaming(s),
            (None, None) => break,
        };
        let remaining = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err(timeout_reply(log)),
            },
            None => None,
        };
        let per_try = policy
            .per_try_timeout_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let limit = match (remaining, per_try) {
            (Some(a), Some(b)) => Some((a.min(b), b < a)),
            (Some(a), None) => Some((a, false)),
            (None, Some(b)) => Some((b, true)),
            (None, None) => None,
        };
        // The last attempt takes the request head; earlier ones copy it.
        let last = attempt + 1 == max_attempts;
        let head = if last { parts.take() } else { parts.clone() };
        let Some(head) = head else { break };
        let request = build_upstream_request(head, body, h2);
        let result = attempt_once(cluster, request, h2, hash, &tried, log);
        let result = match limit {
            Some((d, per_try_only)) => match tokio::time::timeout(d, result).await {
                Ok(r) => r,
                Err(_) if per_try_only => Attempt::PerTryTimeout,
                Err(_) => return Err(timeout_reply(log)),
            },
            None => result.await,
        };
        match result {
            Attempt::Response(response, endpoint) => {
                tried.push(endpoint);
                let status = response.status().as_u16();
                let grpc = response
                    .headers()
                    .get(GRPC_STATUS)
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
                if !last && retriable_status(policy, status, grpc) {
                    continue;
                }
                if attempt > 0 && retriable_status(policy, status, grpc) {
                    log.flags.insert(Flags::RETRIES_EXHAUSTED);
                }
                return Ok(response);
            }
            Attempt::Failed(error, endpoint) => {
                if let Some(e) = endpoint {
                    tried.push(e);
                }
                let (reply, flag, retriable) = match &error {
                    UpstreamError::Overflow => (
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream overflow: circuit breaker open",
                        ),
                        Flags::UPSTREAM_OVERFLOW,
                        false,
                    ),
                    UpstreamError::Connect(why) => (
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!("upstream connect error: {why}"),
                        ),
                        Flags::UPSTREAM_CONNECT_FAILURE,
                        retry_on(
                            policy,
                            &["connect-failure", "5xx", "gateway-error", "reset"],
                        ),
                    ),
                    UpstreamError::Refused => (
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream refused the stream",
                        ),
                        Flags::UPSTREAM_RESET,
                        retry_on(policy, &["refused-stream", "5xx", "reset"]),
                    ),
                    UpstreamError::Reset(why) => (
                        local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!("upstream reset before response: {why}"),
                        ),
                        Flags::UPSTREAM_RESET,
                        retry_on(policy, &["reset", "5xx"]),
                    ),
                };
                if matches!(error, UpstreamError::Overflow) {
                    log.flags.insert(flag);
                    return Err(reply);
                }
                if !last && retriable {
                    last_error = Some(reply);
                    continue;
                }
                log.flags.insert(flag);
                if attempt > 0 {
                    log.flags.insert(Flags::RETRIES_EXHAUSTED);
                }
                return Err(reply);
            }
            Attempt::NoHealthy => {
                log.flags.insert(Flags::NO_HEALTHY_UPSTREAM);
                return Err(local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy upstream",
                ));
            }
            Attempt::PerTryTimeout => {
                if !last && retry_on(policy, &["5xx", "gateway-error", "reset"]) {
                    continue;
                }
                log.flags.insert(Flags::UPSTREAM_TIMEOUT);
                if attempt > 0 {
                    log.flags.insert(Flags::RETRIES_EXHAUSTED);
                }
                return Err(local_reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout",
                ));
            }
        }
    }
    log.flags.insert(Flags::RETRIES_EXHAUSTED);
    Err(last_error
        .unwrap_or_else(|| local_reply(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable")))
}

enum Attempt {
    Response(Response<Incoming>, usize),
    Failed(UpstreamError, Option<usize>),
    NoHealthy,
    PerTryTimeout,
}

async fn attempt_once(
    cluster: &Arc<ClusterRt>,
    request: Request<ProxyBody>,
    h2: bool,
    hash: Option<u64>,
    tried: &[usize],
    log: &mut Log,
) -> Attempt {
    let state = &cluster.state;
    let max = cluster.model.pool.max_requests;
    if state.requests.fetch_add(1, Ordering::AcqRel) >= max && max > 0 {
        state.requests.fetch_sub(1, Ordering::AcqRel);
        state.overflows.fetch_add(1, Ordering::Relaxed);
        return Attempt::Failed(UpstreamError::Overflow, None);
    }
    let Some(index) = cluster
        .balancer
        .pick(state, &cluster.endpoints, hash, tried)
    else {
        state.requests.fetch_sub(1, Ordering::AcqRel);
        return Attempt::NoHealthy;
    };
    let endpoint = cluster.endpoints[index].clone();
    endpoint.active.fetch_add(1, Ordering::AcqRel);
    let in_flight = InFlight {
        cluster: cluster.clone(),
        endpoint: endpoint.clone(),
    };
    log.upstream = Some(endpoint.addr);
    log.peers = Some(cluster.labels[index].clone());
    let outlier = cluster.model.outlier.as_ref();
    match upstream::send(cluster, &endpoint, request, h2).await {
        Ok(response) => {
            record_outcome(
                state,
                &cluster.endpoints,
                &endpoint,
                outlier,
                Outcome::Status(response.status().as_u16()),
            );
            log.in_flight = Some(in_flight);
            Attempt::Response(response, index)
        }
        Err(e) => {
            if matches!(e, UpstreamError::Connect(_) | UpstreamError::Reset(_)) {
                record_outcome(
                    state,
                    &cluster.endpoints,
                    &endpoint,
                    outlier,
                    Outcome::ConnectFailure,
                );
            }
            Attempt::Failed(e, Some(index))
        }
    }
}

fn retry_on(policy: &RetryPolicy, any_of: &[&str]) -> bool {
    policy.attempts > 0 && policy.retry_on.iter().any(|c| any_of.contains(&c.as_str()))
}

fn retriable_status(policy: &RetryPolicy, status: u16, grpc: Option<u32>) -> bool {
    if policy.attempts == 0 {
        return false;
    }
    // The common case, a success: no condition below can hold.
    if status < 500
        && status != 409
        && grpc.is_none()
        && !policy.retriable_status_codes.contains(&status)
    {
        return false;
    }
    policy.retry_on.iter().any(|c| match c.as_str() {
        "5xx" => status >= 500,
        "gateway-error" => matches!(status, 502..=504),
        "retriable-4xx" => status == 409,
        "retriable-status-codes" => policy.retriable_status_codes.contains(&status),
        "cancelled" => grpc == Some(1),
        "deadline-exceeded" => grpc == Some(4),
        "resource-exhausted" => grpc == Some(8),
        "internal" => grpc == Some(13),
        "unavailable" => grpc == Some(14),
        _ => false,
    }) || policy.retriable_status_codes.contains(&status)
        && policy
            .retry_on
            .iter()
            .any(|c| c == "retriable-status-codes")
}

/// Shapes the request for the upstream hop: origin-form and Host for HTTP/1.1,
/// scheme and authority in the URI (and no Host) for HTTP/2.
fn build_upstream_request(
    mut parts: http::request::Parts,
    body: ProxyBody,
    h2: bool,
) -> Request<ProxyBody> {
    if h2 {
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

fn prepare_request_headers(
    headers: &mut HeaderMap,
    conn: &Connection,
    route: &RouteRt,
    extra: &HeaderOps,
) {
    let upgrade = is_upgrade_parts(headers);
    strip_hop_by_hop(headers, upgrade);
    // A terminated TLS connection knows its scheme; otherwise keep what a front proxy said.
    if conn.tls || !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme()));
    }
    if conn.listener.model.direction == trellis_model::Direction::Gateway {
        // The client's address, formatted once per connection.
        let ip = conn.peer_ip.get_or_init(|| {
            HeaderValue::from_str(&conn.peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        });
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
        // Istio's gateway default (SANITIZE_SET): a client never sets this header
        // itself; it comes only from a certificate this listener verified.
        headers.remove(X_FORWARDED_CLIENT_CERT);
        if let Some((_, xfcc)) = conn.peer_cert.get() {
            headers.insert(X_FORWARDED_CLIENT_CERT, xfcc.clone());
        }
    }
    apply_header_ops(headers, &route.model.request_headers);
    apply_header_ops(headers, extra);
}

fn apply_rewrite(
    parts: &mut http::request::Parts,
    route: &RouteRt,
    rewrite: &trellis_model::Rewrite,
    authority: &str,
) {
    let (path, query) = split_path(&parts.uri);
    let mut new_path = None;
    if let Some(uri) = &rewrite.uri {
        let (path_l, query_l) = (path.to_string(), query.to_string());
        // With a prefix match, only the matched prefix is replaced; otherwise the whole path.
        let matched_prefix = route
            .matchers
            .iter()
            .find_map(|m| m.uri_prefix().filter(|p| path_l.starts_with(*p)));
        let rewritten = match matched_prefix {
            Some(prefix) => format!("{uri}{}", &path_l[prefix.len()..]),
            None => uri.clone(),
        };
        new_path = Some(if query_l.is_empty() {
            rewritten
        } else {
            format!("{rewritten}?{query_l}")
        });
    } else if let Some((re, sub)) = &route.uri_regex {
        let rewritten = re.replace_all(path, sub.as_str()).into_owned();
        new_path = Some(if query.is_empty() {
            rewritten
        } else {
            format!("{rewritten}?{query}")
        });
    }
    if let Some(p) = new_path
        && let Ok(pq) = p.parse::<http::uri::PathAndQuery>()
    {
        let mut uri_parts = parts.uri.clone().into_parts();
        uri_parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(uri_parts) {
            parts.uri = uri;
        }
    }
    if let Some(new_authority) = &rewrite.authority
        && let Ok(v) = HeaderValue::from_str(new_authority)
    {
        let _ = authority;
        parts.headers.insert(header::HOST, v);
        if parts.uri.authority().is_some() {
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.authority = new_authority.parse().ok();
            if let Ok(uri) = Uri::from_parts(uri_parts) {
                parts.uri = uri;
            }
        }
    }
}

fn mirror(route: &RouteRt, parts: &http::request::Parts, body: Bytes) {
    for (cluster, percent) in &route.mirrors {
        if !rand::chance(*percent) {
            continue;
        }
        let cluster = cluster.clone();
        let mut request =
            build_upstream_request(parts.clone(), ProxyBody::full(body.clone()), false);
        let shadow = format!("{}-shadow", authority_of(&parts.uri, &parts.headers));
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            request.headers_mut().insert(header::HOST, v);
        }
        tokio::spawn(async move {
            let Some(index) = cluster
                .balancer
                .pick(&cluster.state, &cluster.endpoints, None, &[])
            else {
                return;
            };
            let endpoint = cluster.endpoints[index].clone();
            if let Ok(response) = upstream::send(&cluster, &endpoint, request, false).await {
                let _ = response.into_body().collect().await;
            }
        });
    }
}

fn hash_key(
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
fn new_affinity_cookie(cluster: &ClusterRt) -> Option<HeaderValue> {
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

fn apply_header_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// Removes headers that belong to one hop only (RFC 9110 §7.6.1).
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// Hop-by-hop headers that are never forwarded (besides Connection and those it lists).
const HOP_BY_HOP: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TRAILER,
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Usually there is none: one pass over the names (no hashing) says so.
    let present = headers.keys().any(|k| {
        k == header::CONNECTION || k == header::TE || k == header::UPGRADE || HOP_BY_HOP.contains(k)
    });
    if !present && !keep_upgrade {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    if let Some(te) = headers.get(header::TE)
        && te.as_bytes() != b"trailers"
    {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

fn redirect(
    r: &Redirect,
    req: &Request<Incoming>,
    authority: &str,
    conn_scheme: &str,
) -> Response<ProxyBody> {
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

fn fault_reply(
    http_status: Option<u16>,
    grpc_status: Option<u32>,
    protocol: Protocol,
) -> Response<ProxyBody> {
    if let (Some(code), Protocol::Grpc) = (grpc_status, protocol) {
        let mut response = local_reply(StatusCode::OK, "");
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("grpc-status"), v);
        }
        response.headers_mut().insert(
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

fn timeout_reply(log: &mut Log) -> Response<ProxyBody> {
    log.flags.insert(Flags::UPSTREAM_TIMEOUT);
    local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
}

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

fn first_cluster_labels(route: &RouteRt) -> Option<Arc<str>> {
    route
        .pick
        .as_ref()
        .and_then(|p| p.choices.first())
        .map(|(c, _)| c.service_labels.clone())
}

/// A random (version 4) UUID, as Envoy puts in `x-request-id`.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (rand::next_u64(), rand::next_u64());
    // 32 random hex digits; the version nibble is 4 and the variant bits are 10.
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        *d = HEX[(word >> ((15 - i % 16) * 4) & 0xf) as usize];
    }
    digits[12] = b'4';
    digits[16] = HEX[8 | (b >> 60 & 0x3) as usize];
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (group, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        let from = [0, 8, 12, 16, 20][group];
        text[at..at + len].copy_from_slice(&digits[from..from + len]);
        at += len + 1;
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
}

fn authority_of<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

fn split_path(uri: &Uri) -> (&str, &str) {
    (uri.path(), uri.query().unwrap_or(""))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11 && is_upgrade_parts(req.headers())
}

fn is_upgrade_parts(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids_and_differ() {
        let ids: Vec<String> = (0..200)
            .map(|_| new_request_id().to_str().expect("ascii").to_string())
            .collect();
        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                groups.iter().all(|g| g
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["te", "x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert("x-kept", HeaderValue::from_static("1"));
        plain.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(
            plain.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );

        let mut upgrade = HeaderMap::new();
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(
            upgrade.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(upgrade.contains_key(header::UPGRADE));
    }

    #[test]
    fn a_success_is_never_retried_but_listed_codes_are() {
        let policy = RetryPolicy {
            attempts: 2,
            retry_on: vec!["5xx".into(), "retriable-status-codes".into()],
            retriable_status_codes: vec![429],
            ..RetryPolicy::default()
        };
        assert!(!retriable_status(&policy, 200, None));
        assert!(!retriable_status(&policy, 404, None));
        assert!(retriable_status(&policy, 429, None));
        assert!(retriable_status(&policy, 503, None));
        let grpc = RetryPolicy {
            attempts: 2,
            retry_on: vec!["unavailable".into()],
            ..RetryPolicy::default()
        };
        assert!(retriable_status(&grpc, 200, Some(14)));
        assert!(!retriable_status(&grpc, 200, Some(0)));
    }
}
