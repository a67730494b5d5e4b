//! `trellis x precheck` against a real kube-apiserver (no controller-manager: nothing
//! here needs pods), run as users run it: the admin passes every check, then an
//! `istiod` Deployment Trellis did not install is reported as an existing Istio (a
//! warning) while what `trellis install` applies is not; a service account bound to nothing fails the
//! permission check with what it lacks listed by name; a closed port exits 2 with one
//! line. `-o json` parses in each case.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds, isolate, token};

/// The API server's audience (the harness's `--api-audiences`).
const AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

const NO_CONTROLLERS: ClusterOptions = ClusterOptions {
    controller_manager: false,
};

/// Istio's control plane as its chart makes it (labels trimmed), and a Trellis
/// control plane in another namespace, marked as Trellis's.
const ISTIOD: &str = "apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod, namespace: istio-system, labels: {app: istiod, istio: pilot}}
spec:
  selector: {matchLabels: {app: istiod}}
  template:
    metadata: {labels: {app: istiod}}
    spec: {containers: [{name: discovery, image: docker.io/istio/pilot:1.28.0}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istiod
  namespace: mesh
  labels: {app: istiod, app.kubernetes.io/managed-by: trellis}
spec:
  selector: {matchLabels: {app: istiod}}
  template:
    metadata: {labels: {app: istiod}}
    spec: {containers: [{name: discovery, image: trellis}]}
";

fn precheck(kubeconfig: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["x", "precheck", "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .output()
        .expect("trellis runs")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs with `-o json`, checks the exit code, and parses the report.
fn report(kubeconfig: &Path, code: i32) -> Value {
    let out = precheck(kubeconfig, &["-o", "json"]);
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("-o json does not parse ({e}): {}", describe(&out)))
}

/// The check named `name` in a JSON report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a runtime")
}

#[test]
fn the_admin_passes_and_an_istiod_not_installed_by_trellis_is_reported() {
    let name = "the_admin_passes_and_an_istiod_not_installed_by_trellis_is_reported";
    if !isolate(name) {
        return;
    }
    runtime().block_on(async {
        let Some(cluster) = Cluster::start_with(name, NO_CONTROLLERS).await else {
            return;
        };
        let out = precheck(&cluster.kubeconfig, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let marks: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| ["✔", "!", "✘"].contains(w))
            .collect();
        assert_eq!(marks, ["✔", "✔", "✔"], "{}", describe(&out));
        assert!(
            text.contains(&format!(
                "✔ Kubernetes API server {} reachable, version v1.34.3",
                cluster.url
            )),
            "{}",
            describe(&out)
        );
        assert!(text.contains("Ready for `trellis install`"), "{text}");

        let json = report(&cluster.kubeconfig, 0);
        assert_eq!(json["passed"], true, "{json:#}");
        for c in json["checks"].as_array().expect("checks") {
            assert_eq!(c["status"], "pass", "{c:#}");
        }
        assert_eq!(json["version"]["minor"], 34, "{json:#}");
        assert_eq!(json["permissions"]["checked"], 26, "{json:#}");
        assert_eq!(json["permissions"]["missing"], serde_json::json!([]));

        let yaml = precheck(&cluster.kubeconfig, &["-o", "yaml"]);
        assert_eq!(yaml.status.code(), Some(0), "{}", describe(&yaml));
        assert!(
            String::from_utf8_lossy(&yaml.stdout).contains("passed: true"),
            "{}",
            describe(&yaml)
        );

        // Istio's CRDs alone: compatible, a note under a passing check.
        if install_istio_crds(&cluster, name, &[]) {
            let json = report(&cluster.kubeconfig, 0);
            let istio = check(&json, "existing-istio");
            assert_eq!(istio["status"], "pass", "{istio:#}");
            assert!(
                istio["details"][0]
                    .as_str()
                    .is_some_and(|d| d.starts_with("note: ") && d.contains("compatible")),
                "{istio:#}"
            );
            assert!(
                json["existingIstio"]["crds"]
                    .as_array()
                    .is_some_and(|crds| crds.iter().any(|c| c == "virtualservices.networking.istio.io")),
                "{json:#}"
            );
        }

        // Istio's istiod appears: a warning naming it, not a failure; Trellis's own
        // istiod (marked) is not reported.
        let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(ISTIOD));
        assert!(ok, "kubectl apply: {err}");
        let out = precheck(&cluster.kubeconfig, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("! existing Istio installation found: run Istio or Trellis, not both"),
            "{}",
            describe(&out)
        );
        assert!(
            text.contains("Istio's control plane: Deployment istio-system/istiod"),
            "{text}"
        );
        assert!(text.contains("run one or the other"), "{text}");
        assert!(!text.contains("mesh/istiod"), "{text}");
        assert!(
            text.contains("No check failed: read the warnings above"),
            "{text}"
        );

        let json = report(&cluster.kubeconfig, 0);
        assert_eq!(json["passed"], true, "{json:#}");
        assert_eq!(check(&json, "existing-istio")["status"], "warn");
        assert_eq!(
            json["existingIstio"]["controlPlane"],
            serde_json::json!([{"kind": "Deployment", "namespace": "istio-system", "name": "istiod"}]),
            "{json:#}"
        );
    });
}

#[test]
fn trellis_own_objects_are_not_taken_for_istio() {
    let name = "trellis_own_objects_are_not_taken_for_istio";
    if !isolate(name) {
        return;
    }
    runtime().block_on(async {
        let Some(cluster) = Cluster::start_with(name, NO_CONTROLLERS).await else {
            return;
        };
        // What `trellis install` applies (its `istiod` Deployment and Service, the
        // gateways, the webhook configuration, the CRDs), without waiting for pods.
        let manifests = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(["manifest", "generate", "--set", "profile=demo"])
            .output()
            .expect("trellis runs");
        assert!(manifests.status.success(), "{}", describe(&manifests));
        let yaml = String::from_utf8_lossy(&manifests.stdout);
        let (ok, _, err) = cluster.kubectl_run(&["apply", "--server-side", "-f", "-"], Some(&yaml));
        assert!(ok, "kubectl apply: {err}");

        let out = precheck(&cluster.kubeconfig, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("✔ no existing Istio control plane or webhooks"),
            "{text}"
        );
        assert!(text.contains("Ready for `trellis install`"), "{text}");
        let json = report(&cluster.kubeconfig, 0);
        for list in [
            "controlPlane",
            "webhooks",
            "workloads",
            "crds",
            "unreadable",
        ] {
            assert_eq!(
                json["existingIstio"][list],
                serde_json::json!([]),
                "{list}: {json:#}"
            );
        }
    });
}

#[test]
fn a_user_without_rights_fails_the_permission_check() {
    let name = "a_user_without_rights_fails_the_permission_check";
    if !isolate(name) {
        return;
    }
    runtime().block_on(async {
        let Some(cluster) = Cluster::start_with(name, NO_CONTROLLERS).await else {
            return;
        };
        let (ok, _, err) =
            cluster.kubectl_run(&["create", "serviceaccount", "nobody", "-n", "default"], None);
        assert!(ok, "kubectl create serviceaccount: {err}");
        let client = cluster.client().await;
        let token = token(&client, "default", "nobody", AUDIENCE)
            .await
            .expect("a token for the service account");
        let kubeconfig = cluster.dir().join("nobody.kubeconfig");
        cluster
            .kubeconfig_for(&token, &kubeconfig)
            .expect("the kubeconfig is written");

        let out = precheck(&kubeconfig, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        // Anyone may read /version: that check still passes.
        assert!(text.contains("✔ Kubernetes API server"), "{text}");
        assert!(
            text.contains("✘ permissions: 26 of the 26 that `trellis install` needs are missing"),
            "{text}"
        );
        for missing in [
            "missing: create, patch customresourcedefinitions.apiextensions.k8s.io cluster-wide",
            "missing: create, patch namespaces cluster-wide",
            "missing: create, patch clusterroles.rbac.authorization.k8s.io cluster-wide",
            "missing: create, patch deployments.apps in istio-system",
            "missing: create, patch poddisruptionbudgets.policy in istio-system",
            "missing: create, patch validatingwebhookconfigurations.admissionregistration.k8s.io cluster-wide",
            "missing: create, patch mutatingwebhookconfigurations.admissionregistration.k8s.io cluster-wide",
        ] {
            assert!(text.contains(missing), "no {missing:?} in:\n{text}");
        }
        // It may not list what Istio would leave either: said, not hidden.
        assert!(
            text.contains("! could not tell whether Istio is installed"),
            "{text}"
        );
        assert!(
            text.contains(
                "could not look, forbidden to: list deployments.apps labelled app=istiod in every namespace; "
            ),
            "{text}"
        );
        assert!(text.contains("1 check failed"), "{text}");

        let json = report(&kubeconfig, 1);
        assert_eq!(json["passed"], false);
        assert_eq!(check(&json, "permissions")["status"], "fail");
        let missing = json["permissions"]["missing"].as_array().expect("missing");
        assert_eq!(missing.len(), 26, "{json:#}");
        assert!(
            missing.contains(&serde_json::json!({
                "verb": "create", "group": "apps", "resource": "deployments", "namespace": "istio-system"
            })),
            "{json:#}"
        );
    });
}

#[test]
fn an_unreachable_server_exits_2_with_one_line() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let kubeconfig = dir.path().join("closed.kubeconfig");
    let port = trellis_kube::testing::write_unreachable_kubeconfig(&kubeconfig)
        .expect("the kubeconfig is written");
    for format in ["text", "json"] {
        let out = precheck(&kubeconfig, &["-o", format]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(out.stdout.is_empty(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{}", describe(&out));
        assert!(
            stderr.starts_with(&format!(
                "error: cannot talk to the Kubernetes API server at https://127.0.0.1:{port}: "
            )) && stderr.contains("refused"),
            "{}",
            describe(&out)
        );
    }
}
