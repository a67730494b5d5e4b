//! Injection into manifests (`trellis kube-inject`): the pod template of each workload
//! kind (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
//! CronJob) or the Pod itself gets what the webhook would add, deciding as istioctl's
//! kube-inject does (the namespace is not asked; a pod's opt-out holds). Other kinds,
//! and every other field, pass through unchanged; `kind: List` items are visited.

use serde_json::Value;

use super::{Decision, InjectError, InjectSettings, Scope, decide, inject_pod};

/// What happened to one pod or pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// `Kind/name` of the object holding it.
    pub object: String,
    pub decision: Decision,
}

/// Returns `document` with its pods injected, and what was decided for each.
pub fn inject_document(
    document: &Value,
    settings: &InjectSettings,
) -> Result<(Value, Vec<Injected>), InjectError> {
    let mut out = document.clone();
    let mut report = Vec::new();
    visit(&mut out, settings, &mut report)?;
    Ok((out, report))
}

fn visit(
    object: &mut Value,
    settings: &InjectSettings,
    report: &mut Vec<Injected>,
) -> Result<(), InjectError> {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let at = format!("{kind}/{name}");
    if kind == "List" {
        if let Some(Value::Array(items)) = object.get_mut("items") {
            for item in items {
                visit(item, settings, report)?;
            }
        }
        return Ok(());
    }
    let pointer = match kind.as_str() {
        "Pod" => "",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return Ok(()),
    };
    let Some(pod) = object.pointer_mut(pointer) else {
        return Err(InjectError::Shape(format!(
            "{at}: no pod template at {pointer}"
        )));
    };
    let decision = decide(pod, Scope::Manual, &settings.revision);
    if decision == Decision::Inject {
        let workload = (kind != "Pod").then_some(name.as_str());
        *pod = inject_pod(pod, workload, settings).map_err(|e| match e {
            InjectError::Shape(s) => InjectError::Shape(format!("{at}: {s}")),
            other => other,
        })?;
    }
    report.push(Injected {
        object: at,
        decision,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::Skip;
    use serde_json::json;

    fn settings() -> InjectSettings {
        InjectSettings::for_control_plane("istio-system", "istiod", "example.org/trellis:1")
    }

    fn deployment(annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reviews-v1", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                "template": {"metadata": {"labels": {"app": "reviews", "version": "v1"},
                    "annotations": annotations},
                    "spec": {"containers": [{"name": "reviews", "image": "reviews:1",
                        "ports": [{"containerPort": 9080}]}]}}}})
    }

    #[test]
    fn a_deployments_template_gets_the_sidecar_and_nothing_else_changes() {
        let before = deployment(json!({}));
        let (after, report) = inject_document(&before, &settings()).expect("injects");
        assert_eq!(report[0].object, "Deployment/reviews-v1");
        assert_eq!(report[0].decision, Decision::Inject);
        let template = &after["spec"]["template"];
        assert_eq!(
            template["spec"]["containers"],
            before["spec"]["template"]["spec"]["containers"]
        );
        assert_eq!(template["spec"]["initContainers"][1]["name"], "istio-proxy");
        assert_eq!(
            template["metadata"]["labels"]["service.istio.io/canonical-name"],
            "reviews"
        );
        assert_eq!(after["spec"]["selector"], before["spec"]["selector"]);
        assert_eq!(after["metadata"], before["metadata"]);
    }

    #[test]
    fn opted_out_templates_and_other_kinds_pass_through() {
        let out = deployment(json!({"sidecar.istio.io/inject": "false"}));
        let (after, report) = inject_document(&out, &settings()).expect("no error");
        assert_eq!(after, out);
        assert_eq!(report[0].decision, Decision::Skip(Skip::PodOptedOut));
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
            "spec": {"ports": [{"port": 9080}]}});
        let (after, report) = inject_document(&service, &settings()).expect("no error");
        assert_eq!(after, service);
        assert!(report.is_empty());
    }

    #[test]
    fn cronjobs_and_list_items_are_reached() {
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "job", "image": "job"}]}}}}}});
        let list =
            json!({"apiVersion": "v1", "kind": "List", "items": [cron, deployment(json!({}))]});
        let (after, report) = inject_document(&list, &settings()).expect("injects");
        assert_eq!(report.len(), 2);
        assert_eq!(
            after["items"][0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]
                [1]["restartPolicy"],
            "Always"
        );
    }

    #[test]
    fn a_template_with_a_bad_annotation_is_an_error() {
        let bad = deployment(json!({"sidecar.istio.io/proxyCPU": "fast"}));
        let e = inject_document(&bad, &settings()).expect_err("refused");
        assert!(
            e.to_string()
                .contains("annotation `sidecar.istio.io/proxyCPU`: \"fast\""),
            "{e}"
        );
    }
}
