//! Bad traffic gets bounded treatment, not a crash: raw bytes on a real socket.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_model::Route;

async fn proxy() -> std::net::SocketAddr {
    let v1 = Upstream::start("v1");
    let port = free_port();
    let (proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        None,
    )
    .await;
    // Keep the proxy running for the rest of the test process.
    std::mem::forget(proxy);
    addr
}

/// Sends raw bytes and returns whatever comes back before the server closes (bounded).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let addr = proxy().await;
    let big = "a".repeat(100 * 1024);
    let reply = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nhost: reviews\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        status_line(&reply).contains("431"),
        "{}",
        status_line(&reply)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400() {
    let addr = proxy().await;
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nhost: reviews\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    ] {
        let reply = exchange(addr, junk).await;
        assert!(
            status_line(&reply).contains("400") || reply.is_empty(),
            "{:?} -> {}",
            String::from_utf8_lossy(junk),
            status_line(&reply)
        );
    }
}

/// A message framed two ways is read as chunked with Content-Length dropped, and the
/// connection is closed after the one response (RFC 9112 §6.3), so nothing smuggled
/// behind it is ever read; differing Content-Lengths are refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_cannot_smuggle_a_request() {
    let addr = proxy().await;
    let smuggle = b"POST / HTTP/1.1\r\nhost: reviews\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: reviews\r\n\r\n";
    let reply = exchange(addr, smuggle).await;
    assert_eq!(
        reply.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {reply}"
    );
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(
        !reply.contains("/smuggled"),
        "the smuggled request must not reach the upstream: {reply}"
    );
    let doubled =
        b"POST / HTTP/1.1\r\nhost: reviews\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde";
    assert!(status_line(&exchange(addr, doubled).await).contains("400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let addr = proxy().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: rev")
        .await
        .expect("write");
    let started = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the proxy must close a connection whose head never completes"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );
    // The proxy still serves others.
    let r = Client::new(addr)
        .get("reviews", "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 200);
}
