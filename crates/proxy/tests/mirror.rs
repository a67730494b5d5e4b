//! Mirroring (VirtualService `mirror`) against real upstreams on loopback: every
//! mirrored request of a fresh proxy reaches a healthy mirror, the mirror's own
//! protocol is used (an HTTP/2-only mirror gets HTTP/2), its host carries `-shadow`,
//! and the original request's answer is the primary's.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use trellis_model::*;

/// An upstream that speaks only HTTP/2 (prior knowledge) and counts the requests it
/// got with their versions and hosts.
fn h2_only_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        let authority = req.uri().authority().map(|a| a.to_string());
                        record.lock().expect("record").push(format!(
                            "{:?} {}",
                            req.version(),
                            authority.unwrap_or_default()
                        ));
                        async {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("h2"))))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    (addr, seen)
}

fn mirrored_route(mirror: &str) -> Route {
    Route {
        action: forward(&[("primary", 100)]),
        mirrors: vec![Mirror {
            cluster: mirror.into(),
            percent: 100.0,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_mirrored_at_full_share_reaches_a_healthy_mirror() {
    let primary = Upstream::start("primary");
    let mirror = Upstream::start("mirror");
    for round in 0..3 {
        // A fresh proxy each round: the first requests find no pooled connection.
        let before = mirror.hits.load(Ordering::Relaxed);
        let (_proxy, addr) = start(
            config(
                0,
                vec![mirrored_route("mirror")],
                vec![
                    cluster("primary", vec![endpoint(primary.addr, "v1")]),
                    cluster("mirror", vec![endpoint(mirror.addr, "v2")]),
                ],
            ),
            false,
        )
        .await;
        let mut client = Client::new(addr);
        for _ in 0..50 {
            let r = client.get("reviews", "/", &[]).await.expect("request");
            assert_eq!((r.status, r.upstream.as_str()), (200, "primary"));
        }
        let all = eventually(Duration::from_secs(5), async || {
            mirror.hits.load(Ordering::Relaxed) - before == 50
        })
        .await;
        assert!(
            all,
            "round {round}: the mirror saw {} of 50",
            mirror.hits.load(Ordering::Relaxed) - before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_only_mirror_gets_http2_with_a_shadow_host() {
    let primary = Upstream::start("primary");
    let (mirror_addr, seen) = h2_only_upstream();
    let mut mirror = cluster("mirror", vec![endpoint(mirror_addr, "v2")]);
    mirror.protocol = UpstreamProtocol::Http2;
    let (_proxy, addr) = start(
        config(
            0,
            vec![mirrored_route("mirror")],
            vec![
                cluster("primary", vec![endpoint(primary.addr, "v1")]),
                mirror,
            ],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    for _ in 0..5 {
        let r = client.get("reviews:9080", "/", &[]).await.expect("request");
        assert_eq!(r.upstream, "primary");
    }
    let arrived = eventually(Duration::from_secs(5), async || {
        seen.lock().expect("seen").len() == 5
    })
    .await;
    let seen = seen.lock().expect("seen").clone();
    assert!(arrived, "{seen:?}");
    assert!(
        seen.iter().all(|s| s == "HTTP/2.0 reviews-shadow:9080"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mirror_never_fails_the_request() {
    let primary = Upstream::start("primary");
    let (_held, dead) = refused_addr();
    let (_proxy, addr) = start(
        config(
            0,
            vec![mirrored_route("mirror")],
            vec![
                cluster("primary", vec![endpoint(primary.addr, "v1")]),
                cluster("mirror", vec![endpoint(dead, "v2")]),
            ],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    for _ in 0..10 {
        let r = client.get("reviews", "/", &[]).await.expect("request");
        assert_eq!((r.status, r.flags.as_str()), (200, "-"));
    }
}
