//! Routing: the listener's route table picks a virtual host by the request's
//! authority, then the first route whose match conditions hold (VirtualService
//! `http[].match`, first match wins). The route found is recorded in the context.

use http::Request;
use hyper::body::Incoming;

use super::authority_of;
use super::context::{RequestContext, RouteId};
use crate::matcher::RequestView;
use crate::snapshot::{ListenerRt, RouteRt};

/// The route `req` takes on `listener`, if any.
pub fn select<'l>(
    ctx: &mut RequestContext,
    listener: &'l ListenerRt,
    req: &Request<Incoming>,
) -> Option<&'l RouteRt> {
    let authority = authority_of(req.uri(), req.headers());
    let view = RequestView {
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
        method: req.method().as_str(),
        authority,
        scheme: req.uri().scheme_str().unwrap_or(ctx.conn.scheme()),
        headers: req.headers(),
        port: ctx.conn.local.port(),
    };
    let table = listener.table.as_ref()?;
    let vhost = table.find_index(authority)?;
    let routes = &table.vhosts[vhost].routes;
    let route = routes
        .iter()
        .position(|r| r.matchers.is_empty() || r.matchers.iter().any(|m| m.matches(&view)))?;
    ctx.route = Some(RouteId { vhost, route });
    Some(&routes[route])
}
