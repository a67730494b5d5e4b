//! The client side of the control plane's JSON API: one request per connection over
//! plain HTTP/1.1 on loopback, with the API's bearer token, answered with a status
//! and a JSON body. No retries; the commands decide what a status means.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;

/// A JSON API call: status code and body. An error (bad address, unreachable, not
/// HTTP) is one line for the user, without a cause chain.
pub fn call(
    target: &super::Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    if target.in_cluster() {
        return call_cluster(target, method, path, body);
    }
    let token = crate::home::api_token(&target.control_plane, target.token_file.as_deref());
    let host = target
        .control_plane
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = host
        .to_socket_addrs()
        .map_err(|e| anyhow!("`{host}` is not a HOST:PORT address: {e}"))?
        .next()
        .ok_or_else(|| anyhow!("`{host}` has no address"))?;
    let unreachable = |e: std::io::Error| {
        anyhow!(
            "cannot reach the control plane at {host}: {e} (is `trellis up` or `trellis control-plane` running? --control-plane picks another address)"
        )
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unreachable)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let authorization = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{authorization}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).map_err(unreachable)?;
    stream.write_all(payload.as_bytes()).map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the control plane at {host} sent a malformed answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The API never uses chunked encoding for these answers (full bodies).
    let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    if status == 401 {
        // The answer says where the token is.
        return Err(anyhow!(
            "{}",
            value["error"]
                .as_str()
                .unwrap_or("the control plane refused the call: no valid API token")
        ));
    }
    Ok((status, value))
}

/// [`call`] for a control plane installed in a cluster (`trellis_kube::api_proxy`).
fn call_cluster(
    target: &super::Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    if method != "GET" {
        return Err(anyhow!(
            "in a cluster, change the mesh with kubectl (`kubectl apply -f FILE`): the cluster is where its configuration lives"
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cluster = &target.cluster;
        let client = trellis_kube::connect::client(
            cluster.kubeconfig.as_deref(),
            cluster.context.as_deref(),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
        trellis_kube::api_proxy::call(&client, &cluster.istio_namespace, method, path, body)
            .await
            .map_err(|e| anyhow!("{e}"))
    })
}
