//! The proxy's life as an orchestrator sees it, with real processes on loopback:
//! SIGTERM drains (in-flight HTTP/1.1 and HTTP/2 requests finish, HTTP/2 clients get
//! GOAWAY, new connections are refused, the process exits 0 within the drain time),
//! `/healthz/ready` on the status port answers 503 before the first config and while
//! draining, and a sidecar taken away under load fails no request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod common;
use common::{Running, address_block, http_get, spawn, spawn_echo, spawn_proxy, wait_for_line};

/// A ServiceEntry `echo.local` on `port` with `endpoints`, and a Gateway on 8080
/// routing everything to it.
fn mesh_yaml(port: u16, endpoints: &[String]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{address: {a}}}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{endpoints}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [edge]
  http:
  - route:
    - destination: {{host: echo.local}}
",
        endpoints = endpoints.join(", ")
    )
}

/// Sends SIGTERM to `process`.
fn terminate(process: &Running) {
    let status = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits (bounded) for `process` to exit: its exit code and how long that took.
fn wait_exit(process: &mut Running, within: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(status)) = process.0.try_wait() {
            return (status.code(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the proxy did not exit within {within:?}");
}

/// Polls `probe` (bounded) until it holds.
fn until(what: &str, within: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// The status port's answer: status code and body.
fn readiness(status: SocketAddr) -> Option<(u16, String)> {
    http_get(status, "status", "/healthz/ready").ok()
}

/// The address in a `  status: http://ADDR/healthz/ready` line.
fn status_addr(line: &str) -> SocketAddr {
    common::address_after(line, "status: http://")
}

/// Requests in flight to the gateway's upstream, as the admin endpoint counts them.
fn active_requests(admin: SocketAddr) -> u64 {
    let Ok((_, text)) = http_get(admin, "admin", "/clusters") else {
        return 0;
    };
    text.lines()
        .filter(|l| l.contains("::circuit_breakers::rq_active::"))
        .filter_map(|l| l.rsplit("::").next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_and_refuses_new_ones() {
    let (_echo, echo) = spawn_echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = mesh_yaml(echo.port(), &["127.0.0.1".to_string()]);
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write");
    let (mut proxy, addrs, out) = spawn_proxy(&[
        "proxy",
        "--standalone",
        dir.path().to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        "8080=0",
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
        "--status-port",
        "0",
        "--drain-duration",
        "5s",
    ]);
    let gateway = addrs.listener();
    let status = status_addr(&wait_for_line(&out, "status: http://"));
    assert_eq!(readiness(status), Some((200, "LIVE\n".to_string())));
    assert_eq!(
        http_get(addrs.stats, "stats", "/healthz/ready").map(|(s, _)| s),
        Ok(200),
        "the stats port says the same"
    );

    // An idle HTTP/1.1 keep-alive connection, one request served.
    let mut idle = TcpStream::connect(gateway).expect("connect");
    idle.write_all(b"GET /hello HTTP/1.1\r\nhost: app\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("a response");
    assert_eq!(&first, b"HTTP/1.1 200");

    // A slow HTTP/1.1 request and a slow HTTP/2 stream, in flight when the signal comes.
    let slow_h1 = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(gateway).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /delay/1500 HTTP/1.1\r\nhost: app\r\n\r\n")
            .expect("write");
        // Read to the end: the proxy closes the connection after the response.
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text
    });
    let tcp = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let h2_connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("h2 ready");
    let request = http::Request::get("http://app/delay/1500")
        .body(())
        .expect("request");
    let (slow_h2, _) = h2.send_request(request, true).expect("h2 request");
    until(
        "both slow requests in flight",
        Duration::from_secs(5),
        || active_requests(addrs.admin) >= 2,
    );

    terminate(&proxy);
    let signalled = Instant::now();
    until("readiness to turn 503", Duration::from_secs(2), || {
        readiness(status).is_some_and(|(code, body)| code == 503 && body == "DRAINING\n")
    });
    until(
        "new connections to be refused",
        Duration::from_secs(2),
        || matches!(TcpStream::connect(gateway), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
    );
    // The idle keep-alive connection is closed after a short grace (end of stream, no
    // answer), long before the slow requests finish.
    idle.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(
        signalled.elapsed() < Duration::from_millis(1400),
        "the idle connection was closed before the slow requests finished: {:?}",
        signalled.elapsed()
    );

    // The in-flight HTTP/2 stream completes; GOAWAY came before its response (it was
    // sent when the drain began), so a new stream on the connection is refused by it.
    let response = slow_h2.await.expect("the in-flight h2 stream's response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.expect("h2 body");
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&received).contains("/delay/1500"),
        "{received:?}"
    );
    let again = http::Request::get("http://app/hello")
        .body(())
        .expect("request");
    let refused = match h2.send_request(again, true) {
        Err(e) => e,
        Ok((response, _)) => response.await.expect_err("no new stream after GOAWAY"),
    };
    assert!(
        refused.is_go_away() && refused.is_remote(),
        "refused by the server's GOAWAY: {refused:?}"
    );
    assert_eq!(refused.reason(), Some(h2::Reason::NO_ERROR));
    let ended = tokio::time::timeout(Duration::from_secs(5), h2_connection)
        .await
        .expect("the h2 connection ends")
        .expect("joined");
    assert!(ended.is_ok(), "closed cleanly: {ended:?}");

    // The in-flight HTTP/1.1 request completes, told the connection closes.
    let text = tokio::task::spawn_blocking(move || slow_h1.join().expect("h1 thread"))
        .await
        .expect("joined");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("/delay/1500"), "{text}");

    // Nothing left open: the proxy exits 0 well within its 5 s drain time.
    let (code, _) = wait_exit(&mut proxy, Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "exited once drained, not at the deadline: {:?}",
        signalled.elapsed()
    );
    wait_for_line(&out, "drained in");
}

#[test]
fn the_drain_ends_at_its_deadline_and_a_second_signal_ends_it_at_once() {
    let (_echo, echo) = spawn_echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = mesh_yaml(echo.port(), &["127.0.0.1".to_string()]);
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write");
    let args = [
        "proxy",
        "--standalone",
        dir.path().to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        "8080=0",
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
        "--drain-duration",
        "1s",
    ];
    // A request longer than the drain: the proxy exits 0 at the deadline.
    let (mut proxy, addrs, out) = spawn_proxy(&args);
    let gateway = addrs.listener();
    let slow = std::thread::spawn(move || http_get(gateway, "app", "/delay/8000"));
    until("the slow request in flight", Duration::from_secs(5), || {
        active_requests(addrs.admin) >= 1
    });
    terminate(&proxy);
    let (code, took) = wait_exit(&mut proxy, Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "the drain waited: {took:?}"
    );
    wait_for_line(&out, "1 connections still open");
    assert!(
        slow.join().expect("joined").is_err(),
        "cut off at the deadline"
    );

    // A second SIGTERM during the drain ends the process at once (143 = 128 + 15).
    let (mut proxy, addrs, _out) = spawn_proxy(&args);
    let gateway = addrs.listener();
    let _slow = std::thread::spawn(move || http_get(gateway, "app", "/delay/8000"));
    until("the slow request in flight", Duration::from_secs(5), || {
        active_requests(addrs.admin) >= 1
    });
    terminate(&proxy);
    until("the drain to begin", Duration::from_secs(2), || {
        http_get(addrs.stats, "stats", "/healthz/ready").is_ok_and(|(s, _)| s == 503)
    });
    terminate(&proxy);
    let (code, took) = wait_exit(&mut proxy, Duration::from_secs(5));
    assert_eq!(code, Some(143));
    assert!(took < Duration::from_millis(900), "at once: {took:?}");
}

#[test]
fn a_proxy_is_not_ready_until_the_control_plane_configures_it() {
    let block = address_block();
    let ip = |host: u8| format!("127.{}.0.{host}", block.block);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let config = dir.path().join("mesh");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(
        config.join("mesh.yaml"),
        mesh_yaml(9080, &["127.0.0.1".to_string()]),
    )
    .expect("write");
    let grpc = format!("{}:15012", ip(1));
    let control_plane = |state: &std::path::Path| {
        spawn(
            &[
                "control-plane",
                "--config",
                config.to_str().expect("path"),
                "--grpc",
                &grpc,
                "--http",
                &format!("{}:0", ip(1)),
                "--state-dir",
                state.to_str().expect("path"),
            ],
            "ready",
        )
        .0
    };
    // A first start makes the mesh CA; the proxy then starts with no control plane.
    drop(control_plane(&state));
    let token = trellis_identity::BootstrapTokens::open(&state.join("tokens"))
        .expect("token store")
        .mint(
            &trellis_identity::WorkloadIdentity::new("default", "sleep").expect("identity"),
            Duration::from_secs(600),
        )
        .expect("a token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token.secret()).expect("write");
    let pod = ip(2);
    let (mut proxy, _, out) = spawn(
        &[
            "proxy",
            "--control-plane",
            &grpc,
            "--id",
            "sleep-0",
            "--name",
            "sleep",
            "--service-account",
            "sleep",
            "--pod-ip",
            &pod,
            "--listen",
            &format!("{pod}:0"),
            "--admin",
            &format!("{pod}:0"),
            "--stats",
            &format!("{pod}:0"),
            "--status-port",
            "0",
            "--ca-root",
            state.join("ca/ca-cert.pem").to_str().expect("path"),
            "--bootstrap-token-file",
            token_file.to_str().expect("path"),
        ],
        "following the control plane",
    );
    let status = status_addr(&wait_for_line(&out, "status: http://"));
    assert_eq!(status.ip().to_string(), pod, "on the pod IP");
    // Not ready while the control plane is away (looked at for a while, not once).
    for _ in 0..10 {
        assert_eq!(
            readiness(status),
            Some((503, "PRE_INITIALIZING\n".to_string()))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _control_plane = control_plane(&state);
    until("the proxy to be ready", Duration::from_secs(20), || {
        readiness(status).is_some_and(|(code, _)| code == 200)
    });
    assert_eq!(readiness(status), Some((200, "LIVE\n".to_string())));

    // Following a control plane, SIGTERM leaves it and drains (nothing open: at once).
    terminate(&proxy);
    let (code, took) = wait_exit(&mut proxy, Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Starts `trellis echo` answering as `name`: the process and its address.
fn echo_named(name: &str) -> (Running, SocketAddr) {
    let (echo, ready, _) = spawn(
        &["echo", "--listen", "127.0.0.1:0", "--name", name],
        "listening on http://",
    );
    (echo, common::address_after(&ready, "listening on http://"))
}

#[test]
fn a_sidecar_stopped_under_load_fails_no_request() {
    let block = address_block();
    let ip = |host: u8| format!("127.{}.0.{host}", block.block);
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = [ip(1), ip(2)];
    std::fs::write(dir.path().join("mesh.yaml"), mesh_yaml(9080, &endpoints)).expect("write");
    let mesh = dir.path().to_str().expect("path");
    // Two replicas, each an echo behind its own sidecar's inbound listener.
    let mut sidecars = Vec::new();
    let mut echoes = Vec::new();
    for (pod, name) in endpoints.iter().zip(["echo-a", "echo-b"]) {
        let (echo, app) = echo_named(name);
        echoes.push(echo);
        let inbound = format!("{pod}:9080={app}");
        let any = format!("{pod}:0");
        let (sidecar, _, _) = spawn_proxy(&[
            "proxy",
            "--standalone",
            mesh,
            "--role",
            "sidecar",
            "--name",
            name,
            "--listen",
            &any,
            "--inbound",
            &inbound,
            "--admin",
            &any,
            "--stats",
            &any,
        ]);
        sidecars.push(sidecar);
    }
    let (_gateway, addrs, _) = spawn_proxy(&[
        "proxy",
        "--standalone",
        mesh,
        "--role",
        "gateway",
        "--bind",
        &ip(3),
        "--port-map",
        "8080=0",
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
    ]);
    let gateway = addrs.listener();

    // A bounded load: a few clients, each until its count or the time is up.
    const CLIENTS: usize = 3;
    const REQUESTS: usize = 300;
    let stop_at = Instant::now() + Duration::from_secs(15);
    let (tx, answers) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for _ in 0..REQUESTS {
                    if Instant::now() > stop_at {
                        break;
                    }
                    let _ = tx.send(http_get(gateway, "app", "/delay/20"));
                }
            })
        })
        .collect();
    drop(tx);
    let mut tally = Tally::default();
    // Some traffic reaches both replicas, then B's sidecar gets SIGTERM mid-load.
    while tally.a < 20 || tally.b < 20 {
        let answer = answers
            .recv_timeout(Duration::from_secs(5))
            .expect("answers keep coming");
        tally.record(answer);
    }
    let mut b = sidecars.pop().expect("B");
    terminate(&b);
    let before = tally.total;
    for answer in answers.iter() {
        tally.record(answer);
    }
    for c in clients {
        c.join().expect("client");
    }
    let Tally {
        total, failures, ..
    } = tally;
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {failures:?}",
        failures.len()
    );
    assert!(
        total - before >= 100,
        "load went on after the signal: {total} in all, {before} before"
    );
    let (code, _) = wait_exit(&mut b, Duration::from_secs(10));
    assert_eq!(code, Some(0), "B's sidecar drained and exited 0");
}

/// Answers by replica, and the failures as they came.
#[derive(Default)]
struct Tally {
    a: usize,
    b: usize,
    total: usize,
    failures: Vec<Result<(u16, String), String>>,
}

impl Tally {
    fn record(&mut self, answer: Result<(u16, String), String>) {
        self.total += 1;
        match answer {
            Ok((200, body)) if body.contains("\"service\":\"echo-b\"") => self.b += 1,
            Ok((200, _)) => self.a += 1,
            other => self.failures.push(other),
        }
    }
}
