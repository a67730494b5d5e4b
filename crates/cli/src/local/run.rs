//! Running a planned local mesh: one in-process sidecar per pod and an ingress gateway
//! (all `trellis_proxy::Proxy`, compiled from the same manifests), and each pod's app
//! as a child process that is restarted, with back-off, when it exits.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_api::Resource;
use trellis_compile::{Inbound, Mesh, ProxyIdentity};
use trellis_proxy::{Options as ProxyOptions, Proxy};

use super::plan::{Plan, Pod, plan};

/// The gateway's own loopback address (admin on :15000, metrics on :15020).
pub const GATEWAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1));

/// How a local mesh runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host port for the gateway's port 80 (443 goes to this + 363, e.g. 8443).
    pub gateway_port: u16,
    /// Where each app's output goes (`POD.log`).
    pub log_dir: PathBuf,
}

/// A running local mesh; dropping it stops everything.
pub struct LocalMesh {
    pub plan: Plan,
    pub gateway: SocketAddr,
    /// False when no Gateway resource selects the ingress gateway (nothing listens).
    pub gateway_serves: bool,
    pub log_dir: PathBuf,
    sidecars: Vec<Proxy>,
    gateway_proxy: Proxy,
    apps: Vec<Supervised>,
    stop: Arc<AtomicBool>,
    version: AtomicU32,
    port_map: BTreeMap<u16, u16>,
}

/// One app process under supervision.
struct Supervised {
    child: Arc<Mutex<Option<Child>>>,
    pub restarts: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalMesh {
    /// Plans, compiles and starts every proxy and app.
    pub fn start(resources: &[Resource], options: Options) -> Result<LocalMesh, String> {
        let plan = plan(resources)?;
        std::fs::create_dir_all(&options.log_dir)
            .map_err(|e| format!("{}: {e}", options.log_dir.display()))?;
        let mesh = Mesh::new(resources, plan.workloads());
        let port_map = BTreeMap::from([
            (80, options.gateway_port),
            (443, options.gateway_port.saturating_add(363)),
        ]);
        let (gw_config, notes) = trellis_compile::gateway(&mesh, &gateway_identity(), &port_map, 1);
        let gateway_serves = gw_config
            .listeners
            .iter()
            .any(|l| l.bind.is_some_and(|b| b.port() == options.gateway_port));
        for n in notes {
            tracing::warn!(resource = %n.resource, "{}", n.message);
        }
        let gateway_proxy = Proxy::start(
            gw_config,
            ProxyOptions {
                admin: Some(SocketAddr::new(GATEWAY_IP, 15000)),
                stats: Some(SocketAddr::new(GATEWAY_IP, 15020)),
                ..ProxyOptions::default()
            },
        )
        .map_err(|e| format!("ingress gateway: {e}"))?;
        let mut sidecars = Vec::new();
        for pod in &plan.pods {
            let (config, _) = sidecar_config(&mesh, pod, 1);
            let proxy = Proxy::start(
                config,
                ProxyOptions {
                    admin: Some(SocketAddr::new(pod.pod_ip, 15000)),
                    stats: Some(SocketAddr::new(pod.pod_ip, 15020)),
                    ..ProxyOptions::default()
                },
            )
            .map_err(|e| format!("sidecar of {}: {e}", pod.name))?;
            sidecars.push(proxy);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let apps = plan
            .pods
            .iter()
            .map(|pod| supervise(pod, &options.log_dir, stop.clone()))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LocalMesh {
            gateway: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), options.gateway_port),
            gateway_serves,
            log_dir: options.log_dir,
            plan,
            sidecars,
            gateway_proxy,
            apps,
            stop,
            version: AtomicU32::new(1),
            port_map,
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

    /// Recompiles every proxy from `resources`; a proxy that refuses keeps its config.
    pub fn update(&self, resources: &[Resource]) -> Result<u32, String> {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let mesh = Mesh::new(resources, self.plan.workloads());
        let (gw, _) = trellis_compile::gateway(
            &mesh,
            &gateway_identity(),
            &self.port_map,
            u64::from(version),
        );
        self.gateway_proxy
            .update(gw)
            .map_err(|e| format!("ingress gateway refused the configuration: {e}"))?;
        for (pod, proxy) in self.plan.pods.iter().zip(&self.sidecars) {
            let (config, _) = sidecar_config(&mesh, pod, u64::from(version));
            proxy
                .update(config)
                .map_err(|e| format!("sidecar of {} refused the configuration: {e}", pod.name))?;
        }
        Ok(version)
    }

    /// How often each pod's app has been restarted.
    pub fn restarts(&self) -> Vec<u32> {
        self.apps
            .iter()
            .map(|a| a.restarts.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops every app (the proxies stop with the process).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for app in &mut self.apps {
            if let Some(mut child) = app.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(t) = app.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        self.stop();
    }
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

fn sidecar_config(
    mesh: &Mesh,
    pod: &Pod,
    version: u64,
) -> (trellis_model::ProxyConfig, Vec<trellis_compile::Note>) {
    let who = ProxyIdentity {
        name: pod.deployment.clone(),
        namespace: pod.namespace.clone(),
        labels: pod.labels.clone(),
        service_account: pod.service_account.clone(),
        bind_ip: Some(pod.pod_ip),
    };
    let inbound: Vec<Inbound> = pod
        .ports
        .iter()
        .map(|p| Inbound {
            listen: SocketAddr::new(pod.pod_ip, *p),
            app: SocketAddr::new(pod.app_ip, *p),
            port: *p,
        })
        .collect();
    trellis_compile::sidecar(
        mesh,
        &who,
        SocketAddr::new(pod.pod_ip, 15001),
        &inbound,
        version,
    )
}

/// Starts `pod`'s app and restarts it when it exits, until `stop`.
fn supervise(
    pod: &Pod,
    log_dir: &std::path::Path,
    stop: Arc<AtomicBool>,
) -> Result<Supervised, String> {
    let log_path = log_dir.join(format!("{}.log", pod.name));
    let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    let restarts = Arc::new(AtomicU32::new(0));
    let spawn = {
        let pod = pod.clone();
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
            let proxy = format!("http://{}:15001", pod.pod_ip);
            command
                .env("HTTP_PROXY", &proxy)
                .env("http_proxy", &proxy)
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
    *child.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawn()?);
    let (slot, count, name) = (child.clone(), restarts.clone(), pod.name.clone());
    let thread = std::thread::Builder::new()
        .name(format!("supervise-{}", pod.name))
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
                eprintln!("pod {name}: app exited ({status}); restarting in {backoff:?}");
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
                    Err(e) => eprintln!("pod {name}: {e}"),
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
