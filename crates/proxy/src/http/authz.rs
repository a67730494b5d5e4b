//! Authentication and authorization, after routing and before faults (Envoy's filter
//! order: JWT, then RBAC, then fault and router), on inbound and gateway listeners:
//! RequestAuthentication's tokens are checked first (an invalid one is 401, a
//! missing one passes on), then AuthorizationPolicy decides with the verified peer
//! and token (403 `RBAC: access denied`, flag RBAC).

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::Decision;
use super::context::RequestContext;
use super::reply::local_reply;
use crate::flags::Flags;
use crate::policy::{self, HttpAttributes, JwtOutcome, RequestAttributes, Verdict};
use crate::snapshot::RouteRt;

/// Lets `req` through (with the token's header edits made), or answers it.
pub fn check(ctx: &mut RequestContext, route: &RouteRt, req: &mut Request<Incoming>) -> Decision {
    let Some(security) = ctx.listener.security.clone() else {
        return Decision::Continue(());
    };
    let jwt = match security.jwt.authenticate(req.headers(), req.uri().query()) {
        JwtOutcome::NoToken => None,
        JwtOutcome::Verified { identity, edits } => {
            edits.apply(req.headers_mut());
            Some(identity)
        }
        JwtOutcome::Invalid(e) => {
            tracing::debug!(peer = %ctx.conn.peer, error = %e, "request refused: invalid JWT");
            let mut reply = local_reply(StatusCode::UNAUTHORIZED, &e.to_string());
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"trellis\""),
            );
            return Decision::Reply(ctx.answer("jwt_authn_access_denied", reply));
        }
    };
    if security.authz.is_empty() {
        return Decision::Continue(());
    }
    let authority = super::authority_of(req.uri(), req.headers());
    let attributes = RequestAttributes {
        source_ip: Some(ctx.conn.peer.ip()),
        remote_ip: Some(ctx.conn.peer.ip()),
        destination_ip: Some(ctx.conn.local.ip()),
        destination_port: ctx.listener.port,
        http: Some(HttpAttributes {
            host: authority,
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
            jwt: jwt.as_ref(),
        }),
        ..RequestAttributes::default()
    }
    .with_peer(ctx.conn.peer_identity.get().map(|p| p.uri.as_str()));
    let decision = policy::authorize(&security.authz, &attributes);
    if decision.audit {
        tracing::info!(target: "trellis::audit", peer = %ctx.conn.peer, principal = ?attributes.source_principal, method = %req.method(), path = %req.uri().path(), "AUDIT policy matched");
    }
    match decision.verdict {
        Verdict::Allow => Decision::Continue(()),
        Verdict::Deny { policy } => {
            tracing::debug!(peer = %ctx.conn.peer, principal = ?attributes.source_principal, policy = ?policy, "request denied by AuthorizationPolicy");
            ctx.flags.insert(Flags::RBAC_DENIED);
            // Reported against the workload the request was for, from its peer.
            if let Some((cluster, _)) = route.pick.as_ref().and_then(|p| p.choices.first())
                && !cluster.labels.is_empty()
            {
                ctx.peers = Some(ctx.conn.labels_for(cluster, 0));
            }
            let reply = local_reply(StatusCode::FORBIDDEN, "RBAC: access denied");
            Decision::Reply(ctx.answer(
                if policy.is_some() {
                    "rbac_access_denied_matched_policy"
                } else {
                    "rbac_access_denied_matched_policy[none]"
                },
                reply,
            ))
        }
    }
}
