//! Fault injection (VirtualService `fault`): delay a share of requests, and abort a
//! share with an HTTP status or, for gRPC callers, a gRPC status. Runs after
//! authorization and before anything is sent upstream.

use std::time::Duration;

use super::Decision;
use super::context::RequestContext;
use super::reply;
use crate::flags::Flags;
use crate::rand;
use crate::snapshot::RouteRt;

/// Sleeps for an injected delay, and answers for an injected abort.
pub async fn inject(ctx: &mut RequestContext, route: &RouteRt) -> Decision {
    let Some(fault) = &route.model.fault else {
        return Decision::Continue(());
    };
    if let Some(delay) = &fault.delay
        && rand::chance(delay.percent)
    {
        ctx.flags.insert(Flags::DELAY_INJECTED);
        tokio::time::sleep(Duration::from_millis(delay.delay_ms)).await;
    }
    let Some(abort) = fault.abort.as_ref().filter(|a| rand::chance(a.percent)) else {
        return Decision::Continue(());
    };
    ctx.flags.insert(Flags::FAULT_INJECTED);
    // Reported against the service the route would have sent to.
    if let Some((cluster, _)) = route.pick.as_ref().and_then(|p| p.choices.first()) {
        ctx.peers = Some(cluster.service_labels.clone());
    }
    let reply = reply::fault(abort.http_status, abort.grpc_status, ctx.protocol);
    Decision::Reply(ctx.answer("fault_filter_abort", reply))
}
