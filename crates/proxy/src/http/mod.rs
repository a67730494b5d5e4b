//! The HTTP request path, one stage per module, in the order traffic flows:
//!
//! route → authz → cors → fault → (redirect | direct response | forward:
//! headers → rewrite → mirror → retry/timeout → balance → upstream) → response headers.
//!
//! Every stage reads and adds to one [`RequestContext`]; errors are [`ProxyError`]s,
//! turned into replies by the context; metrics and the access log are written from
//! the context when the response ends. Everything decided per config was prepared in
//! the snapshot; the stages only read it.

mod authz;
mod context;
mod cors;
mod fault;
mod forward;
mod headers;
mod mirror;
mod reply;
mod retry;
mod rewrite;
mod route;
mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use trellis_model::Action;

pub use context::RequestContext;
pub use retry::RetryRt;

use crate::body::ProxyBody;
use crate::downstream::Connection;
use crate::error::{ErrorKind, ProxyError};

/// Handles one request; never fails (errors become local replies with flags).
pub async fn handle(
    conn: Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let listener = conn.current_listener(&conn.shared.snapshot.load());
    let mut ctx = RequestContext::new(conn, listener, &req);
    let response = if ctx.conn.framing.refuse() {
        // Content-Length and Transfer-Encoding together: refused, never forwarded
        // (hyper closes the connection after this answer).
        ctx.fail(ProxyError::new(ErrorKind::DownstreamProtocol))
    } else {
        // Boxed: HTTP/2 spawns a task per request, and moving this large future into
        // it (and through hyper's wrappers) cost a memmove per request; a box is
        // moved as a pointer.
        Box::pin(pipeline(&mut ctx, req)).await
    };
    Ok(ctx.finish(response))
}

/// The stages, in order. Each either passes the request on or answers it.
async fn pipeline(ctx: &mut RequestContext, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let listener = ctx.listener.clone();
    ctx.peers = Some(listener.unrouted_labels.clone());
    let Some(route) = route::select(ctx, &listener, &req) else {
        return ctx.fail(ProxyError::new(ErrorKind::NoRoute));
    };
    if let Decision::Reply(reply) = authz::check(ctx, route, &mut req) {
        return reply;
    }
    let cors_origin = match cors::stage(ctx, route, &req) {
        Decision::Continue(origin) => origin,
        Decision::Reply(reply) => return reply,
    };
    if let Decision::Reply(reply) = fault::inject(ctx, route).await {
        return reply;
    }
    let forward = match &route.model.action {
        Action::DirectResponse { status, body } => {
            return ctx.answer("direct_response", reply::direct(*status, body.as_deref()));
        }
        Action::Redirect(r) => {
            let reply = reply::redirect(r, &req, ctx.conn.scheme());
            return ctx.answer("direct_response", reply);
        }
        Action::Forward(f) => f,
    };
    let Some((index, cluster)) = route.pick.as_ref().and_then(|p| p.pick()) else {
        return ctx.fail(ProxyError::new(ErrorKind::NoHealthyUpstream));
    };
    let cluster = cluster.clone();
    ctx.cluster = Some(cluster.clone());
    ctx.peers = Some(cluster.service_labels.clone());
    let weighted = &forward.clusters[index];

    // WebSocket and other HTTP/1.1 upgrades are tunnelled once the upstream agrees.
    let downstream_upgrade = upgrade::requested(&mut req);
    let (mut parts, body) = req.into_parts();
    let direction = ctx.direction();
    headers::prepare_request(
        &mut parts.headers,
        &ctx.conn,
        direction,
        route,
        &weighted.request_headers,
    );
    if let Some(rewrite) = &forward.rewrite {
        rewrite::apply(&mut parts, route, rewrite);
    }
    ctx.request_id = Some(headers::request_id(&mut parts.headers));

    let body = match forward::prepare_body(body, &parts.headers, route).await {
        Ok(b) => b,
        Err(e) => return ctx.fail(e),
    };
    if let Some(bytes) = body.replayable() {
        mirror::send(route, &parts, bytes);
    }
    // A tunnel outlives its HTTP connection: a drain counts it on its own.
    let tunnel = downstream_upgrade.map(|d| (d, ctx.conn.shared.drain.track()));
    let mut response = match retry::forward(ctx, route, &cluster, parts, body).await {
        Ok(response) => response,
        Err(reply) => return reply,
    };
    if let Some((downstream, open)) = tunnel {
        upgrade::tunnel(downstream, &mut response, open);
    }
    headers::prepare_response(response, route, weighted, &cluster, cors_origin)
}

/// What a stage decided: pass the request on (with what it found), or answer it.
enum Decision<T = ()> {
    Continue(T),
    Reply(Response<ProxyBody>),
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The request's authority: the URI's (absolute form, HTTP/2) or the Host header.
fn authority_of<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
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
