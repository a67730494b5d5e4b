//! `trellis analyze` with neither -f nor a kubeconfig: what the local mesh `trellis up`
//! runs is analyzed, through its control plane's API, and reports what the directory
//! it runs reports as files; `-n` scopes the messages as for a cluster, and a message
//! points at the file and line the resource was read from.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::LocalMesh;

/// A mesh with mistakes: a route to a subset the DestinationRule does not define, and
/// in staging a route to a host that does not exist.
const MESH: &str = "apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: staging, labels: {istio-injection: enabled}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: app-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers:
      - {name: reviews, command: [trellis, echo], ports: [{containerPort: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: staging}
spec:
  hosts: [orders]
  http:
  - route:
    - destination: {host: orders}
";

type Finding = (String, String, String, String, String, String);

fn findings(out: &Output) -> Vec<Finding> {
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let mut all: Vec<Finding> = value
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| {
            let f = |k| field(m, k);
            (
                f("code"),
                f("level"),
                f("kind"),
                f("namespace"),
                f("name"),
                f("message"),
            )
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

/// `trellis analyze ARGS` as a user without a kubeconfig runs it next to the mesh:
/// HOME has no `.kube`, the API token is found where `trellis up` left its pointer.
fn analyze(mesh: &LocalMesh, home: &std::path::Path, args: &[&str]) -> Output {
    let trellis_home = std::env::var_os("TRELLIS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".trellis")
        });
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("analyze")
        .args(args)
        .args(["--control-plane", &mesh.api])
        .env("HOME", home)
        .env("TRELLIS_HOME", trellis_home)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("NO_COLOR", "1")
        .output()
        .expect("trellis analyze runs")
}

#[test]
fn a_local_mesh_analyzes_as_the_directory_it_runs() {
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, MESH).expect("write the manifests");
    let home = tempfile::tempdir().expect("a home without .kube");
    let mesh = LocalMesh::up(dir.path(), &[]);

    let dir_arg = dir.path().display().to_string();
    let files = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["analyze", "--use-kube=false", "-f", &dir_arg, "-o", "json"])
        .output()
        .expect("trellis analyze runs");
    let from_files = findings(&files);
    let everywhere = analyze(&mesh, home.path(), &["-A", "-o", "json"]);
    assert_eq!(everywhere.status.code(), Some(1), "an Error is exit 1");
    assert_eq!(findings(&everywhere), from_files);
    let namespaces: BTreeSet<String> = from_files.iter().map(|f| f.3.clone()).collect();
    assert!(namespaces.contains("staging"), "{from_files:#?}");

    // The default scope is namespace default, as for a cluster without a context's.
    let scoped = findings(&analyze(&mesh, home.path(), &["-o", "json"]));
    assert!(!scoped.is_empty());
    assert!(
        scoped.iter().all(|f| f.3 == "default"),
        "namespace default only: {scoped:#?}"
    );

    let text = analyze(&mesh, home.path(), &["-n", "staging"]);
    let shown = String::from_utf8_lossy(&text.stdout);
    let expected = format!(
        "Error [IST0101] (VirtualService staging/orders {}:",
        file.display()
    );
    assert!(
        shown.lines().any(|l| l.starts_with(&expected)),
        "a resource from the directory points at its file: {shown}"
    );
    assert!(!shown.contains("default/reviews"), "{shown}");
}
