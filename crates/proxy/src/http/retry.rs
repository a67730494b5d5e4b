//! Retries and timeouts (VirtualService `retries`, `timeout`): attempts until one
//! succeeds or the policy says to stop, each under the per-try timeout and all under
//! the route's, with jittered backoff and the cluster's retry budget. The policy is
//! compiled into [`RetryRt`] with the snapshot, so no string is compared per request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;
use trellis_model::RetryPolicy;

use super::GRPC_STATUS;
use super::context::RequestContext;
use super::forward::{self, Body};
use super::reply::local_reply;
use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError, RetryOn};
use crate::flags::Flags;
use crate::rand;
use crate::snapshot::{ClusterRt, RouteRt};

/// A route's retry policy, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct RetryRt {
    /// Retries after the first attempt (0: none).
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub status_codes: Vec<u16>,
}

impl RetryRt {
    pub fn compile(policy: Option<&RetryPolicy>) -> RetryRt {
        let Some(p) = policy else {
            return RetryRt::default();
        };
        RetryRt {
            attempts: p.attempts,
            per_try_timeout: p
                .per_try_timeout_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            on: RetryOn::parse(p.retry_on.iter().map(String::as_str)),
            status_codes: p.retriable_status_codes.clone(),
        }
    }

    /// True when a response with `status` (and gRPC status `grpc`) is retried.
    pub fn retries_status(&self, status: u16, grpc: Option<u32>) -> bool {
        if self.attempts == 0 {
            return false;
        }
        // The common case, a success: no condition below can hold.
        let listed = self.status_codes.contains(&status);
        if status < 500 && status != 409 && grpc.is_none() && !listed {
            return false;
        }
        let on = |c| self.on.intersects(c);
        on(RetryOn::FIVE_XX) && status >= 500
            || on(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504)
            || on(RetryOn::RETRIABLE_4XX) && status == 409
            || on(RetryOn::RETRIABLE_STATUS_CODES) && listed
            || on(RetryOn::CANCELLED) && grpc == Some(1)
            || on(RetryOn::DEADLINE_EXCEEDED) && grpc == Some(4)
            || on(RetryOn::RESOURCE_EXHAUSTED) && grpc == Some(8)
            || on(RetryOn::INTERNAL) && grpc == Some(13)
            || on(RetryOn::UNAVAILABLE) && grpc == Some(14)
    }

    /// True when an attempt that failed with `kind` is retried.
    pub fn retries_error(&self, kind: ErrorKind) -> bool {
        self.attempts > 0 && self.on.intersects(kind.retried_on())
    }
}

/// Forwards the request to `cluster` as the route's retry policy and timeouts say.
/// An error is the local reply to send (its flags recorded in `ctx`).
pub async fn forward(
    ctx: &mut RequestContext,
    route: &RouteRt,
    cluster: &Arc<ClusterRt>,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response<Incoming>, Response<ProxyBody>> {
    let policy = &route.retry;
    let deadline = route.timeout.map(|t| ctx.start + t);
    let version = forward::upstream_version(cluster, &parts);
    let hash = forward::hash_key(cluster, &parts.headers, parts.uri.query(), ctx.conn.peer);
    let (replay, mut stream) = match body {
        Body::Replay(b) => (Some(b), None),
        Body::Stream(s) => (None, Some(s)),
    };
    // A streamed body can be sent once only.
    let max_attempts = if replay.is_some() {
        1 + policy.attempts
    } else {
        1
    };
    let mut parts = Some(parts);
    // Endpoints already tried, avoided by later attempts while others are left.
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    for attempt in 0..max_attempts {
        if attempt > 0 && !backoff(ctx, cluster, attempt).await {
            break;
        }
        let body = match (&replay, stream.take()) {
            (Some(b), _) => ProxyBody::full(b.clone()),
            (None, Some(s)) => ProxyBody::Streaming(s),
            (None, None) => break,
        };
        let remaining = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Err(ctx.fail(ProxyError::new(ErrorKind::UpstreamTimeout))),
            },
            None => None,
        };
        // The attempt's time limit, and whether it is the per-try one.
        let limit = match (remaining, policy.per_try_timeout) {
            (Some(a), Some(b)) => Some((a.min(b), b < a)),
            (Some(a), None) => Some((a, false)),
            (None, Some(b)) => Some((b, true)),
            (None, None) => None,
        };
        // The last attempt takes the request head; earlier ones copy it.
        let last = attempt + 1 == max_attempts;
        let head = if last { parts.take() } else { parts.clone() };
        let Some(head) = head else { break };
        let request = forward::upstream_request(head, body, version);
        let sent = forward::attempt(ctx, cluster, request, version, hash, &tried);
        let result = match limit {
            Some((d, per_try_only)) => match tokio::time::timeout(d, sent).await {
                Ok(r) => r,
                Err(_) if per_try_only => Err((ProxyError::new(ErrorKind::PerTryTimeout), None)),
                Err(_) => return Err(ctx.fail(ProxyError::new(ErrorKind::UpstreamTimeout))),
            },
            None => sent.await,
        };
        match result {
            Ok((response, endpoint)) => {
                let status = response.status().as_u16();
                let grpc = response
                    .headers()
                    .get(GRPC_STATUS)
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
                let retriable = policy.retries_status(status, grpc);
                if !last && retriable {
                    tried.push(endpoint);
                    continue;
                }
                if attempt > 0 && retriable {
                    ctx.flags.insert(Flags::RETRIES_EXHAUSTED);
                }
                ctx.upstream_answered = Some(Instant::now());
                return Ok(response);
            }
            Err((error, endpoint)) => {
                tried.extend(endpoint);
                if matches!(
                    error.kind,
                    ErrorKind::Overflow | ErrorKind::NoHealthyUpstream
                ) {
                    return Err(ctx.fail(error));
                }
                if !last && policy.retries_error(error.kind) {
                    last_error = Some(error);
                    continue;
                }
                if attempt > 0 {
                    ctx.flags.insert(Flags::RETRIES_EXHAUSTED);
                }
                return Err(ctx.fail(error));
            }
        }
    }
    // Stopped early: the retry budget was spent (UO) or the body cannot be resent.
    ctx.flags.insert(Flags::RETRIES_EXHAUSTED);
    Err(match last_error {
        Some(e) => local_reply(e.kind.status(), &e.detail()),
        None => local_reply(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable"),
    })
}

/// Waits before a retry (25 ms doubling, jittered), within the cluster's budget of
/// retries in flight; false (and UO) when the budget is spent.
async fn backoff(ctx: &mut RequestContext, cluster: &ClusterRt, attempt: u32) -> bool {
    let retries = &cluster.state.retries;
    let max = cluster.model.pool.max_retries;
    if max > 0 && retries.load(Ordering::Acquire) >= max {
        ctx.flags.insert(Flags::UPSTREAM_OVERFLOW);
        return false;
    }
    retries.fetch_add(1, Ordering::AcqRel);
    let backoff = Duration::from_millis(25u64 << (attempt - 1).min(3));
    let jitter = Duration::from_millis(rand::below(backoff.as_millis() as u64 + 1));
    tokio::time::sleep(jitter).await;
    retries.fetch_sub(1, Ordering::AcqRel);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(retry_on: &[&str], codes: Vec<u16>) -> RetryRt {
        RetryRt::compile(Some(&RetryPolicy {
            attempts: 2,
            retry_on: retry_on.iter().map(|s| s.to_string()).collect(),
            retriable_status_codes: codes,
            ..RetryPolicy::default()
        }))
    }

    #[test]
    fn a_success_is_never_retried_but_listed_codes_are() {
        let policy = compiled(&["5xx", "retriable-status-codes"], vec![429]);
        assert!(!policy.retries_status(200, None));
        assert!(!policy.retries_status(404, None));
        assert!(policy.retries_status(429, None));
        assert!(policy.retries_status(503, None));
        let grpc = compiled(&["unavailable"], vec![]);
        assert!(grpc.retries_status(200, Some(14)));
        assert!(!grpc.retries_status(200, Some(0)));
    }

    #[test]
    fn errors_are_retried_by_their_conditions_only() {
        let connect = compiled(&["connect-failure"], vec![]);
        assert!(connect.retries_error(ErrorKind::ConnectFailure));
        assert!(!connect.retries_error(ErrorKind::UpstreamReset));
        assert!(!connect.retries_error(ErrorKind::Overflow));
        let none = RetryRt::compile(None);
        assert!(!none.retries_error(ErrorKind::ConnectFailure));
        assert!(!none.retries_status(503, None));
    }
}
