//! `trellis proxy`: run the data plane. Standalone, it compiles a directory of Istio
//! and Kubernetes YAML itself (no control plane) and follows edits to it; a rejected
//! edit leaves the running config in force. SIGTERM drains it (listeners closed,
//! open connections finished, up to `--drain-duration`); the status port answers
//! readiness probes from before the first config until the drain.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use trellis_control::security::client::{ClientIdentity, FirstCredential};

use trellis_compile::{Inbound, ProxyIdentity};
use trellis_model::ProxyConfig;
use trellis_proxy::{Health, Options, Proxy};

use crate::output;

use super::proxy_lifecycle::{
    StatusPort, drain, parse_duration, parse_status_port, print_status, start_status,
};
use super::proxy_standalone::{initial_config, parse_pairs, watch};

/// Which side of the mesh this proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Sidecar,
    Gateway,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # an edge gateway for the Gateway and VirtualServices in ./mesh, port 80 served on 8080
  trellis proxy --standalone ./mesh --role gateway --port-map 80=8080

  # a sidecar for a productpage workload: apps send HTTP to 127.0.0.1:15001 as their proxy
  trellis proxy --standalone ./mesh --role sidecar --name productpage-v1 --labels app=productpage,version=v1

  # mesh traffic for the app on :9080 arrives on :15006
  trellis proxy --standalone ./mesh --role sidecar --inbound 127.0.0.1:15006=127.0.0.1:9080

Endpoints come from Pods with status.podIP, WorkloadEntries and ServiceEntry endpoints.
Admin: http://127.0.0.1:15000/config_dump, /clusters; metrics: :15020/stats/prometheus;
readiness: :15021/healthz/ready (with --control-plane, or --status-port).
SIGTERM drains (new connections refused, open ones finished, then exit 0); a second
SIGTERM or Ctrl-C exits at once.")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// Directory (or file) of Istio and Kubernetes YAML to compile and watch.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "control_plane"])]
    pub standalone: Option<PathBuf>,
    /// Follow a control plane (its gRPC address, e.g. 127.0.0.1:15012) instead.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "config")]
    pub control_plane: Option<String>,
    /// With --control-plane: this proxy's unique name (default: --name).
    #[arg(long)]
    pub id: Option<String>,
    /// With --control-plane: the workload's pod IP, which makes it an endpoint of the
    /// Services that select its labels.
    #[arg(long)]
    pub pod_ip: Option<IpAddr>,
    /// With --control-plane: the mesh's root certificate, pinned (default: where
    /// Istio mounts it in a pod, /var/run/secrets/istio/root-cert.pem, else the CA of
    /// a control plane run by this user, ~/.trellis/control-plane/ca/ca-cert.pem).
    #[arg(long, value_name = "FILE")]
    pub ca_root: Option<PathBuf>,
    /// Standalone: a mesh identity from files (as certificates mounted from elsewhere):
    /// the workload certificate chain (PEM, a SPIFFE URI SAN), its key, and the mesh
    /// roots. Read once at start; with it the proxy speaks and checks the mesh's mTLS.
    #[arg(long, value_name = "FILE", requires_all = ["identity_key", "identity_roots"], conflicts_with = "control_plane")]
    pub identity_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "identity_cert")]
    pub identity_key: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "identity_cert")]
    pub identity_roots: Option<PathBuf>,
    /// With --control-plane: a file holding the one-time bootstrap token that proves
    /// this proxy's namespace and service account for its first certificate (also
    /// from TRELLIS_BOOTSTRAP_TOKEN). Keep it mode 0600; it works once.
    #[arg(long, value_name = "FILE", conflicts_with = "token_file")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// With --control-plane in cluster mode: the pod's service-account token for
    /// audience `istio-ca` (re-read for each first certificate; default
    /// /var/run/secrets/tokens/istio-token when it exists, where Istio mounts it).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A compiled ProxyConfig (JSON or YAML), instead of --standalone.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sidecar")]
    pub role: Role,
    /// Workload name, for metrics.
    #[arg(long, default_value = "trellis-proxy")]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k=v` (a gateway defaults to istio=ingressgateway).
    #[arg(long, value_name = "K=V,...")]
    pub labels: Option<String>,
    #[arg(long, default_value = "")]
    pub service_account: String,
    /// Capture mode (after `trellis proxy init`): take the app's redirected traffic on
    /// 0.0.0.0:15001 (outbound, by original destination) and 0.0.0.0:15006 (inbound);
    /// inbound ports default to the target ports of the services selecting --labels;
    /// DNS for the mesh's names is answered on 127.0.0.1:15053 (UDP).
    #[arg(long)]
    pub capture: bool,
    /// Sidecar outbound listener (the app's HTTP proxy).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub listen: SocketAddr,
    /// Inbound listener in front of the app, LISTEN=APP (repeatable).
    #[arg(long, value_name = "LISTEN=APP")]
    pub inbound: Vec<String>,
    /// Serve a Gateway port on another port, FROM=TO (repeatable), e.g. 80=8080.
    #[arg(long, value_name = "FROM=TO")]
    pub port_map: Vec<String>,
    /// Address gateway listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Data-plane threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Admin endpoint.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Prometheus metrics and readiness.
    #[arg(long, default_value = "127.0.0.1:15020")]
    pub stats: SocketAddr,
    /// Readiness probes' port (Istio's status port): `/healthz/ready` answers 200 once
    /// the proxy has its config, certificate and listeners, 503 before and while
    /// draining; on --pod-ip, else --bind. Default: 15021 with --control-plane (unless
    /// --stats is on 15021, which answers the same), else off. 0 lets the OS pick.
    #[arg(long, value_name = "PORT|off", value_parser = parse_status_port)]
    pub status_port: Option<StatusPort>,
    /// On SIGTERM, how long open connections may take to finish before the proxy
    /// exits. Default: `terminationDrainDuration` of Istio's proxy config in the
    /// PROXY_CONFIG environment variable (where Istio's injector puts the mesh's
    /// defaultConfig merged with the pod's `proxy.istio.io/config`), else 5s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub drain_duration: Option<Duration>,
    /// Log every request to standard output.
    #[arg(long)]
    pub access_log: bool,
    /// Access log lines as text (Istio's default format) or JSON objects (implies
    /// --access-log).
    #[arg(long, value_enum, value_name = "ENCODING", default_value = "text")]
    pub access_log_encoding: AccessLogEncoding,
}

/// `trellis proxy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Install capture rules (iptables) in this network namespace, so the app's TCP goes through its sidecar
    Init(super::proxy_init::Args),
}

/// Istio's `accessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogEncoding {
    Text,
    Json,
}

impl Args {
    fn access_log(&self) -> (bool, bool) {
        let json = self.access_log_encoding == AccessLogEncoding::Json;
        (self.access_log || json, json)
    }
}

/// The app's probes the injector rewrote to ask through the stats port
/// (`ISTIO_KUBE_APP_PROBERS`); one that cannot be read is a warning, and those probes
/// then fail as they would against an app that is down.
fn app_probes() -> Option<std::sync::Arc<trellis_proxy::app_probes::AppProbes>> {
    let json = std::env::var(trellis_proxy::app_probes::ENV).ok()?;
    match trellis_proxy::app_probes::AppProbes::parse(&json) {
        Ok(probes) => Some(std::sync::Arc::new(probes)),
        Err(e) => {
            tracing::warn!(error = %e, "the app's probes are not asked");
            None
        }
    }
}

/// Starts the proxy and runs until killed.
pub fn run(args: &Args) -> i32 {
    if let Some(Subcommand::Init(init)) = &args.command {
        return super::proxy_init::run(init);
    }
    init_logging();
    let drain_duration = args.drain_duration();
    let signals = crate::signals::drain_signals();
    let health = Health::new();
    if let Some(address) = &args.control_plane {
        return follow(args, address, signals, health, drain_duration);
    }
    let mut err = anstream::stderr();
    let first = match initial_config(args, 1) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    let summary = format!(
        "{} listeners, {} route tables, {} clusters",
        first.listeners.len(),
        first.route_tables.len(),
        first.clusters.len()
    );
    let mesh_identity = match identity_from_files(args) {
        Ok(identity) => identity,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 2;
        }
    };
    let options = Options {
        workers: args.workers,
        admin: Some(args.admin),
        stats: Some(args.stats),
        access_log: args.access_log().0,
        access_log_json: args.access_log().1,
        mesh_identity,
        health: Some(health.clone()),
        app_probes: app_probes(),
        ..Options::default()
    };
    let status = match start_status(args, &health) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    let proxy = match Proxy::start(first, options) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    let _ = writeln!(
        anstream::stdout(),
        "{s}trellis proxy{s:#} ({:?}) ready: {summary}",
        args.role,
        s = output::OK
    );
    // The addresses bound, a port 0 resolved to the port the OS gave.
    for (name, addr) in proxy.listeners() {
        let _ = writeln!(anstream::stdout(), "  listening: {name} {addr}");
    }
    let _ = writeln!(
        anstream::stdout(),
        "  admin: http://{}/  metrics: http://{}/stats/prometheus",
        proxy.admin_addr().unwrap_or(args.admin),
        proxy.stats_addr().unwrap_or(args.stats)
    );
    print_status(status);
    let signal = if args.standalone.is_some() {
        watch(args, &proxy, &signals)
    } else {
        signals.recv().ok()
    };
    match signal {
        Some(signal) => drain(&proxy, signal, drain_duration),
        // No signal handlers: run until killed.
        None => {
            proxy.wait();
            0
        }
    }
}

/// Applies pushes from a control plane: the first starts the proxy, later ones swap
/// its config (a refused one is NACKed and the running config stays).
pub struct Follower {
    pub name: String,
    pub options: Options,
    pub proxy: Option<Proxy>,
    /// Counts proxies that have started (the local runner waits on it).
    pub started: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Why a first configuration could not start the proxy (the runner gives up).
    pub failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl trellis_control::client::Handler for Follower {
    fn apply(&mut self, config: ProxyConfig) -> Result<(), String> {
        match &self.proxy {
            Some(p) => p.update(config).map_err(|e| e.to_string()),
            None => {
                let proxy = Proxy::start(config, self.options.clone())
                    .inspect_err(|e| {
                        self.failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{}: {e}", self.name));
                    })
                    .map_err(|e| e.to_string())?;
                self.proxy = Some(proxy);
                self.started
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                Ok(())
            }
        }
    }

    fn event(&mut self, event: trellis_control::client::Event) {
        use trellis_control::client::Event;
        match event {
            Event::Connected | Event::Applied(_) => {
                tracing::debug!(proxy = %self.name, ?event, "control plane");
            }
            Event::Refused(v, e) => {
                tracing::warn!(proxy = %self.name, version = v, "refused a configuration (NACK): {e}");
            }
            Event::Disconnected(why, wait) => {
                tracing::info!(proxy = %self.name, "control plane unreachable ({why}); keeping the running configuration, retrying in {wait:?}");
            }
        }
    }
}

/// The spec a proxy announces to the control plane from its flags.
fn spec(args: &Args) -> Result<trellis_control::ProxySpec, String> {
    Ok(trellis_control::ProxySpec {
        id: args.id.clone().unwrap_or_else(|| args.name.clone()),
        role: match args.role {
            Role::Gateway => trellis_model::Role::Gateway,
            Role::Sidecar => trellis_model::Role::Sidecar,
        },
        identity: identity(args)?,
        pod_ip: args.pod_ip,
        outbound: args.listen,
        inbound: parse_inbound(&args.inbound)?,
        port_map: parse_port_map(&args.port_map)?,
        named_ports: BTreeMap::new(),
        admin: Some(args.admin),
        capture: args.capture,
        capture_ipv6: args.capture && ipv6_enabled(),
    })
}

/// Where Istio's injector mounts the pod's token for audience `istio-ca`.
const ISTIO_TOKEN: &str = "/var/run/secrets/tokens/istio-token";
/// Where it mounts the mesh root (the `istio-ca-root-cert` ConfigMap).
const ISTIO_ROOT: &str = "/var/run/secrets/istio/root-cert.pem";

/// `trellis proxy --control-plane`: runs until a signal, reconnecting as needed; then
/// leaves the control plane (which takes its endpoints out of the mesh) and drains.
fn follow(
    args: &Args,
    address: &str,
    signals: std::sync::mpsc::Receiver<crate::signals::Stop>,
    health: std::sync::Arc<Health>,
    drain_duration: Duration,
) -> i32 {
    let spec = match spec(args) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
            return 2;
        }
    };
    let fail = |e: String| {
        let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
        2
    };
    let mounted_root = std::path::Path::new(ISTIO_ROOT);
    let root = args.ca_root.clone().unwrap_or_else(|| {
        if mounted_root.exists() {
            mounted_root.to_path_buf()
        } else {
            crate::home::trellis_home().join("control-plane/ca/ca-cert.pem")
        }
    });
    let trust = match std::fs::read_to_string(&root)
        .map_err(|e| format!("the mesh root {}: {e} (see --ca-root)", root.display()))
        .and_then(|pem| {
            trellis_identity::Trust::from_pem(trellis_identity::DEFAULT_TRUST_DOMAIN, &pem)
                .map_err(|e| format!("the mesh root {}: {e}", root.display()))
        }) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mounted = std::path::Path::new(ISTIO_TOKEN);
    let token_file = args.token_file.clone().or_else(|| {
        (args.bootstrap_token_file.is_none() && mounted.exists()).then(|| mounted.to_path_buf())
    });
    let first = match (
        token_file,
        &args.bootstrap_token_file,
        std::env::var("TRELLIS_BOOTSTRAP_TOKEN"),
    ) {
        (Some(file), _, _) => FirstCredential::TokenFile(file),
        (None, Some(file), _) => match std::fs::read_to_string(file) {
            Ok(t) => FirstCredential::Bootstrap(t.trim().to_string()),
            Err(e) => return fail(format!("{}: {e}", file.display())),
        },
        (None, None, Ok(t)) if !t.is_empty() => FirstCredential::Bootstrap(t),
        _ => {
            return fail(
                "a proxy needs a credential for its first certificate: --bootstrap-token-file or TRELLIS_BOOTSTRAP_TOKEN (local mode), --token-file (cluster mode)".into(),
            );
        }
    };
    let id = match trellis_identity::SpiffeId::with_trust_domain(
        trust.trust_domain(),
        &spec.identity.namespace,
        &spec.identity.service_account,
    ) {
        Ok(id) => id,
        Err(e) => return fail(format!("--namespace/--service-account: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let identity = runtime.block_on(async {
        ClientIdentity::start(
            address,
            trust,
            id,
            first,
            trellis_identity::RenewalPolicy::default(),
        )
    });
    let mut follower = Follower {
        name: spec.id.clone(),
        options: Options {
            workers: args.workers,
            admin: Some(args.admin),
            stats: Some(args.stats),
            access_log: args.access_log().0,
            access_log_json: args.access_log().1,
            mesh_identity: Some(identity.manager.credentials()),
            health: Some(health.clone()),
            app_probes: app_probes(),
            ..Options::default()
        },
        proxy: None,
        started: Default::default(),
        failed: Default::default(),
    };
    let _ = writeln!(
        anstream::stdout(),
        "{s}trellis proxy{s:#} {} following the control plane at {address}; admin http://{}/",
        spec.id,
        args.admin,
        s = output::OK
    );
    match start_status(args, &health) {
        Ok(status) => print_status(status),
        Err(e) => return fail(e),
    }
    let signal = runtime.block_on(async {
        let signal = tokio::task::spawn_blocking(move || signals.recv());
        tokio::select! {
            () = trellis_control::client::follow(address, spec, &identity, &mut follower) => None,
            signal = signal => signal.ok().and_then(Result::ok),
        }
    });
    match (signal, &follower.proxy) {
        (Some(signal), Some(proxy)) => drain(proxy, signal, drain_duration),
        // Stopped before the first config: nothing to drain.
        _ => 0,
    }
}

/// The mesh identity `--identity-cert/-key/-roots` give, checked (the key matches
/// the certificate, which names one SPIFFE id and chains to the roots).
fn identity_from_files(
    args: &Args,
) -> Result<Option<trellis_identity::CurrentCredentials>, String> {
    let (Some(cert), Some(key), Some(roots)) = (
        &args.identity_cert,
        &args.identity_key,
        &args.identity_roots,
    ) else {
        return Ok(None);
    };
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (chain, key_pem, roots) = (read(cert)?, read(key)?, read(roots)?);
    let key = rcgen::KeyPair::from_pem(&key_pem)
        .map_err(|e| format!("{}: not a private key: {e}", key.display()))?;
    let leaf = trellis_identity::cert::certs_from_pem(&chain)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let id = leaf
        .first()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))
        .and_then(|c| {
            trellis_identity::cert::spiffe_id_of(c).map_err(|e| format!("{}: {e}", cert.display()))
        })?;
    let credentials = trellis_identity::Credentials::new(&key, &chain, &roots, &id, None)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Some(trellis_identity::CurrentCredentials::with(
        credentials,
    )))
}

/// Who this proxy is, from its flags (a gateway's labels default to
/// `istio=ingressgateway`); listeners bind to the pod IP when given, else `--bind`.
pub(super) fn identity(args: &Args) -> Result<ProxyIdentity, String> {
    let mut labels = parse_pairs(args.labels.as_deref().unwrap_or(""), ',')?;
    if args.role == Role::Gateway && labels.is_empty() {
        labels.insert("istio".into(), "ingressgateway".into());
    }
    Ok(ProxyIdentity {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        labels,
        service_account: args.service_account.clone(),
        bind_ip: Some(args.pod_ip.unwrap_or(args.bind)),
    })
}

/// Whether this network namespace has IPv6 (an interface with an IPv6 address), so
/// capture mode takes it too.
pub fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| !t.trim().is_empty())
}

pub(super) fn parse_port_map(pairs: &[String]) -> Result<BTreeMap<u16, u16>, String> {
    let mut ports = BTreeMap::new();
    for m in pairs {
        let (from, to) = m
            .split_once('=')
            .ok_or_else(|| format!("--port-map {m}: expected FROM=TO"))?;
        let parse = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("--port-map {m}: `{p}` is not a port"))
        };
        ports.insert(parse(from)?, parse(to)?);
    }
    Ok(ports)
}

pub(super) fn parse_inbound(pairs: &[String]) -> Result<Vec<Inbound>, String> {
    let mut inbound = Vec::new();
    for i in pairs {
        let (listen, app) = i
            .split_once('=')
            .ok_or_else(|| format!("--inbound {i}: expected LISTEN=APP"))?;
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| format!("--inbound {i}: `{listen}` is not an address"))?;
        let app: SocketAddr = app
            .parse()
            .map_err(|_| format!("--inbound {i}: `{app}` is not an address"))?;
        inbound.push(Inbound {
            listen,
            app,
            port: app.port(),
        });
    }
    Ok(inbound)
}

pub fn init_logging() {
    init_logging_or("warn");
}

/// Logs to stderr what `TRELLIS_LOG` selects, else what `default` does.
pub fn init_logging_or(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal, and never under NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
