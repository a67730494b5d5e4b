//! Cluster-mode scale benchmark (`bench/cluster-scale.sh`): a real etcd and
//! kube-apiserver (the test harness's, `trellis_kube::testing`) loaded with SERVICES
//! Services and PODS Running, Ready Pods over NAMESPACES namespaces, and a release
//! `trellis control-plane --kubeconfig` reading them. Measures its time to ready and
//! memory, PROXIES simulated sidecars (each proving its Pod's service-account token by
//! TokenReview, then ACKing pushes over gRPC/TLS), the time from a VirtualService
//! change written to the API server (through the validating webhook) to every proxy's
//! ACK, and what a restart of the API server (every watch broken) costs the control
//! plane. Prints a table; a benchmark, never a test.
//!
//! `cluster_scale --trellis PATH [--services 1000] [--pods 5000] [--namespaces 10]
//!  [--proxies 200] [--changes 10] [--vs-every 10] [--concurrency 32]`

mod control_plane;
mod load;
mod proxies;
mod relist;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use trellis_control::simulated::{Fleet, percentile, proc_stats};
use trellis_kube::testing::{Cluster, ClusterOptions, install_istio_crds};

use crate::control_plane::ControlPlane;
use crate::load::Sizes;

const NAME: &str = "cluster_scale";

fn arg(name: &str, default: Option<&str>) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or(default.map(str::to_string))
        .unwrap_or_else(|| panic!("{name} is required"))
}

fn number(name: &str, default: usize) -> usize {
    arg(name, Some(&default.to_string()))
        .parse()
        .unwrap_or_else(|_| panic!("{name} takes a number"))
}

/// Distinct addresses in 10.244.0.0/16 (the Pods') that `text` names.
fn pod_addresses(text: &str) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("10.244.") {
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if let Ok(ip) = rest[..end].parse::<std::net::Ipv4Addr>() {
            seen.insert(ip);
        }
    }
    seen.len()
}

/// Sets svc0's route timeout to `timeout_s` seconds (a merge patch of its
/// VirtualService, admitted by the validating webhook).
async fn change_route(routes: &Api<DynamicObject>, timeout_s: usize) {
    let patch = serde_json::json!({"spec": {"http": [{
        "timeout": format!("{timeout_s}s"),
        "retries": {"attempts": 2, "perTryTimeout": "1s"},
        "route": [{"destination": {"host": "svc0", "port": {"number": 80}}}],
    }]}});
    routes
        .patch("svc0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the VirtualService change is admitted");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The report, as rows of a Markdown table.
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        let (what, figure) = (what.into(), figure.into());
        println!("  {what}: {figure}");
        self.0.push((what, figure));
    }
}

fn main() {
    let trellis = PathBuf::from(arg("--trellis", None));
    let sizes = Sizes {
        services: number("--services", 1000),
        pods: number("--pods", 5000),
        namespaces: number("--namespaces", 10),
        virtual_service_every: number("--vs-every", 10),
        concurrency: number("--concurrency", 32),
    };
    let proxies = number("--proxies", 200);
    let changes = number("--changes", 10);
    assert!(
        sizes.namespaces > 0
            && sizes.services.is_multiple_of(sizes.namespaces)
            && sizes.pods >= sizes.services
            && proxies <= sizes.services
            && sizes.virtual_service_every > 0,
        "needs services a multiple of namespaces, pods >= services >= proxies, --vs-every > 0"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run(trellis, sizes, proxies, changes));
}

async fn run(trellis: PathBuf, sizes: Sizes, proxies: usize, changes: usize) {
    let mut table = Table(Vec::new());
    // The machine may be shared: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    println!("==> a real etcd + kube-apiserver (no controller-manager, no kubelet)");
    let Some(mut cluster) = Cluster::start_with(
        NAME,
        ClusterOptions {
            controller_manager: false,
        },
    )
    .await
    else {
        std::process::exit(3);
    };
    if !install_istio_crds(&cluster, NAME, &[]) {
        std::process::exit(3);
    }
    let client = cluster.client().await;

    println!(
        "==> loading {} Services, {} Pods in {} namespaces ({} at a time)",
        sizes.services, sizes.pods, sizes.namespaces, sizes.concurrency
    );
    let started = Instant::now();
    let loaded = load::load(&client, &sizes)
        .await
        .expect("the cluster loads");
    for (what, took) in &loaded.steps {
        println!("  {what}: {}", secs(*took));
    }
    let pod_bytes = serde_json::to_vec(&loaded.pods[0].pod).map_or(0, |v| v.len());
    table.row(
        format!(
            "load the API server: {} Services, {} ServiceAccounts, {} Pods (created, then status), {} VirtualServices (not a measured figure)",
            sizes.services, sizes.services, sizes.pods, loaded.virtual_services
        ),
        format!(
            "{} ({:.0} objects/s; a Pod is {pod_bytes} bytes of JSON as created)",
            secs(started.elapsed()),
            (2 * sizes.services + 2 * sizes.pods + loaded.virtual_services) as f64
                / started.elapsed().as_secs_f64()
        ),
    );

    println!("==> trellis control-plane --kubeconfig");
    let control = ControlPlane::start(
        &trellis,
        &cluster.kubeconfig,
        cluster.dir(),
        Duration::from_secs(180),
    )
    .expect("the control plane starts");
    let at_ready = proc_stats(control.pid);
    table.row(
        "control plane: start → ready (every watch listed)",
        format!(
            "{} (its log: read {})",
            secs(control.ready_after),
            control.read_line().unwrap_or_else(|| "?".into())
        ),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let synced = proc_stats(control.pid);
    table.row(
        "control plane: resident memory after sync (VmRSS at ready / 2 s later; peak)",
        format!(
            "{:.0} / {:.0} MiB; {:.0} MiB; CPU to get there {:.0} ms",
            at_ready.rss_mib, synced.rss_mib, synced.peak_mib, synced.cpu_ms
        ),
    );

    // The webhook configuration must be in place before a change is measured, so
    // that the change takes the path a user's does.
    let webhooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while webhooks
        .list(&Default::default())
        .await
        .map_or(true, |l| l.items.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "no validating webhook configuration after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!(
        "==> {proxies} simulated sidecars (Pod tokens → TokenReview → certificate → config stream)"
    );
    let fleet = Fleet::new(proxies);
    let chosen = proxies::choose(&loaded.pods, &sizes, proxies);
    let root = control.root_pem().expect("the mesh root");
    let started = Instant::now();
    let identities = proxies::connect(
        &client,
        &fleet,
        &chosen,
        &control.grpc,
        &root,
        &cluster.dir().join("tokens"),
        16,
    )
    .await
    .expect("every proxy gets a certificate");
    let certified = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.configured() < proxies {
        assert!(
            Instant::now() < deadline,
            "only {} of {proxies} proxies got a configuration in 600 s",
            fleet.configured()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let configured = started.elapsed();
    let initial_bytes = fleet.take_bytes();
    // Each sidecar announcing its Pod changes the mesh (the Pod now takes mutual
    // TLS), so the others get pushes while the rest connect: wait for quiet.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut newest = fleet.newest();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = fleet.newest();
        if now == newest || Instant::now() > deadline {
            break;
        }
        newest = now;
    }
    let quiet = started.elapsed();
    let with_proxies = proc_stats(control.pid);
    // The Pods' addresses are in the sidecars' configs: count those of one.
    let first = &chosen[0].pod.metadata;
    let config = control
        .get(&format!(
            "/api/v1/proxies/{}.{}/config",
            first.name.as_deref().unwrap_or_default(),
            first.namespace.as_deref().unwrap_or_default()
        ))
        .expect("a sidecar's config from the API");
    let addresses = pod_addresses(&config);
    table.row(
        format!("{proxies} proxies: Pod token + TokenReview-checked CSR, all certified"),
        secs(certified),
    );
    table.row(
        format!("{proxies} proxies: all configured (first full push ACKed) / pushes settled"),
        format!(
            "{} / {} ({:.0} MiB of resources pushed until all configured)",
            secs(configured),
            secs(quiet),
            initial_bytes as f64 / 1048576.0
        ),
    );
    table.row(
        "Pod IPs in one sidecar's config (its endpoints)",
        format!("{addresses} of {} Pods", sizes.pods),
    );
    table.row(
        format!("control plane: resident memory with {proxies} proxies"),
        format!("{:.0} MiB", with_proxies.rss_mib),
    );

    println!(
        "==> {changes} VirtualService changes (kube client merge patch; the webhook validates each)"
    );
    let resource = load::virtual_services_resource();
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &load::namespace_of(0, &sizes), &resource);
    let mut rows: Vec<(f64, f64, f64, f64, u64)> = Vec::new();
    let mut cpu_total = 0.0;
    fleet.take_bytes();
    for k in 0..changes {
        let before = fleet.newest();
        let cpu0 = proc_stats(control.pid).cpu_ms;
        let t0 = Instant::now();
        change_route(&routes, k + 2).await;
        let written = t0.elapsed().as_secs_f64() * 1000.0;
        assert!(
            fleet.wait_all_past(before, Duration::from_secs(60)).await,
            "change {k} never reached every proxy"
        );
        cpu_total += proc_stats(control.pid).cpu_ms - cpu0;
        let lat = fleet.latencies_ms(t0);
        println!(
            "  change {k}: written in {written:.1} ms; every ACK p50 {:.1}, p99 {:.1}, max {:.1} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
        rows.push((
            written,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            fleet.take_bytes(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let median = |f: fn(&(f64, f64, f64, f64, u64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    table.row(
        format!("VirtualService change → every proxy's ACK, p50 / p99 / max over {proxies} proxies (median over {changes} changes; max of maxima)"),
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            median(|r| r.1),
            median(|r| r.2),
            rows.iter().map(|r| r.3).fold(0.0, f64::max)
        ),
    );
    table.row(
        "of which the write itself (API server + webhook; median)",
        format!("{:.0} ms", median(|r| r.0)),
    );
    table.row(
        "per change: bytes pushed to all proxies / control-plane CPU",
        format!(
            "{:.0} KB / {:.0} ms",
            median(|r| r.4 as f64) / 1000.0,
            cpu_total / changes.max(1) as f64
        ),
    );

    // A second after changes pause, the leader analyses the whole mesh and writes
    // status back: once after the series, measured apart.
    let after0 = proc_stats(control.pid).cpu_ms;
    tokio::time::sleep(Duration::from_secs(4)).await;
    table.row(
        "control-plane CPU in the 4 s after the last change (one analysis pass, status written back)",
        format!("{:.0} ms", proc_stats(control.pid).cpu_ms - after0),
    );

    println!("==> watch restart: kill and restart the API server");
    let idle0 = proc_stats(control.pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rate = (proc_stats(control.pid).cpu_ms - idle0.cpu_ms) / 5.0;
    let restart = relist::restart(&mut cluster, &control, &fleet, idle_rate)
        .await
        .expect("the API server restarts");
    let requests = &restart.requests;
    // The source's watches (the leader's webhook-configuration watch aside).
    let watched = relist::watched_resources();
    let relisted: Vec<&String> = watched
        .iter()
        .filter(|r| requests.lists.contains_key(*r))
        .collect();
    let resumed = watched
        .iter()
        .filter(|r| requests.watches.contains_key(*r) && !requests.lists.contains_key(*r))
        .count();
    let list_requests: usize = relisted.iter().map(|r| requests.lists[*r]).sum();
    println!(
        "  the control plane's LIST requests after the restart, by resource: {:?}",
        requests.lists
    );
    println!(
        "  the control plane's watches started after the restart, by resource: {:?}",
        requests.watches
    );
    if !restart.not_watching.is_empty() {
        println!("  no watch open at the end for: {:?}", restart.not_watching);
    }
    table.row(
        "watch restart: API server down (kill → ready) / every watch open again after",
        format!(
            "{} / {}",
            secs(restart.down),
            restart
                .rewatched_after
                .map_or("not all within 120 s".into(), secs)
        ),
    );
    table.row(
        "watch restart: resources relisted (LIST requests) of those watched",
        format!(
            "{} of {} ({list_requests} LIST requests; {resumed} watches resumed without a LIST)",
            relisted.len(),
            watched.len(),
        ),
    );
    table.row(
        "watch restart: pushes sent (control plane's counter) / received by the proxies",
        format!("{:.0} / {}", restart.pushes_sent, restart.pushes_received),
    );
    table.row(
        "watch restart: control-plane CPU from the kill until flat again",
        format!(
            "{:.0} ms over {} (idle rate would be {:.0} ms)",
            restart.cpu_ms,
            secs(restart.settled_after),
            restart.idle_cpu_ms
        ),
    );
    let end = proc_stats(control.pid);
    // One more change: its recompute hands freed heap back (malloc_trim), which tells
    // memory the relist still holds from memory it freed.
    let before = fleet.newest();
    change_route(&routes, changes + 2).await;
    let _ = fleet.wait_all_past(before, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trimmed = proc_stats(control.pid);
    table.row(
        "control plane: resident memory before the restart / after the relist / after one more change / peak",
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0} MiB",
            idle0.rss_mib, end.rss_mib, trimmed.rss_mib, trimmed.peak_mib
        ),
    );
    // Its warnings by where they come from (the restart makes some), the first of each.
    let mut warnings: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in control.log_lines(" WARN ") {
        let target = line
            .split_once(" WARN ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        warnings.entry(target).or_insert((0, line)).0 += 1;
    }
    if !warnings.is_empty() {
        println!("\ncontrol-plane warnings by source (count, the first):");
        for (target, (count, first)) in &warnings {
            println!("  {target} {count}× — {first}");
        }
    }

    println!(
        "\n| cluster mode, {} Services, {} Pods, {} namespaces, {proxies} proxies | figure |\n|---|---|",
        sizes.services, sizes.pods, sizes.namespaces
    );
    println!("| machine load average (1 min) at the start | {load} |");
    for (what, figure) in &table.0 {
        println!("| {what} | {figure} |");
    }
    drop(identities);
    drop(control);
}
