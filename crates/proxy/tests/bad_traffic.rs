//! Bad traffic gets bounded treatment, not a crash: raw bytes on a real socket.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_model::Route;

async fn proxy() -> std::net::SocketAddr {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let (proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
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
    // Alone, and behind a good request on the same connection (both orders of the
    // two headers): the good one is served, the conflicting one refused with 400 and
    // the connection closed, and what hides behind it never reaches the upstream.
    let good = b"GET /first HTTP/1.1\r\nhost: reviews\r\n\r\n".to_vec();
    let swapped = String::from_utf8_lossy(smuggle)
        .replace(
            "content-length: 4\r\ntransfer-encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 4",
        )
        .into_bytes();
    for (stream, served_first) in [
        (smuggle.to_vec(), false),
        ([good.clone(), smuggle.to_vec()].concat(), true),
        ([good, swapped].concat(), true),
    ] {
        let reply = exchange(addr, &stream).await;
        let statuses: Vec<&str> = reply
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| reply[at..].lines().next().unwrap_or(""))
            .collect();
        let expected: &[&str] = if served_first {
            &["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"]
        } else {
            &["HTTP/1.1 400 Bad Request"]
        };
        assert_eq!(statuses, expected, "{reply}");
        let lower = reply.to_ascii_lowercase();
        assert!(lower.contains("connection: close"), "{reply}");
        assert!(lower.contains("x-response-flags: dpe"), "{reply}");
        assert!(
            !reply.contains("/smuggled"),
            "the smuggled request must not reach the upstream: {reply}"
        );
    }
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
