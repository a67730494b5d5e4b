//! The data plane: a proxy that carries out a compiled [`ProxyConfig`] for HTTP/1.1,
//! HTTP/2, gRPC and TCP traffic, as a sidecar or a gateway.
//!
//! The live config sits behind one atomic pointer; a request loads it once, and a
//! swap never blocks or drops a request. Health state lives outside the config and
//! survives swaps. Modules are named for the steps traffic takes:
//! listener → (tls) → downstream → http stages (route, authz, fault, retry) or tcp →
//! balance → upstream (connect, pool).

mod access_log;
mod admin;
pub mod app_probes;
mod balance;
mod body;
mod capture;
mod dns;
mod downstream;
mod error;
mod flags;
mod framing;
mod http;
mod inbound;
mod lifecycle;
mod listener;
mod matcher;
mod metrics;
mod peer;
pub mod policy;
mod rand;
mod snapshot;
mod sni;
mod state;
mod status;
mod tcp;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use trellis_model::ProxyConfig;

pub use flags::Flags;
pub use lifecycle::{Health, Readiness};
pub use listener::looks_like_http;
pub use status::StatusServer;

use crate::snapshot::Snapshot;

/// Why a proxy could not start, or why a config was refused (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The config itself is wrong (a missing cluster, a bad regex or certificate).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
}

/// What every task of the proxy shares.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    registry: state::Registry,
    metrics: metrics::Metrics,
    /// Bumped on every accepted config, so workers re-read listeners.
    changes: watch::Sender<u64>,
    access_log: bool,
    access_log_json: bool,
    header_read_timeout: std::time::Duration,
    /// Readiness, shared with the status port.
    health: Arc<Health>,
    /// The drain on shutdown: its signal and the connections still open.
    drain: Arc<lifecycle::Drain>,
    /// Listeners asked to bind port 0: the port the OS gave each, held by a bound
    /// (not listening) socket so that it stays this proxy's while the listener lives.
    ports: Mutex<HashMap<(String, SocketAddr), (SocketAddr, socket2::Socket)>>,
    /// The workload certificate, when the proxy has a mesh identity.
    mesh_identity: Option<trellis_identity::CurrentCredentials>,
    /// Terminates the mesh's mutual TLS on inbound listeners (a client certificate of
    /// the mesh required), over the current certificate.
    inbound_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The app's probes, asked on the stats port.
    app_probes: Option<Arc<app_probes::AppProbes>>,
}

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data-plane threads, each with its own event loop and sockets.
    pub workers: usize,
    /// Admin endpoint (config dump, clusters); keep it on localhost.
    pub admin: Option<SocketAddr>,
    /// Prometheus metrics and readiness.
    pub stats: Option<SocketAddr>,
    /// Write an access log line per request to standard output.
    pub access_log: bool,
    /// Lines as JSON objects (Istio's `accessLogEncoding: JSON`) instead of text.
    pub access_log_json: bool,
    /// How long a client may take to send a request head (slow clients are cut off).
    pub header_read_timeout: std::time::Duration,
    /// The workload certificate (kept current by the proxy's certificate manager) for
    /// mesh mutual TLS; none: the proxy has no mesh identity (standalone).
    pub mesh_identity: Option<trellis_identity::CurrentCredentials>,
    /// Readiness, made before the proxy when a status port answers probes before the
    /// first config arrives; none: the proxy keeps its own.
    pub health: Option<Arc<Health>>,
    /// The app's probes, asked on the stats port (Istio's probe rewrite).
    pub app_probes: Option<Arc<app_probes::AppProbes>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            admin: None,
            stats: None,
            access_log: false,
            access_log_json: false,
            header_read_timeout: std::time::Duration::from_secs(30),
            mesh_identity: None,
            health: None,
            app_probes: None,
        }
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    admin: Option<SocketAddr>,
    stats: Option<SocketAddr>,
    workers: usize,
}

impl Proxy {
    /// Compiles `config` and starts the workers and the admin thread. Listeners,
    /// admin and stats addresses with port 0 get a port from the OS (see
    /// [`Proxy::listeners`], [`Proxy::admin_addr`], [`Proxy::stats_addr`]).
    pub fn start(mut config: ProxyConfig, options: Options) -> Result<Proxy, ConfigError> {
        let registry = state::Registry::default();
        let mut ports = HashMap::new();
        resolve_ports(&mut config, &mut ports)?;
        // Fail now, with the address, rather than in a worker thread later.
        for l in &config.listeners {
            if let Some(addr) = l.bind
                && !ports.values().any(|(bound, _)| *bound == addr)
            {
                std::net::TcpListener::bind(addr).map_err(|source| ConfigError::Bind {
                    listener: l.name.clone(),
                    addr,
                    source,
                })?;
            }
        }
        let snapshot = Snapshot::compile(config, &registry, options.mesh_identity.as_ref())
            .map_err(ConfigError::Invalid)?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            metrics: metrics::Metrics::default(),
            changes,
            access_log: options.access_log,
            access_log_json: options.access_log_json,
            header_read_timeout: options.header_read_timeout,
            health: options.health.clone().unwrap_or_default(),
            app_probes: options.app_probes.clone(),
            drain: Arc::default(),
            ports: Mutex::new(ports),
            inbound_tls: match &options.mesh_identity {
                Some(creds) => Some(tokio_rustls::TlsAcceptor::from(
                    trellis_identity::server_config(
                        creds,
                        trellis_identity::ClientAuth::Required,
                        &[b"h2", b"http/1.1"],
                    )
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?,
                )),
                None => None,
            },
            mesh_identity: options.mesh_identity.clone(),
        });
        let mut threads = Vec::new();
        let mut bound = Vec::new();
        let (mut admin_addr, mut stats_addr) = (None, None);
        for (addr, surface) in [
            (options.admin, admin::Surface::Admin),
            (options.stats, admin::Surface::Stats),
        ] {
            if let Some(addr) = addr {
                let admin_error = |source| ConfigError::Admin { addr, source };
                let socket = std::net::TcpListener::bind(addr).map_err(admin_error)?;
                socket.set_nonblocking(true).map_err(admin_error)?;
                let local = socket.local_addr().map_err(admin_error)?;
                match surface {
                    admin::Surface::Admin => admin_addr = Some(local),
                    admin::Surface::Stats => stats_addr = Some(local),
                }
                bound.push((socket, surface));
            }
        }
        if !bound.is_empty() {
            let shared = shared.clone();
            threads.push(spawn_thread("trellis-admin", move || async move {
                let mut tasks = Vec::new();
                for (socket, surface) in bound {
                    match tokio::net::TcpListener::from_std(socket) {
                        Ok(socket) => {
                            tasks.push(tokio::spawn(admin::serve(shared.clone(), socket, surface)))
                        }
                        Err(e) => tracing::error!(error = %e, "admin socket"),
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            })?);
        }
        // Capture mode's DNS server, on a thread of its own (it follows the config).
        if shared.snapshot.load().dns.bind.is_some() {
            let shared = shared.clone();
            threads.push(spawn_thread("trellis-dns", move || dns::run(shared))?);
        }
        let workers = options.workers.max(1);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        for i in 0..workers {
            let shared = shared.clone();
            let bound = bound_tx.clone();
            threads.push(spawn_thread(&format!("trellis-worker-{i}"), move || {
                listener::run_worker(shared, bound)
            })?);
        }
        // Ready means listening: wait (bounded) for every worker's first sockets.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for _ in 0..workers {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if bound_rx.recv_timeout(left).is_err() {
                tracing::warn!("workers slow to bind their listeners");
                break;
            }
        }
        shared.health.set_listening(shared.mesh_identity.as_ref());
        Ok(Proxy {
            shared,
            threads,
            admin: admin_addr,
            stats: stats_addr,
            workers,
        })
    }

    /// Swaps in a new config. On error the running config stays in force (a NACK).
    pub fn update(&self, mut config: ProxyConfig) -> Result<(), ConfigError> {
        let mut ports = self.shared.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = std::mem::take(&mut *ports);
        let resolved = resolve_ports(&mut config, &mut next);
        if let Err(e) = resolved {
            *ports = next;
            return Err(e);
        }
        // A listener on a new address must be able to bind there, or the whole config
        // is refused (the running one stays), rather than failing later in a worker.
        let running = self.shared.snapshot.load();
        for l in &config.listeners {
            if let Some(addr) = l.bind
                && !next.values().any(|(bound, _)| *bound == addr)
                && !running
                    .config
                    .listeners
                    .iter()
                    .any(|r| r.bind == Some(addr))
                && let Err(source) = std::net::TcpListener::bind(addr)
            {
                *ports = next;
                return Err(ConfigError::Bind {
                    listener: l.name.clone(),
                    addr,
                    source,
                });
            }
        }
        drop(running);
        let snapshot = match Snapshot::compile(
            config,
            &self.shared.registry,
            self.shared.mesh_identity.as_ref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                *ports = next;
                return Err(ConfigError::Invalid(e));
            }
        };
        // Ports of listeners the new config no longer has are given back.
        next.retain(|(name, _), (bound, _)| {
            snapshot
                .config
                .listeners
                .iter()
                .any(|l| l.name == *name && l.bind == Some(*bound))
        });
        *ports = next;
        drop(ports);
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The version of the config in force.
    pub fn version(&self) -> u64 {
        self.shared.snapshot.load().config.version
    }

    /// Each listener of the config in force and the address it listens on (port 0
    /// resolved to the port the OS gave).
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .config
            .listeners
            .iter()
            .filter_map(|l| l.bind.map(|b| (l.name.clone(), b)))
            .collect()
    }

    /// The address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find_map(|(n, a)| (n == name).then_some(a))
    }

    /// Where the admin endpoint listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Where metrics and readiness are served.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats
    }

    /// Readiness as the probes see it.
    pub fn health(&self) -> &Arc<Health> {
        &self.shared.health
    }

    /// Drains the proxy for a shutdown: readiness turns 503 for good, every listener
    /// closes (new connections are refused), and open connections are asked to finish
    /// — HTTP/2 ones get GOAWAY, HTTP/1.1 ones close when idle or after the response in
    /// flight (which says `Connection: close`), opaque TCP runs on. Returns once none is
    /// left or `within` has passed, with how many were still open.
    pub fn drain(&self, within: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + within;
        self.shared.health.set_draining();
        self.shared.drain.start();
        let tick = std::time::Duration::from_millis(10);
        // Every worker closes its listeners first: from then on no connection is
        // accepted, and each accepted one is counted.
        while self.shared.drain.workers_closed() < self.workers
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(tick);
        }
        loop {
            let open = self.shared.drain.open();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if open == 0 || left.is_zero() {
                return open;
            }
            std::thread::sleep(tick.min(left));
        }
    }

    /// Blocks until every thread ends (normally never).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A port held for a listener of a config not written yet (the local runner's
/// `--gateway-port 0`): bound as the workers bind (SO_REUSEPORT) but not listening,
/// so no other program can take it while this proxy's workers still can. Put
/// [`ReservedPort::addr`] in the config and keep this alive as long as the listener.
#[derive(Debug)]
pub struct ReservedPort {
    addr: SocketAddr,
    _socket: socket2::Socket,
}

impl ReservedPort {
    /// Holds `addr`; port 0 gets a free port from the OS.
    pub fn new(addr: SocketAddr) -> std::io::Result<ReservedPort> {
        let socket = listener::reserve(addr)?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an IP address"))?;
        Ok(ReservedPort {
            addr,
            _socket: socket,
        })
    }

    /// The address held (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Gives each listener that asks for port 0 a port: the one it already has (same
/// name and requested address), or a new one from the OS, held in `ports`.
fn resolve_ports(
    config: &mut ProxyConfig,
    ports: &mut HashMap<(String, SocketAddr), (SocketAddr, socket2::Socket)>,
) -> Result<(), ConfigError> {
    for l in &mut config.listeners {
        let Some(requested) = l.bind.filter(|a| a.port() == 0) else {
            continue;
        };
        let key = (l.name.clone(), requested);
        if let Some((bound, _)) = ports.get(&key) {
            l.bind = Some(*bound);
            continue;
        }
        let bind_error = |source| ConfigError::Bind {
            listener: l.name.clone(),
            addr: requested,
            source,
        };
        let socket = listener::reserve(requested).map_err(bind_error)?;
        let bound = socket
            .local_addr()
            .map_err(bind_error)?
            .as_socket()
            .ok_or_else(|| bind_error(std::io::Error::other("not an IP address")))?;
        l.bind = Some(bound);
        ports.insert(key, (bound, socket));
    }
    Ok(())
}

fn spawn_thread<F, Fut>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>, ConfigError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(f()),
                Err(e) => tracing::error!(error = %e, "cannot start runtime"),
            }
        })
        .map_err(|source| ConfigError::Thread {
            name: name.to_string(),
            source,
        })
}
