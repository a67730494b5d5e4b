//! The injection webhook's answer: an `AdmissionReview` (v1) for a Pod CREATE in, the
//! same review back with `allowed` and, when the pod gets a sidecar, a base64 JSONPatch
//! made by `crate::inject` from the raw pod JSON (read as plain JSON, never through a
//! typed Pod, so fields Trellis does not know are neither dropped nor rewritten). The
//! review does not carry the namespace's labels: they are read from the API server.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::{Value, json};

use crate::inject::{Decision, InjectSettings, Scope, decide, inject_pod, patch};

/// The path the injection webhook serves (Istio's).
pub const INJECT_PATH: &str = "/inject";

/// Injects pods for the webhook server: the mesh's settings and a client that reads
/// namespaces.
#[derive(Clone)]
pub struct Injector {
    client: kube::Client,
    settings: InjectSettings,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Injector {
    pub fn new(client: kube::Client, settings: InjectSettings) -> Injector {
        Injector { client, settings }
    }

    pub fn settings(&self) -> &InjectSettings {
        &self.settings
    }

    /// The answer to one review body (the API server's request, as sent).
    pub async fn review(&self, body: &[u8]) -> Value {
        let review: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return refuse("", 400, &format!("cannot read the AdmissionReview: {e}")),
        };
        let request = &review["request"];
        let uid = request["uid"].as_str().unwrap_or("");
        if !wants_injection(request) {
            return allow(uid, None);
        }
        let namespace = request["namespace"]
            .as_str()
            .or(request["object"]["metadata"]["namespace"].as_str())
            .unwrap_or("default");
        let api: Api<Namespace> = Api::all(self.client.clone());
        let labels = match api.get(namespace).await {
            Ok(ns) => ns.metadata.labels.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%namespace, error = %e, "injection: cannot read the namespace");
                return refuse(
                    uid,
                    500,
                    &format!("sidecar injection: cannot read namespace {namespace}: {e}"),
                );
            }
        };
        answer(request, namespace, &labels, &self.settings)
    }
}

/// A Pod being created (not a subresource such as `pods/binding`).
fn wants_injection(request: &Value) -> bool {
    request["kind"]["kind"] == "Pod"
        && request["operation"] == "CREATE"
        && request["subResource"].as_str().is_none_or(str::is_empty)
        && request["object"].is_object()
}

/// The review's answer for `request` (a Pod CREATE) in `namespace` with `labels`.
pub fn answer(
    request: &Value,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    settings: &InjectSettings,
) -> Value {
    let uid = request["uid"].as_str().unwrap_or("");
    let pod = &request["object"];
    let scope = Scope::Namespace {
        name: namespace,
        labels,
    };
    match decide(pod, scope, &settings.revision) {
        Decision::Skip(why) => {
            tracing::debug!(%namespace, ?why, "injection: pod left alone");
            allow(uid, None)
        }
        Decision::Inject => match inject_pod(pod, None, settings) {
            Ok(injected) => {
                let operations = patch(pod, &injected);
                match serde_json::to_vec(&operations) {
                    Ok(json) => allow(uid, Some(json)),
                    Err(e) => refuse(uid, 500, &format!("sidecar injection: {e}")),
                }
            }
            Err(e) => refuse(uid, 400, &format!("sidecar injection: {e}")),
        },
    }
}

fn review(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn allow(uid: &str, patch: Option<Vec<u8>>) -> Value {
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    review(response)
}

fn refuse(uid: &str, code: u16, message: &str) -> Value {
    review(json!({"uid": uid, "allowed": false,
        "status": {"code": code, "message": message, "status": "Failure"}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pod: Value) -> Value {
        json!({"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "shop", "object": pod})
    }

    fn settings() -> InjectSettings {
        InjectSettings::for_control_plane("istio-system", "istiod", "example.org/trellis:1")
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app"}]}})
    }

    fn enabled() -> BTreeMap<String, String> {
        BTreeMap::from([("istio-injection".into(), "enabled".into())])
    }

    #[test]
    fn an_injected_pod_is_answered_with_a_base64_json_patch() {
        let r = request(pod(json!({})));
        let answer = answer(&r, "shop", &enabled(), &settings());
        let response = &answer["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().expect("a patch"))
            .expect("base64");
        let operations: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSONPatch");
        let mut patched = r["object"].clone();
        json_patch::patch(&mut patched, &operations).expect("applies");
        assert_eq!(patched["spec"]["initContainers"][1]["name"], "istio-proxy");
    }

    #[test]
    fn a_pod_left_alone_is_allowed_without_a_patch() {
        let r = request(pod(json!({"sidecar.istio.io/inject": "false"})));
        let answer = answer(&r, "shop", &enabled(), &settings());
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
        let unlabelled = answer_for(&request(pod(json!({}))), &BTreeMap::new());
        assert!(unlabelled["response"].get("patch").is_none());
    }

    fn answer_for(r: &Value, labels: &BTreeMap<String, String>) -> Value {
        answer(r, "shop", labels, &settings())
    }

    #[test]
    fn a_bad_annotation_refuses_the_pod_naming_it() {
        let r = request(pod(json!({"sidecar.istio.io/logLevel": "loud"})));
        let answer = answer_for(&r, &enabled());
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 400);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .expect("a message");
        assert!(
            message.starts_with("sidecar injection: annotation `sidecar.istio.io/logLevel`"),
            "{message}"
        );
    }

    #[test]
    fn only_pod_creates_are_injected() {
        let mut r = request(pod(json!({})));
        assert!(wants_injection(&r));
        r["operation"] = json!("UPDATE");
        assert!(!wants_injection(&r));
        let mut binding = request(pod(json!({})));
        binding["subResource"] = json!("binding");
        assert!(!wants_injection(&binding));
    }
}
