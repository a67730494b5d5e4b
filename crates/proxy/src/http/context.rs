//! The per-request context every stage reads and adds to: where the request came in
//! (listener, direction, downstream peer), what it matched (route, cluster,
//! endpoint), what went wrong (response flags, the reason), timings and the trace
//! slot. When the response body ends, [`RequestContext::finish`] writes the request's
//! metrics and access-log line from it, in this one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;
use trellis_model::Direction;

use super::reply::local_reply;
use super::{GRPC_STATUS, authority_of, content_length, is_grpc};
use crate::Shared;
use crate::body::{Ended, Metered, ProxyBody};
use crate::downstream::Connection;
use crate::error::{ErrorKind, ProxyError};
use crate::flags::Flags;
use crate::metrics::{Protocol, RequestRecord};
use crate::snapshot::{ClusterRt, ListenerRt, RouteRt};
use crate::state::EndpointState;

/// Which route of the listener's table matched: (virtual host, route) positions.
#[derive(Debug, Clone, Copy)]
pub struct RouteId {
    pub vhost: usize,
    pub route: usize,
}

/// The W3C trace context of the request, once the tracing stage reads or starts one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Facts gathered along the way, for later stages, metrics and the access log.
pub struct RequestContext {
    pub conn: Arc<Connection>,
    /// The listener of the config in force when the request arrived.
    pub listener: Arc<ListenerRt>,
    pub start: Instant,
    /// When the upstream's response headers arrived.
    pub upstream_answered: Option<Instant>,
    pub route: Option<RouteId>,
    pub flags: Flags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: who produced the response and why.
    pub details: &'static str,
    /// Why connecting upstream failed (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub failure_reason: Option<String>,
    /// Filled by the tracing stage; empty until it exists (nothing reads it yet).
    #[allow(dead_code)]
    pub trace: Option<TraceContext>,
    pub protocol: Protocol,
    pub request_bytes: u64,
    /// The metric label block of the peers: the endpoint's once one was picked.
    pub peers: Option<Arc<str>>,
    pub cluster: Option<Arc<ClusterRt>>,
    pub upstream: Option<SocketAddr>,
    pub request_id: Option<HeaderValue>,
    /// Something to release when the response completes (in-flight counters).
    pub in_flight: Option<InFlight>,
    /// Kept only when an access log is written.
    log: Option<Box<LogFields>>,
}

/// Request facts only the access log needs, copied only when it is on.
struct LogFields {
    method: Method,
    path: String,
    version: Version,
    authority: String,
    forwarded_for: Option<String>,
    user_agent: Option<String>,
}

impl RequestContext {
    pub fn new(conn: Arc<Connection>, listener: Arc<ListenerRt>, req: &Request<Incoming>) -> Self {
        let log = conn.shared.access_log.then(|| {
            let header = |name: http::HeaderName| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            Box::new(LogFields {
                method: req.method().clone(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                version: req.version(),
                authority: authority_of(req.uri(), req.headers()).to_string(),
                forwarded_for: header(HeaderName::from_static("x-forwarded-for")),
                user_agent: header(http::header::USER_AGENT),
            })
        });
        RequestContext {
            conn,
            listener,
            start: Instant::now(),
            upstream_answered: None,
            route: None,
            flags: Flags::NONE,
            details: "via_upstream",
            failure_reason: None,
            trace: None,
            protocol: if is_grpc(req.headers()) {
                Protocol::Grpc
            } else {
                Protocol::Http
            },
            request_bytes: content_length(req.headers()).unwrap_or(0),
            peers: None,
            cluster: None,
            upstream: None,
            request_id: None,
            in_flight: None,
            log,
        }
    }

    /// Where traffic on this listener flows.
    pub fn direction(&self) -> Direction {
        self.listener.model.direction
    }

    /// The matched route, once routing found one.
    pub fn route(&self) -> Option<&RouteRt> {
        let id = self.route?;
        self.listener
            .table
            .as_ref()?
            .vhosts
            .get(id.vhost)?
            .routes
            .get(id.route)
    }

    /// Records `error` (its flag and reason) and makes the local reply it calls for.
    pub fn fail(&mut self, error: ProxyError) -> Response<ProxyBody> {
        self.flags.insert(error.kind.flag());
        self.details = details(error.kind);
        if error.kind == ErrorKind::ConnectFailure && self.log.is_some() {
            self.failure_reason = Some(error.to_string());
        }
        local_reply(error.kind.status(), &error.detail())
    }

    /// A reply the proxy made itself for a reason other than an error.
    pub fn answer(
        &mut self,
        details: &'static str,
        reply: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        self.details = details;
        reply
    }

    /// Adds the flags header and wraps the body so that metrics and the access log are
    /// written when it ends (or is dropped: a cancelled request still counts).
    pub fn finish(mut self, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
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
        let (parts, body) = response.into_parts();
        let body = Metered::wrap(
            body,
            Box::new(move |ended: Ended| {
                drop(self.in_flight.take());
                let mut flags = self.flags;
                if ended.upstream_error {
                    flags.insert(Flags::UPSTREAM_CONNECTION_TERMINATION);
                } else if !ended.complete {
                    flags.insert(Flags::DOWNSTREAM_DISCONNECT);
                }
                self.record(code, ended.grpc_status.or(header_grpc), flags, ended.bytes);
            }),
        );
        Response::from_parts(parts, body)
    }

    /// Writes the request's metrics and access-log line.
    fn record(&self, code: u16, grpc_status: Option<u8>, flags: Flags, response_bytes: u64) {
        let shared: &Shared = &self.conn.shared;
        let duration = self.start.elapsed();
        if let Some(peers) = &self.peers {
            shared.metrics.record_request(RequestRecord {
                peers: peers.clone(),
                protocol: self.protocol,
                code,
                grpc_status,
                flags,
                duration_ms: duration.as_secs_f64() * 1e3,
                request_bytes: self.request_bytes,
                response_bytes,
            });
        }
        if let Some(log) = &self.log {
            let route = self.route().map(|r| r.model.name.as_str());
            crate::access_log::write(
                shared.access_log_json,
                &crate::access_log::Entry {
                    http: Some(crate::access_log::HttpFields {
                        method: &log.method,
                        path: &log.path,
                        version: log.version,
                        code,
                        details: self.details,
                        upstream_service_time: self
                            .upstream_answered
                            .map(|t| t.saturating_duration_since(self.start)),
                        forwarded_for: log.forwarded_for.as_deref(),
                        user_agent: log.user_agent.as_deref(),
                        request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
                        authority: &log.authority,
                        route,
                    }),
                    flags,
                    failure_reason: self.failure_reason.as_deref(),
                    bytes_received: self.request_bytes,
                    bytes_sent: response_bytes,
                    duration,
                    upstream: self.upstream,
                    cluster: self.cluster.as_ref().map(|c| c.model.name.as_str()),
                    downstream_local: self.conn.local,
                    downstream_peer: self.conn.peer,
                },
            );
        }
    }
}

/// Envoy's response code details for a reply made because of `kind`.
fn details(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::DownstreamProtocol => "http1.codec_error",
        ErrorKind::DownstreamBody => "downstream_remote_disconnect",
        ErrorKind::NoRoute => "route_not_found",
        ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
        ErrorKind::Overflow => "upstream_reset_before_response_started{overflow}",
        ErrorKind::ConnectFailure => "upstream_reset_before_response_started{connection_failure}",
        ErrorKind::RefusedStream => {
            "upstream_reset_before_response_started{remote_refused_stream_reset}"
        }
        ErrorKind::UpstreamReset => "upstream_reset_before_response_started{remote_reset}",
        ErrorKind::UpstreamClosed => {
            "upstream_reset_before_response_started{connection_termination}"
        }
        ErrorKind::UpstreamTimeout => "upstream_response_timeout",
        ErrorKind::PerTryTimeout => "upstream_per_try_timeout",
    }
}

/// Releases the cluster's and endpoint's in-flight counts.
pub struct InFlight {
    pub cluster: Arc<ClusterRt>,
    pub endpoint: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.state.requests.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.active.fetch_sub(1, Ordering::AcqRel);
    }
}
