//! Simulated proxies for the control-plane scale benchmark (`bench/control-plane-scale.sh`).
//!
//! Opens PROXIES real gRPC streams to a running `trellis control-plane` (one
//! connection each), says Hello as sidecars spread over NAMESPACES namespaces, ACKs
//! every push at once (a simulated proxy does not build a data plane), then applies
//! changes through the HTTP API and measures, per change, the time from the apply to
//! each proxy receiving its push. It also samples the control plane's memory and CPU
//! from /proc. The simulated proxies are `trellis_control::simulated` (feature
//! `testing`), shared with the cluster-mode benchmark.
//!
//! The streams are TLS with a workload certificate per simulated proxy, signed here
//! with the control plane's own CA (read from its `--state-dir`, as the same user),
//! and API calls carry its token; the control plane does all the checks it does for
//! real proxies.
//!
//! `scale --grpc ADDR --api ADDR --pid PID --state-dir DIR [--proxies 1000] [--namespaces 10] [--changes 10]`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_control::proto;
use trellis_control::simulated::{Fleet, percentile, proc_stats};

fn arg(name: &str, default: Option<&str>) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or(default.map(str::to_string))
        .unwrap_or_else(|| panic!("{name} is required"))
}

fn post_apply(api: &str, token: &str, name: &str, yaml: &str) -> String {
    let body = serde_json::json!({"files": [{"name": name, "text": yaml}]}).to_string();
    let mut s = std::net::TcpStream::connect(api).expect("connect to the API");
    write!(
        s,
        "POST /api/v1/apply HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "apply refused: {out}");
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let grpc = arg("--grpc", None);
    let api = arg("--api", None);
    let state = std::path::PathBuf::from(arg("--state-dir", None));
    let ca = Arc::new(
        trellis_identity::Ca::load_or_create(&state.join("ca"), "cluster.local")
            .expect("the control plane's CA in --state-dir"),
    );
    let token = std::fs::read_to_string(state.join("api-token"))
        .expect("the API token in --state-dir")
        .trim()
        .to_string();
    let control_plane = ca.control_plane_identity();
    let pid: u32 = arg("--pid", None).parse().expect("--pid");
    let proxies: usize = arg("--proxies", Some("1000")).parse().expect("--proxies");
    let namespaces: usize = arg("--namespaces", Some("10"))
        .parse()
        .expect("--namespaces");
    let changes: usize = arg("--changes", Some("10")).parse().expect("--changes");
    let services: usize = arg("--services", Some("5000")).parse().expect("--services");

    let fleet = Fleet::new(proxies);
    let connected_at = Instant::now();
    for i in 0..proxies {
        // Sidecar i belongs to namespace n = i % namespaces and to a service there
        // (the generator puts service s in namespace s % 50).
        let n = i % namespaces;
        let s = n + 50 * ((i / namespaces) % (services / 50).max(1));
        let id = trellis_identity::SpiffeId::new(&format!("ns{}", s % 50), "default").expect("id");
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = trellis_identity::manager::csr_for(&id, &key).expect("csr");
        let issued = ca
            .sign(csr.as_bytes(), &id, Duration::from_secs(3600))
            .expect("signed");
        let creds = trellis_identity::Credentials::new(
            &key,
            &issued.chain_pem,
            &issued.root_pem,
            &id,
            None,
        )
        .expect("credentials");
        let config = trellis_identity::client_config(
            &trellis_identity::CurrentCredentials::with(creds),
            std::slice::from_ref(&control_plane),
            &[b"h2"],
        )
        .expect("TLS config");
        let hello = proto::Hello {
            id: format!("sim-{i}"),
            role: proto::Role::Sidecar as i32,
            workload: format!("svc{s}"),
            namespace: format!("ns{}", s % 50),
            labels: [("app".to_string(), format!("svc{s}"))].into(),
            service_account: "default".into(),
            pod_ip: String::new(),
            bind_ip: format!("10.200.{}.{}", i / 250, i % 250 + 1),
            outbound: format!("10.200.{}.{}:15001", i / 250, i % 250 + 1),
            inbound: vec![],
            port_map: Default::default(),
            version: 0,
            ports: Default::default(),
            admin: String::new(),
            capture: false,
            capture_ipv6: false,
        };
        fleet.connect(i, grpc.clone(), config, hello);
    }
    // Everyone has a first (full) configuration.
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.configured() < proxies {
        assert!(
            Instant::now() < deadline,
            "proxies never all got a configuration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial = connected_at.elapsed();
    let initial_bytes = fleet.take_bytes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proc_stats(pid);
    let (rss_idle, cpu_before) = (idle.rss_mib, idle.cpu_ms);
    println!(
        "initial sync: {proxies} proxies connected and configured in {:.2}s ({:.0} MiB of resources pushed); control plane RSS {rss_idle:.0} MiB",
        initial.as_secs_f64(),
        initial_bytes as f64 / 1048576.0
    );

    let mut results: BTreeMap<&str, Vec<(f64, f64, f64, u64)>> = BTreeMap::new();
    let mut cpu_total = 0.0;
    let mut applied = 0;
    for k in 0..changes {
        for what in ["route", "endpoint"] {
            let before = fleet.newest();
            let yaml = if what == "route" {
                // The 90/10 canary of svc0 moves by one point.
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc0, namespace: ns0}}\nspec:\n  hosts: [svc0]\n  http:\n  - route:\n    - destination: {{host: svc0, subset: v1}}\n      weight: {}\n    - destination: {{host: svc0, subset: v2}}\n      weight: {}\n",
                    89 - k,
                    11 + k
                )
            } else {
                // One endpoint of svc1 moves to another address.
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc1-1, namespace: ns1}}\nspec:\n  address: 10.250.0.{}\n  labels: {{app: svc1, version: v1}}\n",
                    k + 1
                )
            };
            fleet.take_bytes();
            let cpu0 = proc_stats(pid).cpu_ms;
            let t0 = Instant::now();
            post_apply(&api, &token, "bench.yaml", &yaml);
            assert!(
                fleet.wait_all_past(before, Duration::from_secs(60)).await,
                "a change never reached every proxy"
            );
            let cpu1 = proc_stats(pid).cpu_ms;
            cpu_total += cpu1 - cpu0;
            applied += 1;
            let lat = fleet.latencies_ms(t0);
            results.entry(what).or_default().push((
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                *lat.last().unwrap_or(&f64::NAN),
                fleet.take_bytes(),
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let now = proc_stats(pid);
    let (rss, hwm, cpu_after) = (now.rss_mib, now.peak_mib, now.cpu_ms);
    println!(
        "\nchange → every proxy's push, over {changes} changes of each kind (ms; median of the per-change figures, max of maxima):"
    );
    println!(
        "  {:<10} {:>8} {:>8} {:>8} {:>14}",
        "CHANGE", "p50", "p99", "max", "bytes/change"
    );
    for (what, rows) in &results {
        let med = |f: fn(&(f64, f64, f64, u64)) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        let max = rows.iter().map(|r| r.2).fold(0.0, f64::max);
        println!(
            "  {:<10} {:>8.1} {:>8.1} {:>8.1} {:>14.0}",
            what,
            med(|r| r.0),
            med(|r| r.1),
            max,
            med(|r| r.3 as f64)
        );
    }
    println!(
        "\ncontrol plane: RSS {rss:.0} MiB now, {hwm:.0} MiB peak; CPU {:.0} ms per change (measured over {applied} changes; {:.0} ms in total since the initial sync)",
        cpu_total / applied.max(1) as f64,
        cpu_after - cpu_before
    );
}
