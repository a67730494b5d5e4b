//! Authorization: where AuthorizationPolicy is enforced, after routing and before
//! faults (Envoy's filter order: RBAC runs before the fault and router filters). No
//! policy is evaluated yet, so every request passes; the stage holds the place.

use http::Request;
use hyper::body::Incoming;

use super::Decision;
use super::context::RequestContext;
use crate::snapshot::RouteRt;

/// Lets `req` through, or answers it with a denial.
pub fn check(_ctx: &mut RequestContext, _route: &RouteRt, _req: &Request<Incoming>) -> Decision {
    Decision::Continue(())
}
