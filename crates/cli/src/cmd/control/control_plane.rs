//! `trellis control-plane`: runs `trellis_control` (watched directory, gRPC for proxies,
//! the HTTP API and /metrics) until SIGINT or SIGTERM, or until its parent exits when
//! `trellis up` started it. The control plane itself lives in crates/control.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis control-plane --config ./mesh       watch ./mesh; proxies connect to 127.0.0.1:15012
  trellis control-plane --config ./mesh --state /var/lib/trellis/applied.yaml
  trellis proxy --control-plane 127.0.0.1:15012 --role gateway --port-map 80=8080

  # cluster mode: read Istio resources, Services and Pods from Kubernetes
  trellis control-plane --kubernetes                     kubeconfig as kubectl finds it, or in-cluster
  trellis control-plane --kubeconfig ~/.kube/config --context prod --grpc 0.0.0.0:15012

The HTTP API (apply, delete, get, proxy-status, proxy-config) and Prometheus metrics
(/metrics: pushes, push latency, connected proxies, config errors) share --http.
Port 0 in --grpc or --http lets the OS pick a free port; the ready line says which.
Edits to --config take effect within a second; an invalid edit is refused whole and
the running configuration stays.")]
pub struct ControlPlaneArgs {
    /// Directory (or file) of manifests to serve and watch.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Address proxies connect to (gRPC).
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub grpc: SocketAddr,
    /// Address of the HTTP API and /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http: SocketAddr,
    /// File where resources added with `trellis apply` are kept across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
    /// Stop when the process that started this one exits (how `trellis up` runs it).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
    /// Once listening, write `grpc ADDR` and `http ADDR` lines (ports the OS picked
    /// resolved) to FILE (how `trellis up` learns them).
    #[arg(long, hide = true, value_name = "FILE")]
    pub addresses_file: Option<PathBuf>,
    /// Workloads no proxy announces (JSON; how `trellis up` lists its pods without a
    /// sidecar).
    #[arg(long, hide = true, value_name = "FILE")]
    pub workloads: Option<PathBuf>,
    /// Where the mesh CA (`ca/`), bootstrap tokens (`tokens/`) and the API token
    /// (`api-token`) are kept (default: ~/.trellis/control-plane; created 0700).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Use Istio's plugged-in CA from DIR (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`) instead of a root of its own.
    #[arg(long, value_name = "DIR")]
    pub cacerts: Option<PathBuf>,
    /// The SPIFFE trust domain (MeshConfig `trustDomain`).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime of the workload certificates the CA signs (renewed at about half).
    #[arg(long, default_value = "24h", value_parser = parse_lifetime, value_name = "DURATION")]
    pub cert_lifetime: Duration,
}

/// `24h`, `30m`, `10s` (Go's duration syntax, as Istio's flags take it).
pub(super) fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let d = trellis_api::values::Duration::parse(text).map_err(|e| e.to_string())?;
    let d = d.get();
    if d < Duration::from_secs(2) {
        return Err("at least 2s".into());
    }
    Ok(d)
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn control_plane(args: &ControlPlaneArgs) -> i32 {
    // Warnings, and what became of the watched directory's edits (`trellis up` shows
    // them on its terminal).
    crate::cmd::proxy::init_logging_or(&format!("warn,{}=info", trellis_control::CONFIG_LOG));
    let stop = crate::signals::stop_flag();
    let cluster = args.cluster.enabled();
    let control = trellis_control::ControlPlane::new();
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::home::trellis_home().join("control-plane"));
    let fail = |e: &dyn std::fmt::Display| {
        let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
        1
    };
    // Cluster mode: the shared CA's files, TokenReview, the watches.
    let pending = if cluster {
        match super::cluster::prepare(&args.cluster, &control, &state_dir, &args.trust_domain) {
            Ok(p) => Some(p),
            Err(e) => return fail(&e),
        }
    } else {
        None
    };
    let options = trellis_control::Options {
        config_dir: args.config.clone(),
        grpc: args.grpc,
        http: args.http,
        state_file: args.state.clone(),
        security: trellis_control::security::SecurityOptions {
            state_dir,
            plugged_ca: args
                .cacerts
                .clone()
                .or_else(|| pending.as_ref().and_then(|p| p.plugged_ca.clone())),
            trust_domain: args.trust_domain.clone(),
            workload_lifetime: args.cert_lifetime,
            authenticators: pending
                .as_ref()
                .map(|p| vec![p.authenticator.clone()])
                .unwrap_or_default(),
        },
    };
    if let Some(file) = &args.workloads {
        match trellis_control::workloads::read(file) {
            Ok(listed) => control.set_listed_workloads(listed),
            Err(e) => {
                let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
                return 1;
            }
        }
    }
    let running = match trellis_control::spawn_with(control, options) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    if let Some(file) = &args.addresses_file
        && let Err(e) = write_addresses(file, running.grpc, running.http)
    {
        let _ = writeln!(
            anstream::stderr(),
            "{s}error{s:#}: {}: {e}",
            file.display(),
            s = output::ERROR
        );
        return 1;
    }
    let active = match pending.map(|p| p.serve(&running)) {
        Some(Ok(active)) => Some(active),
        Some(Err(e)) => return fail(&e),
        None => None,
    };
    if cluster {
        // Say ready once the cluster's objects are read (proxies wait for it too).
        let started = std::time::Instant::now();
        while running.control.held().is_some() && !stop.load(std::sync::atomic::Ordering::Acquire) {
            if started.elapsed() > Duration::from_secs(35) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The CLI finds the API's token through a pointer named by the API's address.
    let pointer = crate::home::write_credential_pointer(
        &running.http.to_string(),
        running.security.api_token_file(),
    );
    if let Err(e) = &pointer {
        let _ = writeln!(
            anstream::stderr(),
            "{s}warning{s:#}: cannot leave the API token's location in {}: {e}",
            crate::home::trellis_home().display(),
            s = output::WARNING
        );
    }
    let _ = writeln!(
        anstream::stdout(),
        "{s}trellis control-plane{s:#} ready{}: {} resources; proxies connect to {} (TLS, mesh CA {}), API and metrics on http://{}/ (API token in {})",
        match active
            .as_ref()
            .and_then(super::cluster::Active::webhook_address)
        {
            Some(webhook) =>
                format!(" (cluster mode; validation webhook on https://{webhook}/validate)"),
            None => String::new(),
        },
        running.control.resources().len(),
        running.grpc,
        running.security.ca.trust_domain(),
        running.http,
        running.security.api_token_file().display(),
        s = output::OK
    );
    let parent = std::os::unix::process::parent_id();
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if args.exit_with_parent && std::os::unix::process::parent_id() != parent {
            break;
        }
    }
    if let Ok(pointer) = pointer {
        let _ = std::fs::remove_file(pointer);
    }
    drop(active);
    drop(running);
    0
}

/// Writes where the control plane listens, whole or not at all (a reader polls the file).
fn write_addresses(file: &Path, grpc: SocketAddr, http: SocketAddr) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("grpc {grpc}\nhttp {http}\n"))?;
    std::fs::rename(&tmp, file)
}
