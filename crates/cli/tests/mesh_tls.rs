//! The mesh's mutual TLS as a user runs it: `trellis up` of the bundled demo with
//! certificates that live a few seconds, so they rotate while traffic flows through
//! the gateway and across three sidecar hops; no request may fail, every hop is
//! mutual TLS, and the certificates shown are new ones.

mod common;
use common::{LocalMesh, demo_manifests, demo_manifests_without, http_get};
use std::time::{Duration, Instant};

/// One local mesh at a time: a mesh is a dozen processes on two cores.
static ONE_MESH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial(mesh: &LocalMesh, pod: &str) -> String {
    let out = mesh.trellis(&["proxy-config", "secret", pod, "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    v["workload"]["serial"]
        .as_str()
        .expect("a serial")
        .to_string()
}

#[test]
fn certificates_rotate_under_traffic_and_no_request_fails() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = demo_manifests();
    let mesh = LocalMesh::up(dir.path(), &["--cert-lifetime", "4s"]);
    let first = serial(&mesh, "reviews-v1-0");
    // Traffic for a bounded 9 s (two rotations at least), through the gateway to
    // productpage, reviews and ratings.
    let (deadline, mut sent, mut failed) = (Instant::now() + Duration::from_secs(9), 0, Vec::new());
    while Instant::now() < deadline && sent < 2000 {
        sent += 1;
        match http_get(mesh.gateway, "app.example.com", "/api/v1/products/0") {
            Ok((200, body)) if !body.contains("unavailable") => {}
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(sent >= 100, "only {sent} requests in 9 s");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let later = serial(&mesh, "reviews-v1-0");
    assert_ne!(first, later, "the certificate was renewed");
    // No private key in anything shown: the mesh's output, its logs (the CA's own key
    // file in state/ aside), what proxy-config and proxy-status print.
    let printed: Vec<String> = mesh.lines.try_iter().collect();
    let logs = mesh.log_dir.clone().expect("the log directory is printed");
    let mut shown = printed.join("\n");
    for entry in std::fs::read_dir(&logs).expect("log directory").flatten() {
        if entry.path().is_file() {
            shown.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    for args in [
        &["proxy-config", "all", "istio-ingressgateway", "-o", "json"][..],
        &["proxy-config", "all", "productpage-v1-0", "-o", "json"],
        &["proxy-status", "-o", "json"],
    ] {
        shown.push_str(&String::from_utf8_lossy(&mesh.trellis(args).stdout));
    }
    assert!(shown.len() > 1000, "something was read");
    assert!(!shown.contains("PRIVATE KEY"), "a private key was shown");
    // Every hop into reviews was mutual TLS, from productpage's identity.
    let stats = http_get(
        std::net::SocketAddr::new(
            format!("127.{}.1.3", mesh.block.block).parse().expect("ip"),
            15020,
        ),
        "stats",
        "/stats/prometheus",
    )
    .expect("reviews-v1's metrics");
    let inbound: Vec<&str> = stats
        .1
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
        .collect();
    assert!(!inbound.is_empty(), "{}", stats.1);
    assert!(
        inbound
            .iter()
            .all(|l| l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains(
                    "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\""
                )),
        "{inbound:?}"
    );
}

/// The demo's manifests with productpage left out of injection, as the seed's
/// troubleshooting entry has it ("some pods don't have sidecars").
fn without_productpage_sidecar() -> tempfile::TempDir {
    // From Istio's default (PERMISSIVE, no policies), as a migration starts.
    let dir = demo_manifests_without(&["PeerAuthentication", "AuthorizationPolicy"]);
    let file = dir.path().join("app.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    let at = text
        .find("name: productpage-v1")
        .expect("productpage's Deployment");
    let template = at + text[at..].find("template:").expect("its template");
    let metadata = template + text[template..].find("metadata:").expect("its metadata");
    let mut edited = text.clone();
    edited.insert_str(
        metadata + "metadata:".len(),
        "\n      annotations: {sidecar.istio.io/inject: \"false\"}",
    );
    std::fs::write(&file, edited).expect("write");
    dir
}

fn apply(mesh: &LocalMesh, dir: &std::path::Path, name: &str, yaml: &str) {
    let file = dir.join(name);
    std::fs::write(&file, yaml).expect("write");
    let out = mesh.trellis(&["apply", "-f", file.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the product page says about reviews within `limit` (polled, bounded): the
/// reviews version, or the error text.
fn reviews_seen(
    mesh: &LocalMesh,
    wanted: impl Fn(&serde_json::Value) -> bool,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok((200, body)) = http_get(mesh.gateway, "app.example.com", "/api/v1/products/0") {
            last = serde_json::from_str(&body).unwrap_or_default();
            if wanted(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the product page never showed what was expected: {last}");
}

#[test]
fn strict_mtls_refuses_a_workload_without_a_sidecar_and_permissive_lets_it_in() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = without_productpage_sidecar();
    let mesh = LocalMesh::up(dir.path(), &[]);
    let applied = tempfile::tempdir().expect("tempdir");
    let reviews_ok = |v: &serde_json::Value| v["versions"]["reviews"].is_string();
    let reviews_refused = |v: &serde_json::Value| {
        v["reviews"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("reviews unavailable"))
    };
    // Istio's default (no PeerAuthentication) is PERMISSIVE: the page has its reviews,
    // fetched in plaintext by a productpage that has no sidecar.
    reviews_seen(&mesh, reviews_ok, Duration::from_secs(10));

    // The seed's PeerAuthentication, for the namespace the demo runs in: STRICT. The
    // sidecar-less productpage's plaintext calls are refused: the seed's "503 errors
    // after enabling mTLS".
    let strict = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n";
    apply(&mesh, applied.path(), "strict.yaml", strict);
    reviews_seen(&mesh, reviews_refused, Duration::from_secs(10));
    let metrics = http_get(
        std::net::SocketAddr::new(
            format!("127.{}.1.3", mesh.block.block).parse().expect("ip"),
            15020,
        ),
        "stats",
        "/stats/prometheus",
    )
    .expect("reviews-v1's metrics")
    .1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("trellis_mtls_plaintext_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The seed's advice: PERMISSIVE first, STRICT once every pod has a sidecar.
    let permissive = strict.replace("STRICT", "PERMISSIVE");
    apply(&mesh, applied.path(), "permissive.yaml", &permissive);
    reviews_seen(&mesh, reviews_ok, Duration::from_secs(10));
}
