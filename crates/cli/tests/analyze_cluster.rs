//! `trellis analyze` against a real kube-apiserver: YAML analyzed as files and the
//! same YAML applied with kubectl, then analyzed from the cluster, report the same
//! codes for the same resources (the seed's examples in namespace production, and a
//! few of Istio's own analyzer test cases); `-n` shows one namespace's messages and
//! `-A` every namespace's; files given with a cluster are analyzed on top of it; an
//! unreachable cluster is one line and exit 2.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds, isolate};

#[path = "analyze_cluster/fixtures.rs"]
mod fixtures;

use fixtures::{INGRESS, ISTIO_CASES, MESH_CONFIG, SEED_FILES, WORKLOADS};

const SEED: &str = "../../../shared/seed/examples";

/// What makes two messages the same finding here: code, level, resource, text. Sets
/// are compared: a resource read from a cluster has no line, so two messages that
/// differ only there (two destinations naming the same missing host) are one, as
/// istioctl prints them.
type Finding = (String, String, String, String, String, String);

fn findings(json: &str) -> Vec<Finding> {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("analyze -o json printed JSON ({e}):\n{json}"));
    let text = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let mut out: Vec<Finding> = value
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| {
            (
                text(m, "code"),
                text(m, "level"),
                text(m, "kind"),
                text(m, "namespace"),
                text(m, "name"),
                text(m, "message"),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .output()
        .expect("trellis runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `trellis analyze ARGS -o json`: the findings and the exit code.
fn analyze(args: &[&str]) -> (Vec<Finding>, Option<i32>) {
    let mut all = vec!["analyze"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = trellis(&all);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "trellis {all:?}: {:?}\n{}",
        out.status,
        stderr(&out)
    );
    (findings(&stdout(&out)), out.status.code())
}

/// The findings about resources of `namespace` (a Namespace is in itself).
fn in_namespace(all: &[Finding], namespace: &str) -> Vec<Finding> {
    all.iter()
        .filter(|f| f.3 == namespace || (f.2 == "Namespace" && f.4 == namespace))
        .cloned()
        .collect()
}

fn namespaces(all: &[Finding]) -> BTreeSet<String> {
    all.iter()
        .map(|f| {
            if f.2 == "Namespace" {
                f.4.clone()
            } else {
                f.3.clone()
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn kubectl_apply(cluster: &Cluster, args: &[&str]) {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let (ok, out, err) = cluster.kubectl_run(&all, None);
    assert!(ok, "kubectl {all:?}: {err}\n{out}");
}

/// Shows the difference between two sets of findings, for a failed comparison.
fn difference(files: &[Finding], cluster: &[Finding]) -> String {
    let only = |a: &[Finding], b: &[Finding]| -> Vec<String> {
        a.iter()
            .filter(|f| !b.contains(f))
            .map(|f| format!("  {f:?}"))
            .collect()
    };
    format!(
        "only from the files:\n{}\nonly from the cluster:\n{}",
        only(files, cluster).join("\n"),
        only(cluster, files).join("\n")
    )
}

#[test]
fn the_seeds_examples_analyze_the_same_from_the_cluster_as_from_files() {
    if !isolate("the_seeds_examples_analyze_the_same_from_the_cluster_as_from_files") {
        return;
    }
    runtime().block_on(seed_scenario());
}

async fn seed_scenario() {
    let test = "the_seeds_examples_analyze_the_same_from_the_cluster_as_from_files";
    let seed_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SEED);
    if !seed_dir.is_dir() {
        eprintln!("skipped {test}: the seed's examples are not beside the checkout");
        return;
    }
    let options = ClusterOptions {
        controller_manager: false,
    };
    let Some(cluster) = Cluster::start_with(test, options).await else {
        return;
    };
    if !install_istio_crds(&cluster, test, &[]) {
        return;
    }
    let workloads = cluster.dir().join("workloads.yaml");
    std::fs::write(&workloads, WORKLOADS).expect("write the workloads");
    let ingress = cluster.dir().join("ingress.yaml");
    std::fs::write(&ingress, INGRESS).expect("write the ingress gateway");
    let seeds: Vec<PathBuf> = SEED_FILES.iter().map(|f| seed_dir.join(f)).collect();
    let workloads_arg = workloads.display().to_string();
    let ingress_arg = ingress.display().to_string();
    kubectl_apply(&cluster, &["-f", &workloads_arg]);
    kubectl_apply(&cluster, &["-f", &ingress_arg]);
    for seed in &seeds {
        kubectl_apply(
            &cluster,
            &["-n", "production", "-f", &seed.display().to_string()],
        );
    }

    // The files, alone: every message, documents without a namespace in production.
    let mut files_args = vec![
        "--use-kube=false",
        "-n",
        "production",
        "-f",
        &workloads_arg,
        "-f",
        &ingress_arg,
    ];
    let seed_args: Vec<String> = seeds.iter().map(|s| s.display().to_string()).collect();
    for s in &seed_args {
        files_args.extend_from_slice(&["-f", s]);
    }
    let (from_files, files_code) = analyze(&files_args);
    assert_eq!(files_code, Some(1), "the files have errors");

    let kubeconfig = cluster.kubeconfig.display().to_string();
    let (production, code) = analyze(&["--kubeconfig", &kubeconfig, "-n", "production"]);
    let expected = in_namespace(&from_files, "production");
    assert_eq!(
        expected,
        production,
        "{}",
        difference(&expected, &production)
    );
    assert_eq!(code, Some(1), "an Error in production is exit 1");
    for (code, kind, name) in [
        ("IST0101", "VirtualService", "details"),
        ("IST0101", "Gateway", "internal"),
        // The Secret is read from the cluster, by the name the Gateway gives.
        ("IST0161", "Gateway", "app-gateway"),
        ("IST0127", "AuthorizationPolicy", "allow-frontend"),
        ("IST0134", "ServiceEntry", "payments-db"),
    ] {
        assert!(
            production
                .iter()
                .any(|f| f.0 == code && f.2 == kind && f.4 == name),
            "{code} on {kind} production/{name}: {production:#?}"
        );
    }
    assert_eq!(
        namespaces(&production),
        BTreeSet::from(["production".to_string()]),
        "-n production shows production's messages only"
    );

    // -A: every namespace's, the same as the files say about each.
    let (everywhere, _) = analyze(&["--kubeconfig", &kubeconfig, "-A"]);
    for ns in ["staging", "istio-system", "default"] {
        let expected = in_namespace(&from_files, ns);
        let got = in_namespace(&everywhere, ns);
        assert_eq!(
            expected,
            got,
            "namespace {ns}: {}",
            difference(&expected, &got)
        );
    }
    assert!(
        everywhere
            .iter()
            .any(|f| f.0 == "IST0101" && f.3 == "staging" && f.4 == "orders"),
        "-A shows staging's broken route: {everywhere:#?}"
    );
    assert!(namespaces(&everywhere).contains("production"));

    // As istioctl prints a cluster's resources: no file, no line.
    let out = trellis(&["analyze", "--kubeconfig", &kubeconfig, "-n", "production"]);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Error [IST0101] (VirtualService production/details) ")),
        "{text}"
    );
    assert!(!text.contains("cluster:"), "{text}");
    assert_eq!(out.status.code(), Some(1));

    mesh_config_from_the_cluster(&cluster, &kubeconfig);
    files_on_top(&cluster, &kubeconfig);
}

/// The `istio` ConfigMap's `mesh` key is the mesh config, as --meshConfigFile gives it.
fn mesh_config_from_the_cluster(cluster: &Cluster, kubeconfig: &str) {
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(MESH_CONFIG));
    assert!(ok, "kubectl apply the mesh config: {err}");
    let (production, _) = analyze(&["--kubeconfig", kubeconfig, "-n", "production"]);
    assert!(
        !production.iter().any(|f| f.0 == "IST0134"),
        "addresses are allocated by DNS capture: {production:#?}"
    );
}

/// `-f` with a cluster: the files as if applied on top of what it holds.
fn files_on_top(cluster: &Cluster, kubeconfig: &str) {
    let fix = cluster.dir().join("fix.yaml");
    std::fs::write(
        &fix,
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details}
spec:
  host: details
  subsets:
  - {name: v3, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: staging}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings.production.svc.cluster.local, subset: v9}
",
    )
    .expect("write the fix");
    let fix_arg = fix.display().to_string();
    let out = trellis(&[
        "analyze",
        "--kubeconfig",
        kubeconfig,
        "-n",
        "production",
        "-f",
        &fix_arg,
    ]);
    let text = stdout(&out);
    assert!(
        !text.contains("(VirtualService production/details)"),
        "the file's DestinationRule defines subset v3 of details: {text}"
    );
    assert!(
        text.contains(&format!("(VirtualService staging/ratings {fix_arg}:")),
        "a message about a file's resource points at its file and line, and the \
         namespaces the files write to are shown: {text}"
    );
    assert!(stderr(&out).contains("on top of"), "{}", stderr(&out));
    let (scoped, _) = analyze(&[
        "--kubeconfig",
        kubeconfig,
        "-n",
        "production",
        "-f",
        &fix_arg,
    ]);
    assert_eq!(
        namespaces(&scoped),
        BTreeSet::from(["production".to_string(), "staging".to_string()]),
        "the selected namespace and the one the files write to: {scoped:#?}"
    );
    let (alone, _) = analyze(&[
        "--use-kube=false",
        "--kubeconfig",
        kubeconfig,
        "-f",
        &fix_arg,
    ]);
    assert!(
        alone
            .iter()
            .all(|f| f.3 != "production" || f.2 != "VirtualService"),
        "--use-kube=false reads no cluster: {alone:#?}"
    );
}

#[test]
fn istios_own_cases_analyze_the_same_from_the_cluster_as_from_files() {
    if !isolate("istios_own_cases_analyze_the_same_from_the_cluster_as_from_files") {
        return;
    }
    runtime().block_on(istio_cases_scenario());
}

/// The namespaces the cases declare (Namespace documents) and those they only use
/// (`default` for documents naming none).
fn case_namespaces(files: &[PathBuf]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut used = BTreeSet::from(["default".to_string(), "istio-system".to_string()]);
    let mut declared = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("the case reads");
        for doc in trellis_api::yaml::parse(&text).expect("the case is YAML") {
            let json = doc.root.to_json();
            let meta = &json["metadata"];
            if json["kind"] == "Namespace" {
                declared.insert(meta["name"].as_str().unwrap_or_default().to_string());
            } else if let Some(ns) = meta["namespace"].as_str() {
                used.insert(ns.to_string());
            }
        }
    }
    let undeclared = used.difference(&declared).cloned().collect();
    (declared, undeclared)
}

/// What the cluster needs before the cases apply, and that is no configuration:
/// namespaces a case declares are created (the case's `apply` then sets their
/// labels), and each namespace gets the `default` ServiceAccount its Pods need
/// (the controller-manager, not running here, would make it).
fn prepare(cluster: &Cluster, declared: &BTreeSet<String>, all: &BTreeSet<String>) {
    for ns in declared {
        let (ok, _, err) = cluster.kubectl_run(&["create", "namespace", ns], None);
        assert!(ok || err.contains("AlreadyExists"), "namespace {ns}: {err}");
    }
    for ns in all {
        let (ok, _, err) =
            cluster.kubectl_run(&["create", "serviceaccount", "default", "-n", ns], None);
        assert!(
            ok || err.contains("AlreadyExists"),
            "serviceaccount in {ns}: {err}"
        );
    }
}

async fn istio_cases_scenario() {
    let test = "istios_own_cases_analyze_the_same_from_the_cluster_as_from_files";
    let Some(crds) = trellis_kube::testing::istio_crds_file() else {
        eprintln!("skipped {test}: Istio's corpus is not beside the checkout");
        return;
    };
    let testdata = crds
        .parent()
        .and_then(Path::parent)
        .expect("the corpus holds crds/")
        .join("analyzers/testdata");
    let options = ClusterOptions {
        controller_manager: false,
    };
    let Some(cluster) = Cluster::start_with(test, options).await else {
        return;
    };
    if !install_istio_crds(&cluster, test, &[]) {
        return;
    }
    let cases: Vec<PathBuf> = ISTIO_CASES.iter().map(|c| testdata.join(c)).collect();
    // Namespaces used but not declared are configuration both sides are given.
    let (declared, undeclared) = case_namespaces(&cases);
    let namespaces: String = undeclared
        .iter()
        .map(|ns| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n"))
        .collect();
    let namespaces_file = cluster.dir().join("namespaces.yaml");
    std::fs::write(&namespaces_file, namespaces).expect("write namespaces");
    kubectl_apply(&cluster, &["-f", &namespaces_file.display().to_string()]);
    prepare(
        &cluster,
        &declared,
        &declared.union(&undeclared).cloned().collect(),
    );
    let ingress = cluster.dir().join("ingress.yaml");
    std::fs::write(&ingress, INGRESS).expect("write the ingress gateway");
    let mut inputs = vec![
        namespaces_file.display().to_string(),
        ingress.display().to_string(),
    ];
    inputs.extend(cases.iter().map(|c| c.display().to_string()));
    let mut files_args = vec!["--use-kube=false", "-n", "default"];
    for input in &inputs {
        kubectl_apply(&cluster, &["-f", input]);
        files_args.extend_from_slice(&["-f", input]);
    }
    let (from_files, _) = analyze(&files_args);
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let (from_cluster, _) = analyze(&["--kubeconfig", &kubeconfig, "-A"]);
    assert_eq!(
        from_files,
        from_cluster,
        "{}",
        difference(&from_files, &from_cluster)
    );
    for (code, kind, name) in [
        ("IST0101", "VirtualService", "reviews-bogussubset"),
        ("IST0173", "DestinationRule", "subsets-not-select-pods"),
        ("IST0145", "Gateway", "alpha"),
        ("IST0144", "Deployment", "deploy-con-sec-uid"),
        ("IST0127", "AuthorizationPolicy", "httpbin-nopods"),
    ] {
        assert!(
            from_cluster
                .iter()
                .any(|f| f.0 == code && f.2 == kind && f.4 == name),
            "{code} on {kind} {name}: {from_cluster:#?}"
        );
    }
}

#[test]
fn an_unreachable_cluster_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    let port = trellis_kube::testing::write_unreachable_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    let out = trellis(&["analyze", "--kubeconfig", &kubeconfig.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot read the cluster at https://127.0.0.1:{port}"
        )),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    // Nothing to read at all: no -f, no kubeconfig, no local mesh.
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["analyze", "--control-plane", &format!("127.0.0.1:{port}")])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("NO_COLOR", "1")
        .output()
        .expect("trellis runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to analyze"),
        "{}",
        stderr(&out)
    );
}
