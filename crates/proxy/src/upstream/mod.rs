//! Reaching upstream endpoints: [`connect`] opens connections (limits, timeout,
//! keepalive, TLS origination) for every protocol; [`pool`] keeps HTTP connections
//! for reuse; [`origin`] holds the compiled TLS client settings of a cluster.

pub mod connect;
pub mod mesh;
pub mod origin;
mod pool;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::snapshot::ClusterRt;
use crate::state::EndpointState;

/// Which HTTP version an upstream request goes out as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// Sends `req` to `endpoint` over a pooled connection of `version`.
pub async fn send(
    cluster: &ClusterRt,
    endpoint: &Arc<EndpointState>,
    req: Request<ProxyBody>,
    version: HttpVersion,
) -> Result<Response<Incoming>, ProxyError> {
    match version {
        HttpVersion::Http2 => pool::send_h2(cluster, endpoint, req).await,
        HttpVersion::Http1 => pool::send_h1(cluster, endpoint, req).await,
    }
}
