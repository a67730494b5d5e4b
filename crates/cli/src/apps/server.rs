//! The server loop every sample app shares: bind, announce the address on stdout,
//! accept HTTP/1.1 and h2c (prior knowledge) on the same port, and on Ctrl-C or
//! SIGTERM stop accepting, let open connections finish briefly, then exit 0.
//!
//! The announcement line (`NAME listening on http://ADDR`) carries the address
//! actually bound, so `--listen 127.0.0.1:0` works: read the port from it.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::body::Body;

/// How long open connections may run on after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

/// Where to listen: `--listen`, else `LISTEN`, else `PORT` (all interfaces), else a default.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    /// Without it, `PORT=N` means 0.0.0.0:N, the container convention.
    #[arg(long, value_name = "ADDR", env = "LISTEN")]
    pub listen: Option<SocketAddr>,
}

impl ListenArgs {
    /// The address to bind, given the app's default.
    pub fn resolve(&self, default: SocketAddr) -> anyhow::Result<SocketAddr> {
        if let Some(addr) = self.listen {
            return Ok(addr);
        }
        match std::env::var("PORT") {
            Ok(port) if !port.is_empty() => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| anyhow::anyhow!("PORT={port:?} is not a port number"))?;
                Ok(SocketAddr::from(([0, 0, 0, 0], port)))
            }
            _ => Ok(default),
        }
    }
}

/// Runs `app` on a small multi-thread runtime (two workers: the apps are light and
/// share the machine with the mesh) and turns its result into an exit code.
pub fn run(app: impl Future<Output = anyhow::Result<()>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(app) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

/// The connection's remote address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Binds `addr`, prints `NAME listening on http://ADDR`, and serves `handler` until a
/// shutdown signal.
pub async fn serve<H, F>(name: &str, addr: SocketAddr, handler: H) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {addr}: {error}"))?;
    let bound = listener.local_addr()?;
    let shutdown = Shutdown::install()?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{name} listening on http://{bound}");
        let _ = out.flush();
    }

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown.requested());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: back off rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let builder = builder.clone();
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let service = service_fn(move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(Peer(peer));
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stopped.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Ctrl-C or SIGTERM, listened for from creation: the handlers are installed before
/// the app announces itself, so a signal sent right after the announcement is caught.
struct Shutdown {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl Shutdown {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Shutdown {
                signals: [
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Resolves when a shutdown signal arrives.
    async fn requested(mut self) {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
