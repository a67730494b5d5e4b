//! Running a planned local mesh: the control plane (a child process, see `control`),
//! one in-process sidecar per pod and an ingress gateway (each a `trellis_proxy::Proxy`
//! following the control plane over gRPC, keeping its last good config when it is
//! away), and each pod's app as a child process. Every child is restarted, with
//! back-off, when it exits. Gateway port 0: ports the OS picks, held while the mesh runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_api::Resource;
use trellis_compile::{Inbound, Mesh, ProxyIdentity};
use trellis_control::ProxySpec;
use trellis_proxy::{Options as ProxyOptions, ReservedPort};

use crate::cmd::proxy::Follower;

use super::plan::{Plan, Pod, gateway_ip, plan};

/// How a local mesh runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host port for the gateway's port 80 (443 goes to this + 363, e.g. 8443); 0: two
    /// ports the OS picks.
    pub gateway_port: u16,
    /// Where each app's output goes (`POD.log`).
    pub log_dir: PathBuf,
    /// The manifests the control plane serves and watches.
    pub config_dir: PathBuf,
    /// The control plane's HTTP API port on 127.0.0.1 (its gRPC port is this − 2,
    /// like Istio's 15014 and 15012); 0: the control plane lets the OS pick both.
    pub control_plane_port: u16,
    /// The loopback block B of the pods and the gateway (127.B.0.0/16).
    pub block: u8,
    /// Lifetime of the workload certificates (Go duration, e.g. `24h`).
    pub cert_lifetime: String,
}

/// A running local mesh; dropping it stops everything.
pub struct LocalMesh {
    pub plan: Plan,
    /// Where the gateway serves its port 80.
    pub gateway: SocketAddr,
    /// Where it serves its port 443, when a Gateway server has that port.
    pub gateway_tls: Option<SocketAddr>,
    /// False when no Gateway resource selects the ingress gateway (nothing listens).
    pub gateway_serves: bool,
    /// The gateway's own address (admin on :15000, metrics on :15020).
    pub gateway_ip: IpAddr,
    pub log_dir: PathBuf,
    /// The control plane's HTTP API (for `trellis apply`, `proxy-status`).
    pub control_api: SocketAddr,
    control_plane: Supervised,
    /// The runtime where every proxy follows the control plane; dropping it stops them.
    followers: Option<tokio::runtime::Runtime>,
    apps: Vec<Supervised>,
    stop: Arc<AtomicBool>,
    /// The gateway's ports the OS picked, held while the mesh runs.
    _reserved: Vec<ReservedPort>,
}

/// One process under supervision.
pub(super) struct Supervised {
    pub(super) child: Arc<Mutex<Option<Child>>>,
    pub(super) restarts: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalMesh {
    /// Plans, then starts the control plane, every proxy (each following the control
    /// plane) and every app.
    pub fn start(resources: &[Resource], options: Options) -> Result<LocalMesh, String> {
        let plan = plan(resources, options.block)?;
        std::fs::create_dir_all(&options.log_dir)
            .map_err(|e| format!("{}: {e}", options.log_dir.display()))?;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (reserved, http_port, https_port) = gateway_ports(options.gateway_port)?;
        let port_map = gateway_port_map(resources, http_port, https_port);
        // Whether the gateway will serve port 80 at all, for the summary and readiness.
        let mesh = Mesh::new(resources, plan.workloads());
        let (gw_config, _) = trellis_compile::gateway(&mesh, &gateway_identity(), &port_map, 1);
        let served = |port: u16| {
            gw_config
                .listeners
                .iter()
                .find_map(|l| l.bind.filter(|b| b.port() == port))
        };
        let (gateway_serves, gateway_tls) = (served(http_port).is_some(), served(https_port));
        let stop = Arc::new(AtomicBool::new(false));

        // Pods without a sidecar are endpoints no proxy announces: the control plane
        // reads them from a file.
        let listed: Vec<trellis_control::workloads::ListedWorkload> = plan
            .without_sidecars()
            .map(|p| trellis_control::workloads::ListedWorkload {
                name: p.deployment.clone(),
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                address: p.address(),
                ports: p.named_ports.clone(),
                service_account: p.service_account.clone(),
            })
            .collect();
        let workloads_file = options.log_dir.join("workloads.json");
        trellis_control::workloads::write(&workloads_file, &listed)
            .map_err(|e| format!("{}: {e}", workloads_file.display()))?;
        let direct = direct_addresses(resources, &plan);

        let (control_plane, control_grpc, control_api) =
            super::control::start(&options, stop.clone())?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trellis-follow")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the proxies' runtime: {e}"))?;
        let started = Arc::new(AtomicUsize::new(0));
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let grpc = control_grpc.to_string();
        let gateway_ip = gateway_ip(options.block);
        let mut specs = vec![(
            ProxySpec {
                id: "istio-ingressgateway".into(),
                role: trellis_model::Role::Gateway,
                identity: gateway_identity(),
                pod_ip: None,
                outbound: SocketAddr::new(gateway_ip, 15001),
                inbound: Vec::new(),
                port_map,
                named_ports: BTreeMap::new(),
                admin: Some(SocketAddr::new(gateway_ip, 15000)),
                capture: false,
                capture_ipv6: false,
            },
            gateway_ip,
        )];
        for pod in plan.pods.iter().filter(|p| p.injection.sidecar) {
            specs.push((sidecar_spec(pod), pod.pod_ip));
        }
        let proxies = specs.len();
        let identities = Identities::open(&options.log_dir)?;
        for (spec, admin_ip) in specs {
            let identity = {
                let _entered = runtime.enter();
                identities.bootstrap(&grpc, &spec)?
            };
            let mut follower = Follower {
                name: spec.id.clone(),
                options: ProxyOptions {
                    admin: Some(SocketAddr::new(admin_ip, 15000)),
                    stats: Some(SocketAddr::new(admin_ip, 15020)),
                    mesh_identity: Some(identity.manager.credentials()),
                    ..ProxyOptions::default()
                },
                proxy: None,
                started: started.clone(),
                failed: failed.clone(),
            };
            let grpc = grpc.clone();
            runtime.spawn(async move {
                trellis_control::client::follow(&grpc, spec, &identity, &mut follower).await;
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while started.load(Ordering::Acquire) < proxies {
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).first() {
                return Err(format!("a proxy cannot start: {e}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {proxies} proxies received a configuration from the control plane within 20s; see {}",
                    started.load(Ordering::Acquire),
                    options.log_dir.join("control-plane.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        let apps = plan
            .pods
            .iter()
            .map(|pod| supervise(pod, &direct, &options.log_dir, stop.clone()))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LocalMesh {
            gateway: SocketAddr::new(localhost, http_port),
            gateway_tls,
            gateway_serves,
            gateway_ip,
            log_dir: options.log_dir,
            control_api,
            plan,
            control_plane,
            followers: Some(runtime),
            apps,
            stop,
            _reserved: reserved,
        })
    }

    /// Waits until every app accepts connections and the gateway listens.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut waiting: Vec<(String, SocketAddr)> = self
            .plan
            .pods
            .iter()
            .flat_map(|p| {
                p.ports
                    .iter()
                    .map(move |port| (p.name.clone(), SocketAddr::new(p.app_ip, *port)))
            })
            .collect();
        if self.gateway_serves {
            waiting.push(("ingress gateway".into(), self.gateway));
        }
        while !waiting.is_empty() {
            waiting.retain(|(_, addr)| {
                TcpStream::connect_timeout(addr, Duration::from_millis(100)).is_err()
            });
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<String> =
                    waiting.iter().map(|(n, a)| format!("{n} ({a})")).collect();
                return Err(format!(
                    "not ready after {limit:?}: {}; see the logs in {}",
                    names.join(", "),
                    self.log_dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// How often each pod's app has been restarted.
    pub fn restarts(&self) -> Vec<u32> {
        self.apps
            .iter()
            .map(|a| a.restarts.load(Ordering::Relaxed))
            .collect()
    }

    /// The control plane's process id (it is restarted, with a new one, if it dies).
    pub fn control_plane_pid(&self) -> Option<u32> {
        self.control_plane
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// Stops every app and the control plane; the proxies stop with the process.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for app in self
            .apps
            .iter_mut()
            .chain(std::iter::once(&mut self.control_plane))
        {
            if let Some(mut child) = app.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(t) = app.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(rt) = self.followers.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the runner gives each proxy to prove who it is: the mesh root to pin (made by
/// the control plane on its first start) and a one-time bootstrap token minted for
/// the pod's namespace and service account, handed over in memory.
struct Identities {
    trust: Arc<trellis_identity::Trust>,
    tokens: trellis_identity::BootstrapTokens,
}

/// How long a bootstrap token may wait to be used.
const TOKEN_TTL: Duration = Duration::from_secs(600);

impl Identities {
    fn open(log_dir: &std::path::Path) -> Result<Identities, String> {
        let state = super::control::state_dir(log_dir);
        let root = state.join("ca").join(trellis_identity::ca::CA_CERT);
        let pem = std::fs::read_to_string(&root)
            .map_err(|e| format!("the mesh root {}: {e}", root.display()))?;
        let trust = trellis_identity::Trust::from_pem(trellis_identity::DEFAULT_TRUST_DOMAIN, &pem)
            .map_err(|e| format!("the mesh root {}: {e}", root.display()))?;
        let tokens = trellis_identity::BootstrapTokens::open(&state.join("tokens"))
            .map_err(|e| e.to_string())?;
        Ok(Identities { trust, tokens })
    }

    /// Starts `spec`'s certificate manager with a fresh token (needs a runtime).
    fn bootstrap(
        &self,
        grpc: &str,
        spec: &ProxySpec,
    ) -> Result<trellis_control::security::client::ClientIdentity, String> {
        let (ns, sa) = (&spec.identity.namespace, &spec.identity.service_account);
        let who = trellis_identity::WorkloadIdentity::new(ns, sa)
            .map_err(|e| format!("proxy {}: {e}", spec.id))?;
        let token = self
            .tokens
            .mint(&who, TOKEN_TTL)
            .map_err(|e| format!("proxy {}: {e}", spec.id))?;
        let id = who
            .spiffe_id(self.trust.trust_domain())
            .map_err(|e| format!("proxy {}: {e}", spec.id))?;
        Ok(
            trellis_control::security::client::ClientIdentity::bootstrap(
                grpc,
                self.trust.clone(),
                id,
                token.secret().to_string(),
                trellis_identity::RenewalPolicy::default(),
            ),
        )
    }
}

/// Which Gateway server ports the host ports serve: 80 and 443, or, where no Gateway
/// uses those and one uses 8080 or 8443, those instead. Istio's ingress gateway
/// Service sends its 80 and 443 to the pod's 8080 and 8443, so Istio's current samples
/// (bookinfo-gateway.yaml listens on 8080) write those.
fn gateway_port_map(resources: &[Resource], http: u16, https: u16) -> BTreeMap<u16, u16> {
    let used: std::collections::BTreeSet<u32> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            trellis_api::Spec::Gateway(g) => Some(
                g.servers
                    .iter()
                    .filter_map(|s| Some(s.port.as_ref()?.number)),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    let pick = |standard: u16, container: u16| {
        if !used.contains(&u32::from(standard)) && used.contains(&u32::from(container)) {
            container
        } else {
            standard
        }
    };
    BTreeMap::from([(pick(80, 8080), http), (pick(443, 8443), https)])
}

/// The host ports for the gateway's 80 and 443: `port` and `port` + 363, or for port 0
/// two free ports from the OS, held (with the reservations) while the mesh runs.
fn gateway_ports(port: u16) -> Result<(Vec<ReservedPort>, u16, u16), String> {
    if port != 0 {
        return Ok((Vec::new(), port, port.saturating_add(363)));
    }
    let reserve = || {
        ReservedPort::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .map_err(|e| format!("cannot get a port for the ingress gateway: {e}"))
    };
    let (http, https) = (reserve()?, reserve()?);
    let (http_port, https_port) = (http.addr().port(), https.addr().port());
    Ok((vec![http, https], http_port, https_port))
}

fn gateway_identity() -> ProxyIdentity {
    ProxyIdentity {
        name: "istio-ingressgateway".into(),
        namespace: "istio-system".into(),
        labels: BTreeMap::from([
            ("istio".into(), "ingressgateway".into()),
            ("app".into(), "istio-ingressgateway".into()),
        ]),
        service_account: "istio-ingressgateway-service-account".into(),
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

/// What a pod's sidecar tells the control plane about itself.
fn sidecar_spec(pod: &Pod) -> ProxySpec {
    ProxySpec {
        id: pod.name.clone(),
        role: trellis_model::Role::Sidecar,
        identity: ProxyIdentity {
            name: pod.deployment.clone(),
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            service_account: pod.service_account.clone(),
            bind_ip: Some(pod.pod_ip),
        },
        pod_ip: Some(pod.pod_ip),
        outbound: SocketAddr::new(pod.pod_ip, 15001),
        inbound: pod
            .ports
            .iter()
            .map(|p| Inbound {
                listen: SocketAddr::new(pod.pod_ip, *p),
                app: SocketAddr::new(pod.app_ip, *p),
                port: *p,
            })
            .collect(),
        port_map: BTreeMap::new(),
        named_ports: pod.named_ports.clone(),
        admin: Some(SocketAddr::new(pod.pod_ip, 15000)),
        capture: false,
        capture_ipv6: false,
    }
}

/// For apps without a sidecar, where each Service of a namespace is reached directly,
/// as Kubernetes gives pods `SERVICE_SERVICE_HOST` and `_PORT`: (namespace, variable,
/// value), `SERVICE_ADDR=IP:PORT` (what the sample apps read) and the Kubernetes pair,
/// pointing at the first pod behind the Service (its sidecar, or its app when it has
/// none). No balancing: that is what the sidecar would do.
fn direct_addresses(resources: &[Resource], plan: &Plan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for r in resources {
        let trellis_api::Spec::Service(service) = &r.spec else {
            continue;
        };
        let namespace = r.meta.namespace_or_default();
        let selector = &service.spec.selector;
        let (Some(port), false) = (service.spec.ports.first(), selector.is_empty()) else {
            continue;
        };
        let Some(pod) = plan.pods.iter().find(|p| {
            p.namespace == namespace && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        }) else {
            continue;
        };
        let target = match port.target() {
            trellis_api::values::IntOrString::String(name) => pod.named_ports.get(&name).copied(),
            trellis_api::values::IntOrString::Int(n) if n > 0 => Some(n.clamp(1, 65535) as u16),
            _ => None,
        }
        .unwrap_or(port.port.clamp(1, 65535) as u16);
        let name = r.meta.name.to_uppercase().replace('-', "_");
        let ip = pod.address().to_string();
        for (variable, value) in [
            (format!("{name}_ADDR"), format!("{ip}:{target}")),
            (format!("{name}_SERVICE_HOST"), ip.clone()),
            (format!("{name}_SERVICE_PORT"), target.to_string()),
        ] {
            out.push((namespace.to_string(), variable, value));
        }
    }
    out
}

/// Starts `pod`'s app and restarts it when it exits, until `stop`. An app with a
/// sidecar reaches services through it (`HTTP_PROXY`); one without gets `direct`.
fn supervise(
    pod: &Pod,
    direct: &[(String, String, String)],
    log_dir: &std::path::Path,
    stop: Arc<AtomicBool>,
) -> Result<Supervised, String> {
    let log_path = log_dir.join(format!("{}.log", pod.name));
    let spawn = {
        let pod = pod.clone();
        let direct: Vec<(String, String)> = direct
            .iter()
            .filter(|(ns, _, _)| !pod.injection.sidecar && *ns == pod.namespace)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        move || -> Result<Child, String> {
            let log = File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let mut command = Command::new(&pod.command[0]);
            command
                .args(&pod.command[1..])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err);
            for name in ["HTTP_PROXY", "http_proxy", "LISTEN", "PORT"] {
                command.env_remove(name);
            }
            if pod.injection.sidecar {
                let proxy = format!("http://{}:15001", pod.pod_ip);
                command.env("HTTP_PROXY", &proxy).env("http_proxy", &proxy);
            } else {
                command.envs(direct.iter().map(|(k, v)| (k, v)));
            }
            command
                .env("POD_NAME", &pod.name)
                .env("POD_NAMESPACE", &pod.namespace)
                .env("POD_IP", pod.app_ip.to_string())
                .env(
                    "SERVICE_NAME",
                    pod.labels
                        .get("app")
                        .map_or(pod.deployment.as_str(), String::as_str),
                )
                .env(
                    "SERVICE_VERSION",
                    pod.labels.get("version").map_or("v1", String::as_str),
                );
            if let Some(port) = pod.ports.first() {
                command.env("LISTEN", format!("{}:{port}", pod.app_ip));
            }
            command.envs(pod.env.iter().map(|(k, v)| (k, v)));
            command
                .spawn()
                .map_err(|e| format!("cannot start {} for pod {}: {e}", pod.command[0], pod.name))
        }
    };
    supervise_with(format!("pod {}: app", pod.name), Box::new(spawn), stop)
}

pub(super) type Spawn = Box<dyn Fn() -> Result<Child, String> + Send>;

/// Starts a process and restarts it (with back-off) whenever it exits, until `stop`.
pub(super) fn supervise_with(
    name: String,
    spawn: Spawn,
    stop: Arc<AtomicBool>,
) -> Result<Supervised, String> {
    let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    let restarts = Arc::new(AtomicU32::new(0));
    *child.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawn()?);
    let (slot, count) = (child.clone(), restarts.clone());
    let thread = std::thread::Builder::new()
        .name(format!("supervise-{name}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
            loop {
                std::thread::sleep(Duration::from_millis(100));
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let exited = {
                    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                    match guard.as_mut().map(Child::try_wait) {
                        Some(Ok(Some(status))) => Some(status),
                        _ => None,
                    }
                };
                let Some(status) = exited else { continue };
                // A Ctrl-C reaches the children too; the signal may land here a moment
                // after they died. Stopping is not a crash.
                std::thread::sleep(Duration::from_millis(50));
                if stop.load(Ordering::Acquire) || crate::signals::stopping() {
                    return;
                }
                eprintln!("{name} exited ({status}); restarting in {backoff:?}");
                let wake = Instant::now() + backoff;
                while Instant::now() < wake {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match spawn() {
                    Ok(c) => {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("{name}: {e}"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Supervised {
        child,
        restarts,
        thread: Some(thread),
    })
}
