//! The mesh's mutual TLS as a user runs it: `trellis up` of the bundled demo with
//! certificates that live a few seconds, so they rotate while traffic flows through
//! the gateway and across three sidecar hops; no request may fail, every hop is
//! mutual TLS, and the certificates shown are new ones.

mod common;
use common::{LocalMesh, demo_manifests, http_get};
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
