//! `trellis up DIR` and `trellis down`: run the manifests in a directory as a local
//! mesh — every Deployment replica a process on its own loopback address behind its own
//! sidecar, an ingress gateway on a host port — and follow edits to the directory.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis_api::Resource;

use crate::local::{LocalMesh, Options};
use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis up ./manifests                   run it; Ctrl-C (or `trellis down`) stops everything
  trellis up ./manifests --gateway-port 9000
  curl -H 'host: app.example.com' http://127.0.0.1:8080/   through the ingress gateway

Each pod gets a pod IP (127.0.1.N) where its sidecar listens and an app IP (127.0.2.N)
where its process listens (LISTEN is set for it). Apps reach services through their
sidecar: HTTP_PROXY=http://POD_IP:15001 is set, so `http://reviews:9080/` just works.
Sidecar admin: http://POD_IP:15000/config_dump; metrics: http://POD_IP:15020/stats/prometheus.

Two meshes side by side: give each its own --address-block (pods at 127.B.1.N, apps at
127.B.2.N, the gateway's admin at 127.B.3.1) and ports; --gateway-port 0 and
--control-plane-port 0 let the OS pick free ones, printed when the mesh is ready.")]
pub struct Args {
    /// Directory (or file) of Kubernetes and Istio manifests.
    pub dir: PathBuf,
    /// Host port for the ingress gateway's port 80 (443 goes to this + 363). 0: the OS
    /// picks free ports for both (printed when the mesh is ready).
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// Where the apps' output goes (default: a fresh temporary directory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Port of the control plane's API on 127.0.0.1 (`trellis apply`, `proxy-status`
    /// and `proxy-config` talk to it; proxies connect to this port − 2). 0: the OS picks
    /// both (the API's is printed when the mesh is ready); a restarted control plane
    /// keeps them.
    #[arg(long, default_value_t = 15014)]
    pub control_plane_port: u16,
    /// Loopback block B of the mesh's addresses: pod IPs 127.B.1.N, app IPs 127.B.2.N,
    /// the gateway's admin and metrics at 127.B.3.1.
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub address_block: u8,
    /// Lifetime of the workload certificates the mesh CA signs; each proxy renews at
    /// about half of it (a few seconds shows rotation under traffic).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub cert_lifetime: String,
}

/// Where `trellis up` records its process id for `trellis down`: one file per gateway
/// port, so several meshes can run side by side.
fn pid_file(gateway_port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("trellis-up-{gateway_port}.pid"))
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The gateway port of the mesh to stop (as given to `trellis up`, or as it printed
    /// when given 0).
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
}

/// Loads and validates a directory; errors are listed with file and line.
pub fn load_valid(paths: &[PathBuf]) -> Result<Vec<Resource>, String> {
    let (loaded, _) = crate::inputs::load(paths);
    trellis_control::source::validated(loaded)
        .map_err(|problems| trellis_control::source::invalid_message(&problems))
}

/// Default log directory: a new folder under the system's temporary directory, made
/// here (mode 0700) and never one that already exists, so no other local user can
/// have prepared it (the mesh's CA and tokens live inside).
pub fn fresh_log_dir() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let mut attempt = 0u32;
    loop {
        let dir = match attempt {
            0 => base.join(format!("trellis-up-{pid}")),
            n => base.join(format!("trellis-up-{pid}-{n}")),
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                attempt += 1;
            }
            // Made, or a failure the caller reports when it uses the directory.
            _ => return dir,
        }
    }
}

/// Runs the mesh until Ctrl-C, SIGTERM or `trellis down`.
pub fn run(args: &Args) -> i32 {
    let mut err = anstream::stderr();
    // Before any child starts: a Ctrl-C from now on stops everything cleanly.
    let stop = crate::signals::stop_flag();
    let resources = match load_valid(std::slice::from_ref(&args.dir)) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    let started = Instant::now();
    let options = Options {
        gateway_port: args.gateway_port,
        log_dir: args.log_dir.clone().unwrap_or_else(fresh_log_dir),
        config_dir: std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone()),
        control_plane_port: args.control_plane_port,
        block: args.address_block,
        cert_lifetime: args.cert_lifetime.clone(),
    };
    let mesh = match LocalMesh::start(&resources, options) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    // Keyed by the port the gateway got (the OS's pick for 0), which the summary prints.
    let gateway_port = mesh.gateway.port();
    let _ = std::fs::write(pid_file(gateway_port), std::process::id().to_string());
    if let Err(e) = mesh.wait_ready(Duration::from_secs(20)) {
        let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
        return 1;
    }
    // (The control plane, whose output is ours, warns about policies not enforced yet.)
    print_summary(&mesh, started.elapsed());
    let _ = writeln!(
        anstream::stdout(),
        "  stop: Ctrl-C, or `trellis down --gateway-port {gateway_port}`"
    );
    // The control plane watches the directory: edits take effect within a second, and
    // a refused edit is reported here (its stderr is ours).
    // Pods are started once: say so when the directory's Deployments change.
    let mut seen = trellis_control::source::fingerprint(&args.dir);
    let mut last_said = None;
    let mut tick = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        tick += 1;
        if !tick.is_multiple_of(10) {
            continue;
        }
        let now = trellis_control::source::fingerprint(&args.dir);
        if now == seen {
            continue;
        }
        seen = now;
        let Ok(resources) = trellis_control::source::load_validated(&args.dir) else {
            continue; // the control plane reports what is wrong
        };
        let Ok(drift) = crate::local::plan::drift(&mesh.plan, &resources) else {
            continue;
        };
        if drift.iter().all(Vec::is_empty) || last_said.as_ref() == Some(&drift) {
            continue;
        }
        let [added, removed, changed] = &drift;
        let mut parts = Vec::new();
        for (what, names) in [("new", added), ("gone", removed), ("changed", changed)] {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        }
        let _ = writeln!(
            err,
            "{s}warning{s:#}: the Deployments changed ({}); routing and policy edits apply live, but pods start only with `trellis up`: restart it to run them",
            parts.join("; "),
            s = output::WARNING
        );
        last_said = Some(drift);
    }
    let _ = writeln!(
        anstream::stdout(),
        "stopping {} pods…",
        mesh.plan.pods.len()
    );
    drop(mesh);
    let _ = std::fs::remove_file(pid_file(gateway_port));
    0
}

/// Says which pods run a bundled program in place of their container image (Istio's
/// samples), one line per Deployment.
fn print_stand_ins(out: &mut impl Write, plan: &crate::local::plan::Plan) {
    let mut said = std::collections::BTreeSet::new();
    let mut first = true;
    for p in &plan.pods {
        let Some(stand_in) = &p.stand_in else {
            continue;
        };
        if !said.insert((&p.namespace, &p.deployment)) {
            continue;
        }
        if std::mem::take(&mut first) {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "  {}: {stand_in}", p.deployment);
    }
}

/// Says which pods run without a sidecar and why, as the seed's "Sidecar not injected"
/// troubleshooting entry would have a user check.
fn print_without_sidecars(out: &mut impl Write, plan: &crate::local::plan::Plan) {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for p in plan.without_sidecars() {
        by_reason
            .entry(p.injection.reason)
            .or_default()
            .push(&p.name);
    }
    if by_reason.is_empty() {
        return;
    }
    let w = output::WARNING;
    for (reason, pods) in &by_reason {
        let _ = writeln!(
            out,
            "\n  {w}no sidecar{w:#} for {}: {reason}",
            pods.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  they are reached directly at their app address, in plaintext; to give them one, label the namespace\n  (`istio-injection: enabled` on its Namespace) and run `trellis up` again"
    );
}

/// Prints the pods, the gateway and how to talk to them.
pub fn print_summary(mesh: &LocalMesh, took: Duration) {
    let mut out = anstream::stdout();
    let s = output::OK;
    let gateway = if mesh.gateway_serves {
        let tls = mesh
            .gateway_tls
            .map(|a| format!(" and https://{a}"))
            .unwrap_or_default();
        format!("ingress gateway on http://{}{tls}", mesh.gateway)
    } else {
        "no Gateway selects the ingress gateway (istio: ingressgateway), so it serves nothing"
            .to_string()
    };
    let with = mesh
        .plan
        .pods
        .iter()
        .filter(|p| p.injection.sidecar)
        .count();
    let pods = match (with, mesh.plan.pods.len()) {
        (w, n) if w == n => format!("{n} pods with sidecars"),
        (w, n) => format!("{n} pods ({w} with sidecars)"),
    };
    let _ = writeln!(
        out,
        "{s}mesh ready{s:#} in {:.1}s: {pods}, {gateway}",
        took.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "\n  {:<22} {:<12} {:<12} {:<9} {:<8} PORTS",
        "POD", "POD IP", "APP IP", "VERSION", "READY"
    );
    for p in &mesh.plan.pods {
        let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
        // As `kubectl get pods` counts containers: the app, and its sidecar if any.
        let ready = if p.injection.sidecar { "2/2" } else { "1/1" };
        let pod_ip = if p.injection.sidecar {
            p.pod_ip.to_string()
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:<12} {:<9} {:<8} {}",
            p.name,
            pod_ip,
            p.app_ip,
            p.labels.get("version").map_or("-", String::as_str),
            ready,
            ports.join(",")
        );
    }
    print_stand_ins(&mut out, &mesh.plan);
    print_without_sidecars(&mut out, &mesh.plan);
    if let Some(p) = mesh.plan.pods.iter().find(|p| p.injection.sidecar) {
        let _ = writeln!(
            out,
            "\n  send a request as {}:  curl -x http://{}:15001 http://SERVICE:PORT/",
            p.name, p.pod_ip
        );
    }
    let _ = writeln!(
        out,
        "  gateway metrics: http://{}:15020/stats/prometheus   app logs: {}",
        mesh.gateway_ip,
        mesh.log_dir.display()
    );
    let _ = writeln!(
        out,
        "  control plane (pid {}): API http://{}/ — try `trellis proxy-status`, `trellis apply -f FILE`",
        mesh.control_plane_pid().unwrap_or(0),
        mesh.control_api
    );
}

/// `trellis down`: stops the mesh that `trellis up` started.
pub fn down(args: &DownArgs) -> i32 {
    let file = pid_file(args.gateway_port);
    let Ok(pid) = std::fs::read_to_string(&file) else {
        let _ = writeln!(
            anstream::stderr(),
            "no running `trellis up` found ({} is absent)",
            file.display()
        );
        return 1;
    };
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status();
    match status {
        Ok(s) if s.success() => {
            let _ = writeln!(
                anstream::stdout(),
                "asked trellis up (pid {}) to stop",
                pid.trim()
            );
            0
        }
        _ => {
            let _ = std::fs::remove_file(&file);
            let _ = writeln!(
                anstream::stderr(),
                "trellis up (pid {}) is not running",
                pid.trim()
            );
            1
        }
    }
}
