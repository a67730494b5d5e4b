//! Byte streams through the proxy: an HTTP/1.1 upgrade (as WebSocket does) tunnelled
//! once the upstream agrees, and opaque TCP on a TCP listener, both against raw-socket
//! upstreams on loopback.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_model::*;

/// An upstream that answers any request head with 101 and then echoes bytes back.
async fn upgrading_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(
                    text.contains("upgrade: websocket"),
                    "the upgrade header reaches the upstream: {text}"
                );
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n").await;
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TCP upstream that prefixes its name to whatever it echoes.
async fn tcp_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = name.as_bytes().to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if s.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn read_some(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < want && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_tunnelled_both_ways() {
    let upstream = upgrading_upstream().await;
    let port = 0; // the OS picks; `start` says which
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("ws", 100)]),
                ..Default::default()
            }],
            vec![cluster("ws", vec![endpoint(upstream, "v1")])],
        ),
        false,
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nhost: reviews\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_some(&mut s, 12).await;
    let text = String::from_utf8_lossy(&head).into_owned();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // Whatever follows the head is the tunnel: bytes go up and come back.
    let mut rest = head[head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4..]
        .to_vec();
    s.write_all(b"ping over the tunnel").await.expect("write");
    while rest.len() < 20 {
        let more = read_some(&mut s, 20 - rest.len()).await;
        if more.is_empty() {
            break;
        }
        rest.extend(more);
    }
    assert_eq!(String::from_utf8_lossy(&rest), "ping over the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_open_tunnels_until_its_deadline() {
    let upstream = upgrading_upstream().await;
    let (proxy, addr) = start(
        config(
            0,
            vec![Route {
                action: forward(&[("ws", 100)]),
                ..Default::default()
            }],
            vec![cluster("ws", vec![endpoint(upstream, "v1")])],
        ),
        false,
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nhost: reviews\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_some(&mut s, 12).await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");

    // The tunnel is open: the drain runs to its deadline and counts it as left open.
    let started = std::time::Instant::now();
    let (proxy, left) = tokio::task::spawn_blocking(move || {
        let left = proxy.drain(Duration::from_millis(300));
        (proxy, left)
    })
    .await
    .expect("joined");
    assert_eq!(left, 1, "the tunnel");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    // It still carries bytes; once it closes, nothing is left open.
    s.write_all(b"still here").await.expect("write");
    let echoed = read_some(&mut s, 10).await;
    assert!(echoed.ends_with(b"still here"), "{echoed:?}");
    drop(s);
    let left = tokio::task::spawn_blocking(move || proxy.drain(Duration::from_secs(5)))
        .await
        .expect("joined");
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listeners_proxy_opaque_bytes_by_weight() {
    let a = tcp_echo("a:").await;
    let b = tcp_echo("b:").await;
    let port = 0; // the OS picks; `start` says which
    let mut cfg = config(
        port,
        vec![],
        vec![
            cluster("a", vec![endpoint(a, "v1")]),
            cluster("b", vec![endpoint(b, "v2")]),
        ],
    );
    cfg.listeners[0].protocol = ListenerProtocol::Tcp;
    cfg.listeners[0].route_table = None;
    cfg.listeners[0].tcp_routes = vec![TcpRoute {
        name: "split".into(),
        sni: vec![],
        clusters: vec![
            WeightedCluster {
                cluster: "a".into(),
                weight: 80,
                ..Default::default()
            },
            WeightedCluster {
                cluster: "b".into(),
                weight: 20,
                ..Default::default()
            },
        ],
    }];
    let (proxy, addr) = start(cfg, true).await;
    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"hello").await.expect("write");
        let reply = read_some(&mut s, 7).await;
        match &reply[..] {
            b"a:hello" => to_a += 1,
            b"b:hello" => to_b += 1,
            other => panic!("unexpected reply {:?}", String::from_utf8_lossy(other)),
        }
    }
    // 20% of 200: sd ~5.7; allow 4.5 sd.
    assert!((to_b as f64 - 40.0).abs() <= 26.0, "a {to_a}, b {to_b}");
    let stats_addr = proxy.stats_addr().expect("stats served");
    let mut text = String::new();
    let found = eventually(Duration::from_secs(3), async || {
        text = Client::new(stats_addr)
            .get("localhost", "/stats/prometheus", &[])
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        text.contains("istio_tcp_connections_closed_total{")
            && text.contains("istio_tcp_received_bytes_total{")
    })
    .await;
    assert!(found, "{text}");
}
