//! HTTP/1.1 upgrades (WebSocket and the like): the downstream's upgrade is taken
//! before the request is forwarded, and once the upstream answers 101 the two
//! connections are joined byte for byte.

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

/// The downstream side of an upgrade, when `req` asks for one.
pub fn requested(req: &mut Request<Incoming>) -> Option<OnUpgrade> {
    (req.version() == Version::HTTP_11 && super::headers::is_upgrade(req.headers()))
        .then(|| hyper::upgrade::on(req))
}

/// Joins the two sides once the upstream switched protocols; `open` counts the
/// tunnel as an open connection (a drain waits for it, up to its deadline).
pub fn tunnel(
    downstream: OnUpgrade,
    response: &mut Response<Incoming>,
    open: crate::lifecycle::Open,
) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream = hyper::upgrade::on(response);
    tokio::spawn(async move {
        if let (Ok(down), Ok(up)) = (downstream.await, upstream.await) {
            let mut down = hyper_util::rt::TokioIo::new(down);
            let mut up = hyper_util::rt::TokioIo::new(up);
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
        drop(open);
    });
}
