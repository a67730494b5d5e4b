//! The data plane: a proxy that carries out a compiled [`ProxyConfig`] for HTTP/1.1,
//! HTTP/2, gRPC and TCP traffic, as a sidecar or a gateway.
//!
//! The live config sits behind one atomic pointer; a request loads it once, and a
//! swap never blocks or drops a request. Health state lives outside the config and
//! survives swaps. Modules are named for the steps traffic takes:
//! listener → http (route, fault, retry) → balance → upstream.

mod access_log;
mod admin;
mod balance;
mod body;
mod cors;
mod flags;
mod framing;
mod http;
mod listener;
mod matcher;
mod metrics;
mod origin;
mod peer;
mod rand;
mod snapshot;
mod sni;
mod state;
mod tcp;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use trellis_model::ProxyConfig;

pub use flags::Flags;
pub use listener::looks_like_http;

use crate::snapshot::Snapshot;

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
    ready: AtomicBool,
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
        }
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Compiles `config` and starts the workers and the admin thread.
    pub fn start(config: ProxyConfig, options: Options) -> Result<Proxy, String> {
        let registry = state::Registry::default();
        // Fail now, with the address, rather than in a worker thread later.
        for l in &config.listeners {
            if let Some(addr) = l.bind {
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on {addr} ({}): {e}", l.name))?;
            }
        }
        let snapshot = Snapshot::compile(config, &registry)?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            metrics: metrics::Metrics::default(),
            changes,
            access_log: options.access_log,
            access_log_json: options.access_log_json,
            header_read_timeout: options.header_read_timeout,
            ready: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let mut bound = Vec::new();
        for (addr, surface) in [
            (options.admin, admin::Surface::Admin),
            (options.stats, admin::Surface::Stats),
        ] {
            if let Some(addr) = addr {
                let socket = std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot bind {addr}: {e}"))?;
                socket.set_nonblocking(true).map_err(|e| e.to_string())?;
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
        shared.ready.store(true, Ordering::Release);
        Ok(Proxy { shared, threads })
    }

    /// Swaps in a new config. On error the running config stays in force (a NACK).
    pub fn update(&self, config: ProxyConfig) -> Result<(), String> {
        // A listener on a new address must be able to bind there, or the whole config
        // is refused (the running one stays), rather than failing later in a worker.
        let running = self.shared.snapshot.load();
        for l in &config.listeners {
            if let Some(addr) = l.bind
                && !running
                    .config
                    .listeners
                    .iter()
                    .any(|r| r.bind == Some(addr))
            {
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on {addr} ({}): {e}", l.name))?;
            }
        }
        drop(running);
        let snapshot = Snapshot::compile(config, &self.shared.registry)?;
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The version of the config in force.
    pub fn version(&self) -> u64 {
        self.shared.snapshot.load().config.version
    }

    /// Blocks until every thread ends (normally never).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn spawn_thread<F, Fut>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>, String>
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
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}
