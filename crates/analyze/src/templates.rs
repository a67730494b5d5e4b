//! Pods made from workload templates: a Deployment's pod template analyzed as the running,
//! injected Pod it becomes (so manifests analyze as the mesh Trellis will run), and the way
//! back. Such a pod is not among the inputs; a message about it belongs to the workload the
//! user wrote, at the same field inside its template ([`Origin::path`]).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use trellis_api::Resource;

use crate::analyzers::workloads::PROXY_CONTAINER;

/// The kinds whose pod template becomes a pod: (API group, kind, field path of the template).
const TEMPLATE_KINDS: &[(&str, &str, &str)] = &[("apps", "Deployment", "spec.template")];

/// The workload a made pod came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The resource the user wrote (a Deployment).
    pub owner: &'a Resource,
    /// Where its pod template is (`spec.template`).
    pub template: &'static str,
}

impl Origin<'_> {
    /// The field of the owner that holds a field of the made pod: `spec.containers[0]` of
    /// the pod is `spec.template.spec.containers[0]` of a Deployment; the pod as a whole
    /// (`None`) is the template.
    pub fn path(&self, pod_path: Option<&str>) -> String {
        match pod_path {
            Some(p) if !p.is_empty() => format!("{}.{p}", self.template),
            _ => self.template.to_string(),
        }
    }
}

/// The Pod a workload will run, with the sidecar that Trellis injects, and where its
/// template is; `None` for a resource that has no pod template.
pub(crate) fn template_pod(workload: &Resource) -> Option<(Resource, &'static str)> {
    let &(_, _, path) = TEMPLATE_KINDS
        .iter()
        .find(|(group, kind, _)| workload.kind == *kind && workload.group() == *group)?;
    let template = path
        .split('.')
        .try_fold(&*workload.raw, |v, field| v.get(field))?;
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    // Named after the workload, so that selectors and tallies keep pods apart; never shown
    // (messages name the owner, see `Origin`).
    metadata["name"] = Value::String(format!("{}-template", workload.meta.name));
    if let Some(ns) = &workload.meta.namespace {
        metadata["namespace"] = Value::String(ns.clone());
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        spec = json!({});
    }
    let proxy = json!({"name": PROXY_CONTAINER, "image": "trellis"});
    match spec.get_mut("containers").and_then(Value::as_array_mut) {
        Some(containers) => containers.push(proxy),
        None => spec["containers"] = json!([proxy]),
    }
    let meta: trellis_api::meta::ObjectMeta = serde_json::from_value(metadata.clone()).ok()?;
    let raw = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    let typed: trellis_api::kube::Pod = serde_json::from_value(raw.clone()).ok()?;
    let pod = Resource {
        api_version: "v1".into(),
        kind: "Pod".into(),
        meta,
        spec: trellis_api::Spec::Pod(Arc::new(typed)),
        source: workload.source.clone(),
        node: workload.node.clone(),
        raw: Arc::new(raw),
    };
    Some((pod, path))
}

/// The workloads, as (namespace, Deployment name), that have Pods among `resources`:
/// a Pod owned by ReplicaSet `NAME-HASH` whose `pod-template-hash` label is `HASH`
/// belongs to Deployment `NAME`, as the Deployment controller names them.
pub(crate) fn workloads_with_pods<'r>(
    resources: impl Iterator<Item = &'r Resource>,
) -> HashSet<(&'r str, &'r str)> {
    let mut out = HashSet::new();
    for pod in resources.filter(|r| r.kind == "Pod" && r.group().is_empty()) {
        let Some(hash) = pod.meta.labels.get("pod-template-hash") else {
            continue;
        };
        let owners = pod.raw["metadata"]["ownerReferences"].as_array();
        for owner in owners.into_iter().flatten() {
            if owner["kind"] != "ReplicaSet" {
                continue;
            }
            let deployment = owner["name"]
                .as_str()
                .and_then(|n| n.strip_suffix(hash.as_str()))
                .and_then(|n| n.strip_suffix('-'));
            if let Some(name) = deployment {
                out.insert((pod.meta.namespace.as_deref().unwrap_or(""), name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Vec<Resource> {
        trellis_api::load_str("app.yaml", text).resources
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web
";

    #[test]
    fn a_deployment_template_becomes_an_injected_pod() {
        let deployment = &load(DEPLOYMENT)[0];
        let (pod, template) = template_pod(deployment).expect("a pod");
        assert_eq!(template, "spec.template");
        assert_eq!(pod.kind, "Pod");
        assert_eq!(pod.meta.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.meta.labels.get("app").map(String::as_str), Some("web"));
        let names: Vec<_> = pod.raw["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["web", PROXY_CONTAINER]);
    }

    #[test]
    fn a_deployment_with_running_pods_is_not_also_a_template_when_asked() {
        let text = format!(
            "{DEPLOYMENT}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: idle, namespace: shop}}
spec:
  template:
    metadata: {{labels: {{app: idle}}}}
    spec: {{containers: [{{name: idle, image: idle}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d4f-x2x9q
  namespace: shop
  labels: {{app: web, pod-template-hash: 5d4f}}
  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4f, uid: u1}}]
spec: {{containers: [{{name: web, image: web}}]}}
"
        );
        let resources = load(&text);
        let pods = |templates| {
            let options = crate::Options {
                pods_from_deployments: templates,
                add_ingress_gateway: false,
                ..crate::Options::default()
            };
            let cx = crate::Context::new(&resources, &options);
            let mut names: Vec<String> = cx.of("", "Pod").map(|p| p.meta.name.clone()).collect();
            names.sort();
            names
        };
        use crate::TemplatePods::*;
        assert_eq!(pods(WithoutPods), ["idle-template", "web-5d4f-x2x9q"]);
        assert_eq!(
            pods(Always),
            ["idle-template", "web-5d4f-x2x9q", "web-template"]
        );
        assert_eq!(pods(Never), ["web-5d4f-x2x9q"]);
    }

    #[test]
    fn only_workloads_with_a_template_make_pods() {
        let service = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  template: {}
";
        assert!(template_pod(&load(service)[0]).is_none());
    }

    #[test]
    fn pod_fields_map_into_the_template() {
        let deployment = &load(DEPLOYMENT)[0];
        let origin = Origin {
            owner: deployment,
            template: "spec.template",
        };
        assert_eq!(
            origin.path(Some("spec.containers[0]")),
            "spec.template.spec.containers[0]"
        );
        assert_eq!(
            origin.path(Some("metadata.labels")),
            "spec.template.metadata.labels"
        );
        assert_eq!(origin.path(None), "spec.template");
        assert_eq!(
            deployment.line_of(&origin.path(Some("spec.containers[0]"))),
            11
        );
    }

    /// A Deployment whose template several analyzers have something to say about, and
    /// resources that select its pods.
    const MESH: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v1}
      annotations:
        sidecar.istio.io/bogus: 'yes'
        readiness.status.sidecar.istio.io/initialDelaySeconds: soon
    spec:
      securityContext: {runAsUser: 1337}
      containers:
      - name: web
        image: web
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: one, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: two, namespace: shop}
spec:
  workloadSelector: {labels: {version: v1}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: one, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: two, namespace: shop}
spec:
  selector: {matchLabels: {version: v1}}
";

    #[test]
    fn no_analyzer_names_a_pod_made_from_a_template() {
        let resources = load(MESH);
        let inputs: std::collections::HashSet<String> = resources.iter().map(|r| r.key()).collect();
        let mut all = Vec::new();
        for analyzer in crate::analyzers::ALL {
            let options = crate::Options {
                only: vec![analyzer.name().to_string()],
                add_ingress_gateway: false,
                ..crate::Options::default()
            };
            all.extend(crate::analyze(&resources, &options).expect("known analyzer"));
        }
        for m in &all {
            assert!(inputs.contains(&m.resource()), "not an input: {m}");
            assert!(
                !m.message.contains("web-template"),
                "names the made pod: {m}"
            );
        }
        let on_web = |code: &str| -> Vec<u32> {
            all.iter()
                .filter(|m| m.code == code && m.resource() == "Deployment shop/web")
                .map(|m| m.line.unwrap_or(0))
                .collect()
        };
        // applicationUID reports the Deployment itself and its pod: once, at runAsUser.
        assert_eq!(on_web("IST0144"), [17]);
        // annotations are read from the template's pod: on the Deployment, at the
        // template's `annotations:`.
        assert_eq!(on_web("IST0108"), [13]);
        assert_eq!(on_web("IST0125"), [13]);
        let conflicts: Vec<_> = all.iter().filter(|m| m.code == "IST0110").collect();
        assert_eq!(conflicts.len(), 2, "{all:?}");
        assert!(
            conflicts
                .iter()
                .all(|m| m.message.contains("the pods of Deployment shop/web")),
            "{conflicts:?}"
        );
    }
}
