//! `trellis install` and `uninstall` against a real kube-apiserver, controller-manager
//! and etcd. The test's kubelet runs what the install's pods ask for — the control
//! plane's and the gateway's containers are the `trellis` binary with the manifests'
//! arguments — under the pods' own service accounts (a kubeconfig with the pod's
//! token), so the least-privilege RBAC the install writes is what the control plane
//! really runs with. The API server reaches the validating webhook through the
//! `istiod` Service, as in a cluster.

mod common;
use common::install_pods::runner;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trellis_kube::testing::{Cluster, Kubelet, isolate};

fn trellis() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

#[test]
fn install_runs_the_demo_profile_and_uninstall_removes_it() {
    if !isolate("install_runs_the_demo_profile_and_uninstall_removes_it") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario());
}

fn run(args: &[&str], kubeconfig: &Path) -> std::process::Output {
    Command::new(trellis())
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("trellis runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MISSPELT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      wieght: 100
";

const MISSING_SUBSET: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
";

async fn scenario() {
    let name = "install_runs_the_demo_profile_and_uninstall_removes_it";
    let Some(cluster) = Cluster::start(name).await else {
        return;
    };
    let client = cluster.client().await;
    let _kubelet = Kubelet::start(
        &cluster,
        runner(client.clone(), cluster.url.clone(), cluster.ca_file.clone()),
    )
    .await;
    let kubeconfig = cluster.kubeconfig.clone();

    // Without -y and without a terminal, nothing is done.
    let refused = run(&["install", "--set", "profile=demo"], &kubeconfig);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("-y"),
        "{}",
        text(&refused.stderr)
    );

    let installed = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        move || {
            run(
                &[
                    "install",
                    "--set",
                    "profile=demo",
                    "-y",
                    "--readiness-timeout",
                    "120s",
                ],
                &kubeconfig,
            )
        }
    })
    .await
    .expect("install ran");
    let out = text(&installed.stdout);
    assert_eq!(
        installed.status.code(),
        Some(0),
        "{out}\n{}",
        text(&installed.stderr)
    );
    assert!(out.contains("Installation complete"), "{out}");
    assert!(out.contains("istio-system/istiod ready"), "{out}");
    assert!(
        out.contains("istio-system/istio-ingressgateway ready"),
        "{out}"
    );

    // The control plane runs with the install's RBAC: it took the Lease, and its
    // webhook (reached through the istiod Service) refuses a misspelt field with
    // validate's message.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, holder, _) = cluster.kubectl_run(
            &[
                "get",
                "lease",
                "-n",
                "istio-system",
                "trellis-control-plane",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        );
        if holder.starts_with("istiod-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the Lease: {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // proxy-status and proxy-config reach the control plane through the API server
    // with the user's credentials: the gateways are there and in sync.
    let deadline = Instant::now() + Duration::from_secs(30);
    let gateways = loop {
        let status = run(&["proxy-status", "-o", "json"], &kubeconfig);
        let list: serde_json::Value =
            serde_json::from_slice(&status.stdout).unwrap_or(serde_json::Value::Null);
        let synced: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "SYNCED")
            .filter_map(|p| p["id"].as_str().or(p["name"].as_str()).map(str::to_string))
            .collect();
        if synced.len() == 2 && status.status.code() == Some(0) {
            break synced;
        }
        assert!(
            Instant::now() < deadline,
            "proxy-status through the cluster: {}\n{}",
            text(&status.stdout),
            text(&status.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        gateways
            .iter()
            .any(|g| g.starts_with("istio-ingressgateway-"))
            && gateways
                .iter()
                .any(|g| g.starts_with("istio-egressgateway-")),
        "{gateways:?}"
    );
    let ingress = gateways
        .iter()
        .find(|g| g.starts_with("istio-ingressgateway-"))
        .expect("the ingress gateway");
    let listeners = run(&["proxy-config", "listeners", ingress], &kubeconfig);
    assert_eq!(
        listeners.status.code(),
        Some(0),
        "{}",
        text(&listeners.stderr)
    );
    let file = cluster.dir().join("reviews.yaml");
    std::fs::write(&file, MISSING_SUBSET).expect("write a manifest");
    let changed = run(&["apply", "-f", &file.display().to_string()], &kubeconfig);
    assert_ne!(changed.status.code(), Some(0));
    assert!(
        text(&changed.stderr).contains("kubectl"),
        "{}",
        text(&changed.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(MISSPELT));
        assert!(!ok, "a misspelt field was accepted");
        if err.contains("did you mean") || Instant::now() > deadline {
            break err;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        refusal.contains("wieght") && refusal.contains("did you mean `weight`"),
        "{refusal}"
    );
    // Analysis written back as status by the leader.
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(MISSING_SUBSET));
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, yaml, _) = cluster.kubectl_run(&["get", "vs", "reviews", "-o", "yaml"], None);
        if yaml.contains("IST0101") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no IST0101 in the status:\n{yaml}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Uninstall keeps the CRDs (and the user's VirtualService); --purge takes them.
    let removed = run(&["uninstall", "-y"], &kubeconfig);
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));
    assert!(
        text(&removed.stdout).contains("kept 10 CRDs"),
        "{}",
        text(&removed.stdout)
    );
    let (_, left, _) = cluster.kubectl_run(
        &[
            "get",
            "deployments,services,serviceaccounts,validatingwebhookconfigurations,clusterroles",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=trellis",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(left.trim(), "", "left behind: {left}");
    let (ok, _, _) = cluster.kubectl_run(&["get", "vs", "reviews"], None);
    assert!(
        ok,
        "the user's VirtualService survives an uninstall without --purge"
    );
    let purged = run(&["uninstall", "--purge", "-y"], &kubeconfig);
    assert_eq!(purged.status.code(), Some(0), "{}", text(&purged.stderr));
    let (_, crds, _) = cluster.kubectl_run(&["get", "crd", "-o", "name"], None);
    assert!(!crds.contains("istio.io"), "CRDs left: {crds}");
}
