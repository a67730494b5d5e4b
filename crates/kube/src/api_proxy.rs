//! The CLI's way to the control plane in a cluster, as istioctl reaches istiod: each
//! replica's HTTP API through the Kubernetes API server's pod proxy, with the user's
//! own Kubernetes credentials (who may read the API token's Secret may call the API).
//! `GET /api/v1/proxies` is asked of every replica and merged (each knows the proxies
//! connected to it); anything else goes to the first replica that knows the answer.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::ca_secret::{API_TOKEN_KEY, API_TOKEN_SECRET};

/// The control plane's pods (the install's `istiod` Deployment).
pub const SELECTOR: &str = "app=istiod";
/// Its HTTP API's port.
pub const PORT: u16 = 15014;

/// Calls the control plane's API at `path` in `namespace`: a status and a JSON body,
/// or one line saying what is missing.
pub async fn call(
    client: &kube::Client,
    namespace: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let token = secrets
        .get(API_TOKEN_SECRET)
        .await
        .map_err(|e| {
            format!(
                "cannot read Secret {namespace}/{API_TOKEN_SECRET} (is Trellis installed in {namespace}, and may you read its Secrets?): {e}"
            )
        })?
        .data
        .and_then(|d| d.get(API_TOKEN_KEY).map(|t| String::from_utf8_lossy(&t.0).into_owned()))
        .ok_or_else(|| format!("Secret {namespace}/{API_TOKEN_SECRET} has no `{API_TOKEN_KEY}`"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let replicas: Vec<String> = pods
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .map_err(|e| format!("cannot list the control plane's pods in {namespace}: {e}"))?
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    if replicas.is_empty() {
        return Err(format!(
            "no running control-plane pod ({SELECTOR}) in {namespace}: is Trellis installed there?"
        ));
    }
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut answers = Vec::new();
    for replica in &replicas {
        let request = http::Request::builder()
            .method(method)
            .uri(format!(
                "/api/v1/namespaces/{namespace}/pods/{replica}:{PORT}/proxy{path}"
            ))
            .header("x-trellis-token", token.trim())
            .header("content-type", "application/json")
            .body(payload.clone().into_bytes())
            .map_err(|e| e.to_string())?;
        let answer = match client.request_text(request).await {
            Ok(text) => (
                200,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ),
            Err(kube::Error::Api(e)) => (e.code, serde_json::json!({"error": e.message})),
            Err(e) => return Err(format!("cannot reach control-plane pod {replica}: {e}")),
        };
        answers.push(answer);
    }
    if method == "GET" && path == "/api/v1/proxies" {
        let merged: Vec<Value> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .flat_map(|(_, v)| v.as_array().cloned().unwrap_or_default())
            .collect();
        return Ok((200, Value::Array(merged)));
    }
    let last = answers.last().cloned().unwrap_or((404, Value::Null));
    Ok(answers
        .into_iter()
        .find(|(status, _)| *status != 404)
        .unwrap_or(last))
}
