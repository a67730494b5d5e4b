//! The cost of a watch restart: the API server is killed and started again (same
//! etcd, port and certificate), so every watch the control plane holds breaks and must
//! resume or relist. What it did is read from the new API server's audit log (list and
//! watch requests by the control plane's user; the benchmark makes none meanwhile):
//! LIST requests per resource (a relist) and watches started. The control plane's CPU
//! and the pushes (its counter, and what the proxies received) are read around it,
//! until every watch is open again and its CPU stays flat.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_control::simulated::{Fleet, proc_stats};
use trellis_kube::testing::Cluster;

use crate::control_plane::ControlPlane;

/// The resources the control plane watches (`trellis_kube::source`: a watch per kind
/// and the mesh ConfigMap).
pub fn watched_resources() -> Vec<String> {
    let mut all: Vec<String> = trellis_kube::source::watched()
        .into_iter()
        .map(|k| k.resource.plural)
        .collect();
    all.push("configmaps".into());
    all
}

/// The audit policy of the restarted API server: list and watch requests, no bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [list, watch]
- level: None
";

/// What the control plane asked of the restarted API server, per resource, from the
/// audit log (requests by `user`; the API server's own informers are another user).
#[derive(Debug, Default, Clone)]
pub struct Requests {
    /// LIST requests (a relist; each page counts).
    pub lists: BTreeMap<String, usize>,
    /// Watches started.
    pub watches: BTreeMap<String, usize>,
    /// Resources whose latest request is a watch still open.
    pub watching: BTreeSet<String>,
}

fn read_audit(file: &Path, user: &str) -> Requests {
    let mut requests = Requests::default();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let Some(resource) = event["objectRef"]["resource"].as_str() else {
            continue;
        };
        let stage = event["stage"].as_str().unwrap_or_default();
        match (event["verb"].as_str().unwrap_or_default(), stage) {
            ("list", "ResponseComplete") => {
                *requests.lists.entry(resource.into()).or_default() += 1;
                requests.watching.remove(resource);
            }
            ("watch", "ResponseStarted") => {
                *requests.watches.entry(resource.into()).or_default() += 1;
                requests.watching.insert(resource.into());
            }
            ("watch", "ResponseComplete") => {
                requests.watching.remove(resource);
            }
            _ => {}
        }
    }
    requests
}

/// The control plane's user (the harness's kubeconfig).
const USER: &str = "admin";

/// What one restart cost.
pub struct Restart {
    /// The API server killed until it answered /readyz again.
    pub down: Duration,
    /// From the API server's return until every watched resource had a watch open.
    pub rewatched_after: Option<Duration>,
    /// From the kill until the control plane's CPU was flat again.
    pub settled_after: Duration,
    /// What the control plane asked of the new API server.
    pub requests: Requests,
    /// Watched resources with no watch open at the end.
    pub not_watching: Vec<String>,
    /// The control plane's CPU from the kill until settled, and the part of it its
    /// idle rate accounts for.
    pub cpu_ms: f64,
    pub idle_cpu_ms: f64,
    /// Its `trellis_control_pushes_total` moved by.
    pub pushes_sent: f64,
    /// Pushes the simulated proxies received meanwhile.
    pub pushes_received: u64,
}

/// Restarts the API server and measures; `idle_ms_per_s` is the control plane's CPU
/// rate when nothing happens, measured just before.
pub async fn restart(
    cluster: &mut Cluster,
    control: &ControlPlane,
    fleet: &Arc<Fleet>,
    idle_ms_per_s: f64,
) -> Result<Restart, String> {
    let watched = watched_resources();
    let pushes_sent0 = control.metric("trellis_control_pushes_total")?;
    let pushes_received0 = fleet.pushes();
    let cpu0 = proc_stats(control.pid).cpu_ms;
    let policy = cluster.dir().join("audit-policy.yaml");
    let audit = cluster.dir().join("audit.log");
    std::fs::write(&policy, AUDIT_POLICY).map_err(|e| e.to_string())?;
    let flags = [
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", audit.display()),
    ];
    let killed = Instant::now();
    cluster
        .restart_apiserver(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    let down = killed.elapsed();

    // Until every watch is open again and the control plane's CPU stays flat for a
    // second after that (bounded: two minutes).
    let back = Instant::now();
    let mut rewatched_after = None;
    let mut requests = Requests::default();
    let mut last_cpu = proc_stats(control.pid).cpu_ms;
    let mut flat_since: Option<Instant> = None;
    while killed.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        requests = read_audit(&audit, USER);
        if rewatched_after.is_none() && watched.iter().all(|r| requests.watching.contains(r)) {
            rewatched_after = Some(back.elapsed());
        }
        let cpu = proc_stats(control.pid).cpu_ms;
        // Flat: no more than its idle rate and a tick over 250 ms.
        let busy = cpu - last_cpu > idle_ms_per_s * 0.25 + 10.0;
        last_cpu = cpu;
        if busy || rewatched_after.is_none() {
            flat_since = None;
        } else if flat_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    let settled_after = killed.elapsed();
    let cpu_ms = proc_stats(control.pid).cpu_ms - cpu0;
    // The counters move when a push is sent; give the last ones a moment to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Restart {
        down,
        rewatched_after,
        settled_after,
        not_watching: watched
            .iter()
            .filter(|r| !requests.watching.contains(*r))
            .cloned()
            .collect(),
        requests,
        cpu_ms,
        idle_cpu_ms: idle_ms_per_s * settled_after.as_secs_f64(),
        pushes_sent: control.metric("trellis_control_pushes_total")? - pushes_sent0,
        pushes_received: fleet.pushes() - pushes_received0,
    })
}
