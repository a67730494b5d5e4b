//! Istio's own samples run unchanged in local mode: `samples/bookinfo/platform/kube/
//! bookinfo.yaml`, `samples/httpbin/httpbin.yaml` and `samples/curl/curl.yaml`, read
//! from Istio's corpus beside the checkout (skipped with a line when it is absent),
//! with the namespace labelled for injection as the seed does. Their images have no
//! `command`; local mode runs its bundled stand-ins and says so per Deployment, and
//! the pages come back through the sidecars. An image it does not know stops
//! `trellis up` with an error naming the image.
//! Also `samples/bookinfo/networking/bookinfo-gateway.yaml`: the page through the
//! ingress gateway, as the seed opens it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{LocalMesh, http_get};

fn samples() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio/samples");
    dir.join("bookinfo/platform/kube/bookinfo.yaml")
        .exists()
        .then_some(dir)
}

/// The pod IP printed for `pod` in the ready summary.
fn pod_ip(mesh: &LocalMesh, pod: &str) -> std::net::IpAddr {
    mesh.printed
        .iter()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(pod)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no pod IP for {pod} in {:?}", mesh.printed))
}

#[test]
fn istio_samples_run_unchanged_with_bundled_stand_ins() {
    let Some(samples) = samples() else {
        eprintln!(
            "skipped istio_samples_run_unchanged_with_bundled_stand_ins: Istio's corpus is not beside the checkout"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (from, to) in [
        ("bookinfo/platform/kube/bookinfo.yaml", "bookinfo.yaml"),
        ("bookinfo/networking/bookinfo-gateway.yaml", "gateway.yaml"),
        ("httpbin/httpbin.yaml", "httpbin.yaml"),
        ("curl/curl.yaml", "curl.yaml"),
    ] {
        std::fs::copy(samples.join(from), dir.path().join(to)).expect("copy a sample");
    }
    // `kubectl label namespace default istio-injection=enabled`, as a manifest.
    std::fs::write(
        dir.path().join("namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    istio-injection: enabled\n",
    )
    .expect("write");
    let mesh = LocalMesh::up(dir.path(), &[]);
    let printed = mesh.printed.join("\n");
    for (deployment, says) in [
        (
            "reviews-v2",
            "runs as `trellis bookinfo reviews` (v2, stars: black)",
        ),
        (
            "reviews-v3",
            "runs as `trellis bookinfo reviews` (v3, stars: red)",
        ),
        (
            "productpage-v1",
            "runs as `trellis bookinfo productpage` (v1)",
        ),
        ("httpbin", "runs as `trellis httpbin`"),
    ] {
        assert!(
            printed.contains(&format!("{deployment}: image ")) && printed.contains(says),
            "{deployment} not said to run as {says}: {printed}"
        );
    }
    // curl's own `command` (sleep infinity) runs as written: no stand-in line.
    assert!(!printed.contains("curl: image"), "{printed}");
    for pod in ["productpage-v1-0", "reviews-v1-0", "httpbin-0", "curl-0"] {
        let line = mesh
            .printed
            .iter()
            .find(|l| l.split_whitespace().next() == Some(pod))
            .unwrap_or_else(|| panic!("{pod} not listed: {printed}"));
        assert!(line.contains("2/2"), "{pod} without its sidecar: {line}");
    }

    // The page, through curl's sidecar, as the seed's first check: every reviews
    // version serves within a bounded number of requests.
    let sidecar = std::net::SocketAddr::new(pod_ip(&mesh, "curl-0"), 15001);
    let mut versions = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    for _ in 0..60 {
        if versions.len() == 3 || Instant::now() > deadline {
            break;
        }
        match http_get(sidecar, "productpage:9080", "/productpage") {
            Ok((200, body)) if body.contains("Book Reviews") => {
                if let Some(v) = body.split("reviews ").nth(1).and_then(|rest| rest.get(..2)) {
                    versions.insert(v.to_string());
                }
            }
            other => {
                last = format!("{other:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        ["v1", "v2", "v3"],
        "every reviews version through the mesh (last failure: {last})"
    );

    // The seed's `curl http://$GATEWAY_URL/productpage`.
    let (status, body) = http_get(mesh.gateway, "bookinfo.example", "/productpage")
        .expect("the page through the gateway");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Book Reviews"), "{body}");

    // httpbin's endpoints as Istio's tasks call them, through the sidecar.
    let (status, body) = http_get(sidecar, "httpbin:8000", "/headers").expect("httpbin /headers");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"Host\"") && body.contains("httpbin:8000"),
        "{body}"
    );
    let (status, body) = http_get(sidecar, "httpbin:8000", "/status/418").expect("/status/418");
    assert_eq!(status, 418, "{body}");
    assert!(body.contains("teapot"), "{body}");
}

#[test]
fn an_image_without_a_command_or_stand_in_names_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["up", dir.path().to_str().expect("path")])
        .args(["--gateway-port", "0", "--control-plane-port", "0"])
        .env("NO_COLOR", "1")
        .output()
        .expect("trellis up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Deployment web: container web")
            && stderr.contains("nginx:1.27")
            && stderr.contains("add `command:`"),
        "{stderr}"
    );
}
