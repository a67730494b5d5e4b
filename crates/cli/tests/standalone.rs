//! `trellis proxy --standalone` as a user runs it: real processes (the proxy and
//! `trellis echo`), real HTTP/1.1, h2c and gRPC on loopback, and live reloads of the
//! configuration directory — a good edit takes effect, a bad one is refused and the
//! previous configuration keeps serving.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

mod common;
use common::{spawn_echo, spawn_proxy, wait_for_line};

/// The Gateway's server port; `--port-map 8080=0` lets the OS choose where it listens.
const GATEWAY_PORT: u16 = 8080;

fn mesh_yaml(echo: SocketAddr, rule: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http2, protocol: HTTP2}}]
  endpoints: [{{address: 127.0.0.1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [edge]
  http:
{rule}",
        port = echo.port()
    )
}

const FORWARD: &str = "  - route:\n    - destination: {host: echo.local}\n";
const TEAPOT: &str = "  - directResponse: {status: 418, body: {string: teapot}}\n";

async fn get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "app.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_gateway_routes_reloads_and_refuses_bad_edits() {
    let (_echo, echo_addr) = spawn_echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh_yaml(echo_addr, FORWARD)).expect("write");
    let port_map = format!("{GATEWAY_PORT}=0");
    let (_proxy, addrs, out) = spawn_proxy(&[
        "proxy",
        "--standalone",
        dir.path().to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        &port_map,
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
    ]);
    let addr = addrs.listener();
    let (status, headers, body) = get(addr, "/hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("x-response-flags").map(|v| v.as_bytes()),
        Some(&b"-"[..])
    );
    assert!(body.contains("\"path\":\"/hello\""), "{body}");

    // gRPC over h2c through the gateway: the trailers (grpc-status) come back.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("http://app.example.com/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let response = h2.send_request(req).await.expect("grpc response");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );

    // A good edit takes effect.
    std::fs::write(&file, mesh_yaml(echo_addr, TEAPOT)).expect("write");
    wait_for_line(&out, "reloaded");
    assert_eq!(get(addr, "/").await.0, 418);

    // A bad edit is refused, named with file and line, and the last good config keeps serving.
    std::fs::write(
        &file,
        mesh_yaml(
            echo_addr,
            "  - route:\n    - destination: {host: echo.local}\n      wieght: 5\n",
        ),
    )
    .expect("write");
    let refusal = wait_for_line(&out, "rejected");
    let detail = wait_for_line(&out, "wieght");
    assert!(detail.contains("mesh.yaml:"), "{refusal} / {detail}");
    assert_eq!(get(addr, "/").await.0, 418);

    // Metrics were recorded with Istio's names.
    let (_, _, metrics) = get(addrs.stats, "/stats/prometheus").await;
    assert!(
        metrics.contains("istio_requests_total{reporter=\"source\""),
        "{metrics}"
    );
    assert!(metrics.contains("response_code=\"418\""), "{metrics}");
    assert!(Path::new(&file).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_policy_on_the_gateway_is_enforced() {
    let (_echo, echo_addr) = spawn_echo();
    let dir = tempfile::tempdir().expect("tempdir");
    // The standalone gateway runs as namespace default with istio=ingressgateway.
    let policy = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: default}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/admin*\"]}}]\n";
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!("{}{policy}", mesh_yaml(echo_addr, FORWARD)),
    )
    .expect("write");
    let port_map = format!("{GATEWAY_PORT}=0");
    let (_proxy, addrs, _) = spawn_proxy(&[
        "proxy",
        "--standalone",
        dir.path().to_str().expect("path"),
        "--role",
        "gateway",
        "--bind",
        "127.0.0.1",
        "--port-map",
        &port_map,
        "--admin",
        "127.0.0.1:0",
        "--stats",
        "127.0.0.1:0",
    ]);
    let gateway = addrs.listener();
    let (status, headers, body) = get(gateway, "/admin/users").await;
    assert_eq!((status, body.trim()), (403, "RBAC: access denied"));
    assert_eq!(
        headers
            .get("x-response-flags")
            .and_then(|v| v.to_str().ok()),
        Some("RBAC")
    );
    assert_eq!(get(gateway, "/public").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_the_request_and_its_flags_as_text_or_json() {
    let (_echo, echo_addr) = spawn_echo();
    for encoding in ["text", "json"] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mesh.yaml"), mesh_yaml(echo_addr, FORWARD)).expect("write");
        let port_map = format!("{GATEWAY_PORT}=0");
        let (_proxy, addrs, out) = spawn_proxy(&[
            "proxy",
            "--standalone",
            dir.path().to_str().expect("path"),
            "--role",
            "gateway",
            "--bind",
            "127.0.0.1",
            "--port-map",
            &port_map,
            "--admin",
            "127.0.0.1:0",
            "--stats",
            "127.0.0.1:0",
            "--access-log",
            "--access-log-encoding",
            encoding,
        ]);
        let addr = addrs.listener();
        assert_eq!(get(addr, "/logged?x=1").await.0, 200);
        let line = wait_for_line(&out, "/logged?x=1");
        if encoding == "json" {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
            assert_eq!(v["method"], "GET", "{v}");
            assert_eq!(v["path"], "/logged?x=1", "{v}");
            assert_eq!(v["response_code"], 200, "{v}");
            assert_eq!(v["response_flags"], "-", "{v}");
            assert_eq!(v["upstream_host"], echo_addr.to_string(), "{v}");
            assert!(
                v["upstream_cluster"]
                    .as_str()
                    .is_some_and(|c| c.contains("echo.local")),
                "{v}"
            );
            assert!(
                v["x_request_id"].as_str().is_some_and(|id| id.len() == 36),
                "{v}"
            );
            assert!(v["bytes_sent"].as_u64().is_some_and(|b| b > 0), "{v}");
        } else {
            assert!(
                line.contains("\"GET /logged?x=1 HTTP/1.1\" 200 -")
                    && line.contains(&echo_addr.to_string()),
                "{line}"
            );
        }
    }
}
