//! Running a control plane: the `trellis.mesh.v1` gRPC service (one stream per proxy:
//! Hello, then pushes answered by ACK/NACK), the HTTP API, the push loop and the
//! directory watcher, on one runtime thread of their own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trellis_api::Diagnostic;

use std::sync::Arc;

use trellis_identity::Credential;

use crate::node::ProxySpec;
use crate::plane::ControlPlane;
use crate::proto::mesh_config_server::{MeshConfig, MeshConfigServer};
use crate::proto::{self, proxy_message::Message};
use crate::security::{Security, SecurityOptions};

/// How often the watched directory is checked for edits.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// The gRPC service.
#[derive(Clone)]
struct Service {
    control: ControlPlane,
    security: Arc<Security>,
}

#[tonic::async_trait]
impl MeshConfig for Service {
    type StreamStream = UnboundedReceiverStream<Result<proto::Push, Status>>;

    async fn sign(
        &self,
        request: Request<proto::SignRequest>,
    ) -> Result<Response<proto::SignResponse>, Status> {
        crate::security::sign(&self.security, request).await
    }

    async fn secrets(
        &self,
        request: Request<proto::SecretsRequest>,
    ) -> Result<Response<proto::SecretsResponse>, Status> {
        let who = match crate::security::signing_credential(&request) {
            Some(credential @ Credential::VerifiedPeer(_)) => self
                .security
                .authenticate(&credential)
                .await
                .map_err(|e| Status::unauthenticated(e.to_string()))?,
            _ => {
                return Err(Status::unauthenticated(
                    "keys are only for a workload certificate",
                ));
            }
        };
        let mut secrets = std::collections::HashMap::new();
        for name in request.into_inner().names {
            let allowed = self
                .control
                .sent_reference(&who.namespace, &who.service_account, &name);
            match crate::keys::get(&name).filter(|_| allowed) {
                Some(pem) => {
                    secrets.insert(name, pem);
                }
                None => {
                    return Err(Status::permission_denied(format!(
                        "no config sent to ns/{}/sa/{} names {name}",
                        who.namespace, who.service_account
                    )));
                }
            }
        }
        Ok(Response::new(proto::SecretsResponse { secrets }))
    }

    async fn stream(
        &self,
        request: Request<Streaming<proto::ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        if let Some(reason) = self.control.held() {
            return Err(Status::unavailable(format!(
                "not serving proxies yet: {reason}"
            )));
        }
        // Only a workload certificate opens the config stream; a bootstrap token
        // is for the first CSR alone.
        let who = match crate::security::signing_credential(&request) {
            Some(credential @ Credential::VerifiedPeer(_)) => self
                .security
                .authenticate(&credential)
                .await
                .map_err(|e| Status::unauthenticated(e.to_string()))?,
            _ => {
                return Err(Status::unauthenticated(
                    "the config stream needs a workload certificate (get one from the Certificates service first)",
                ));
            }
        };
        let mut incoming = request.into_inner();
        let hello = match incoming.message().await? {
            Some(proto::ProxyMessage {
                message: Some(Message::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        let spec =
            ProxySpec::from_hello(&hello).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A proxy speaks for its own workload only: its namespace and service account
        // are the certificate's.
        if spec.identity.namespace != who.namespace
            || spec.identity.service_account != who.service_account
        {
            return Err(Status::permission_denied(format!(
                "the certificate is for ns/{}/sa/{}; proxy {} says it is ns/{}/sa/{}",
                who.namespace,
                who.service_account,
                spec.id,
                spec.identity.namespace,
                spec.identity.service_account
            )));
        }
        let id = spec.id.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connection = self.control.connect(spec, hello.version, tx);
        let control = self.control.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                match m.message {
                    Some(Message::Ack(a)) => control.ack(&id, connection, a.version),
                    Some(Message::Nack(n)) => {
                        let mismatch = n.reason() == proto::NackReason::BaseMismatch;
                        control.nack(&id, connection, n.version, n.error, mismatch)
                    }
                    Some(Message::Hello(_)) | None => {}
                }
            }
            control.disconnect(&id, connection);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// Where a control plane listens and what it watches.
#[derive(Debug, Clone)]
pub struct Options {
    /// A directory (or file) of resources, watched for edits.
    pub config_dir: Option<PathBuf>,
    /// The proxies' gRPC port (Istio's 15012).
    pub grpc: SocketAddr,
    /// The HTTP API and `/metrics` (Istio's 15014).
    pub http: SocketAddr,
    /// A file where resources added with `trellis apply` are kept across restarts.
    pub state_file: Option<PathBuf>,
    /// The CA, bootstrap tokens and the API token.
    pub security: SecurityOptions,
}

/// A control plane running on its own thread; dropping it stops it.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub control: ControlPlane,
    pub security: Arc<Security>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Blocks until the control plane stops (normally never).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The watched directory is invalid and no last good copy of it is kept.
    #[error("{}", crate::source::invalid_message(.problems))]
    InvalidDirectory { problems: Vec<Diagnostic> },
    /// The watched directory is invalid and its last good copy cannot be read.
    #[error("{}\n{}: {source}", crate::source::invalid_message(.problems), .file.display())]
    LastGoodUnreadable {
        problems: Vec<Diagnostic>,
        file: PathBuf,
        source: std::io::Error,
    },
    /// The watched directory is invalid and so is its last good copy.
    #[error("{}", crate::source::invalid_message(.problems))]
    LastGoodInvalid {
        problems: Vec<Diagnostic>,
        file: PathBuf,
    },
    #[error(transparent)]
    StateFile(#[from] crate::plane::StateFileError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// A socket or the control plane's thread could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Loads the directory (refusing an invalid one), binds both ports and starts serving.
pub fn spawn(options: Options) -> Result<Running, StartError> {
    spawn_with(ControlPlane::new(), options)
}

/// [`spawn`] for a control plane the caller has already filled (the local runner).
pub fn spawn_with(control: ControlPlane, options: Options) -> Result<Running, StartError> {
    control.set_trust_domain(&options.security.trust_domain);
    if let Some(dir) = &options.config_dir {
        match crate::source::load_validated(dir) {
            Ok(resources) => {
                if let Some(file) = &options.state_file {
                    save_directory(&last_good(file), &resources);
                }
                for warning in crate::source::security_warnings(&resources) {
                    tracing::warn!(target: crate::CONFIG_LOG, "{warning}");
                }
                control.set_directory(resources);
            }
            Err(problems) => {
                // Restarted with a directory edited badly meanwhile: serve the last
                // good one (never an empty mesh), and say so.
                let Some(fallback) = options
                    .state_file
                    .as_ref()
                    .map(|f| last_good(f))
                    .filter(|f| f.exists())
                else {
                    return Err(StartError::InvalidDirectory { problems });
                };
                let text = match std::fs::read_to_string(&fallback) {
                    Ok(text) => text,
                    Err(source) => {
                        return Err(StartError::LastGoodUnreadable {
                            problems,
                            file: fallback,
                            source,
                        });
                    }
                };
                let Ok(resources) = crate::source::validated(trellis_api::load_str(
                    &fallback.display().to_string(),
                    &text,
                )) else {
                    return Err(StartError::LastGoodInvalid {
                        problems,
                        file: fallback,
                    });
                };
                tracing::warn!(
                    target: crate::CONFIG_LOG,
                    "{}\nserving the last good configuration ({} resources) until the directory is fixed",
                    crate::source::invalid_message(&problems),
                    resources.len()
                );
                control.set_directory(resources);
            }
        }
    }
    if let Some(file) = &options.state_file {
        control.persist_to(file.clone())?;
    }
    // Loading parsed every file; give back what that left free.
    crate::trim::release_free_memory();
    let bind = |addr: SocketAddr, what: &'static str| {
        let l = std::net::TcpListener::bind(addr).map_err(|source| StartError::Listen {
            addr,
            what,
            source,
        })?;
        l.set_nonblocking(true)?;
        Ok::<_, StartError>(l)
    };
    let grpc_socket = bind(options.grpc, "gRPC")?;
    let http_socket = bind(options.http, "HTTP")?;
    let grpc = grpc_socket.local_addr()?;
    let http = http_socket.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (opened, security) = std::sync::mpsc::channel();
    let thread = {
        let control = control.clone();
        let dir = options.config_dir.clone();
        let state_file = options.state_file.clone();
        let security_options = options.security.clone();
        let ips = vec![grpc.ip()];
        std::thread::Builder::new()
            .name("trellis-control".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("trellis-control")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the control plane's runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let security = match Security::open(&security_options, ips).await {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            let _ = opened.send(Err(e));
                            return;
                        }
                    };
                    let _ = opened.send(Ok(security.clone()));
                    run(
                        control,
                        security,
                        grpc_socket,
                        http_socket,
                        dir,
                        state_file,
                        stopped,
                    )
                    .await
                });
            })?
    };
    let security = match security.recv() {
        Ok(Ok(security)) => security,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e.into());
        }
        Err(_) => {
            let _ = thread.join();
            return Err(std::io::Error::other("the control plane's thread stopped").into());
        }
    };
    Ok(Running {
        grpc,
        http,
        control,
        security,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn run(
    control: ControlPlane,
    security: Arc<Security>,
    grpc_socket: std::net::TcpListener,
    http_socket: std::net::TcpListener,
    dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let grpc_socket = match tokio::net::TcpListener::from_std(grpc_socket) {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "gRPC socket"),
    };
    let http_socket = match tokio::net::TcpListener::from_std(http_socket) {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "HTTP socket"),
    };
    let service = MeshConfigServer::new(Service {
        control: control.clone(),
        security: security.clone(),
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(256 << 20);
    let tls = match security.grpc_server_config() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "gRPC TLS"),
    };
    let incoming = crate::security::tls::incoming(grpc_socket, tls);
    let mut shutdown = stopped.clone();
    let grpc = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .serve_with_incoming_shutdown(service, incoming, async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server");
        }
    });
    let tasks = [
        tokio::spawn(crate::api::serve(
            control.clone(),
            http_socket,
            security.clone(),
        )),
        tokio::spawn(control.clone().push_loop()),
        tokio::spawn(watch(control.clone(), dir, state_file)),
    ];
    let _ = stopped.wait_for(|s| *s).await;
    for t in tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), grpc).await;
}

/// Follows edits to the watched directory; an invalid edit is refused whole.
async fn watch(control: ControlPlane, dir: Option<PathBuf>, state_file: Option<PathBuf>) {
    let Some(dir) = dir else { return };
    let mut seen = crate::source::fingerprint(&dir);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let dir2 = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || crate::source::fingerprint(&dir2)).await
        else {
            continue;
        };
        if now == seen {
            continue;
        }
        seen = now;
        let dir2 = dir.clone();
        let Ok(result) =
            tokio::task::spawn_blocking(move || crate::source::load_validated(&dir2)).await
        else {
            continue;
        };
        match result {
            Ok(resources) => {
                if let Some(file) = &state_file {
                    save_directory(&last_good(file), &resources);
                }
                // `trellis up` shows this on its terminal (see CONFIG_LOG).
                tracing::info!(
                    target: crate::CONFIG_LOG,
                    "applied the edited configuration in {} ({} resources)",
                    dir.display(),
                    resources.len()
                );
                control.set_directory(resources);
            }
            Err(problems) => control.directory_refused(&problems),
        }
    }
}

/// Where the last valid directory is kept beside the state file.
fn last_good(state_file: &std::path::Path) -> PathBuf {
    state_file.with_extension("last-good.yaml")
}

/// Saves a valid directory's resources (JSON documents in one YAML stream).
fn save_directory(file: &std::path::Path, resources: &[trellis_api::Resource]) {
    let docs: Vec<String> = resources.iter().map(|r| r.raw.to_string()).collect();
    let tmp = file.with_extension("tmp");
    let result =
        std::fs::write(&tmp, docs.join("\n---\n")).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), error = %e, "cannot save the last good configuration");
    }
}
