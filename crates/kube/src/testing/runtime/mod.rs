//! The kubelet's container runtime, played by the test for Pods that need a network
//! of their own (sidecar injection and capture): each Pod gets a network namespace
//! (`network.rs`), its init containers run in order (a native sidecar, one with
//! `restartPolicy: Always`, is started and waited for until its startup or readiness
//! probe passes, then kept running), then its containers; it is reported Ready when
//! their readiness probes pass. A Pod whose containers all exit (a Job's) ends
//! Succeeded or Failed after its sidecars are stopped. Deleting a Pod runs its
//! containers' `preStop` sleep, stops them with SIGTERM, then its sidecars, each
//! within the grace period, as a kubelet does. Services are reached as kube-proxy and cluster DNS would make them
//! (`services.rs`). Images are not pulled: the Trellis image runs the binary under
//! test, and any other container must give its `command`.

mod network;
mod services;
mod spec;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

pub use network::{NAMESPACED_POD_CIDR, PodNetwork};
pub use services::ServiceTable;

/// How long a container may take to pass its startup probe, or an init container to
/// finish.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The longest grace period the test waits, whatever the Pod asks for.
const GRACE_LIMIT: Duration = Duration::from_secs(15);

/// The runtime's settings.
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    /// What `trellis` (and the Trellis image's entrypoint) runs.
    pub trellis: PathBuf,
}

/// A running Pod's processes and network.
pub struct PodProcesses {
    pub network: PodNetwork,
    /// Native sidecars, in start order.
    pub sidecars: Vec<(String, Child)>,
    pub containers: Vec<(String, Child)>,
    grace: Duration,
    /// The longest `preStop` sleep of the containers: waited before their SIGTERM.
    pre_stop: Duration,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn is_native_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The table the node's Services are currently programmed from, shared with every Pod
/// for its `/etc/hosts`.
pub type SharedTable = Arc<Mutex<ServiceTable>>;

/// Pods under the runtime, with their namespace, for their hosts files.
pub type Registry = Arc<Mutex<Vec<(String, std::sync::Weak<Mutex<Option<PodProcesses>>>)>>>;

/// Keeps the node's Service rules and every Pod's hosts file current, until aborted.
pub async fn serve_services(client: kube::Client, table: SharedTable, pods: Registry) {
    if let Err(e) = services::install() {
        tracing::error!(error = %e, "test kube-proxy: cannot install its chain");
        return;
    }
    let mut programmed: Option<ServiceTable> = None;
    loop {
        if let Ok(current) = services::read(&client).await
            && programmed.as_ref() != Some(&current)
        {
            if let Err(e) = services::program(&current) {
                tracing::error!(error = %e, "test kube-proxy");
            }
            *table.lock().unwrap_or_else(|e| e.into_inner()) = current.clone();
            programmed = Some(current);
        }
        let current = table.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let live: Vec<(String, Arc<Mutex<Option<PodProcesses>>>)> = {
            let mut pods = pods.lock().unwrap_or_else(|e| e.into_inner());
            pods.retain(|(_, p)| p.strong_count() > 0);
            pods.iter()
                .filter_map(|(ns, p)| Some((ns.clone(), p.upgrade()?)))
                .collect()
        };
        for (namespace, pod) in live {
            if let Some(p) = pod.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = p.network.write_hosts(&current.hosts_for(&namespace));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl ContainerRuntime {
    /// Starts `pod` in `network`: volumes, init containers and native sidecars in
    /// order, then containers; reports its status as it goes. The processes are in
    /// `slot` as soon as each starts, so a deletion meanwhile stops them.
    pub async fn run(
        &self,
        client: kube::Client,
        pod: Pod,
        dir: PathBuf,
        network: PodNetwork,
        hosts: Vec<(String, String)>,
        slot: Arc<Mutex<Option<PodProcesses>>>,
    ) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let ip = network.ip;
        let _ = network.write_hosts(&hosts);
        let spec = pod.spec.clone().unwrap_or_default();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
                .min(GRACE_LIMIT);
        let netns = network.name.clone();
        let pre_stop = spec
            .containers
            .iter()
            .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref())
            .map(|sleep| Duration::from_secs(sleep.seconds.max(0) as u64))
            .max()
            .unwrap_or_default()
            .min(grace);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(PodProcesses {
            network,
            sidecars: Vec::new(),
            containers: Vec::new(),
            grace,
            pre_stop,
        });
        let run_dir = dir.join("run");
        let _ = std::fs::create_dir_all(&run_dir);
        let _ = std::process::Command::new("chmod")
            .args(["a+rx"])
            .arg(&run_dir)
            .status();
        let volumes = spec::volumes(&client, &pod, &dir).await;
        let status = |phase: &str, init: Vec<Value>, containers: Vec<Value>, ready: bool| {
            let conditions: Vec<Value> = [
                ("PodScheduled", true),
                ("Initialized", !init.is_empty() || spec.init_containers.is_none()),
                ("ContainersReady", ready),
                ("Ready", ready),
            ]
            .iter()
            .map(|(t, ok)| json!({"type": t, "status": if *ok {"True"} else {"False"}, "lastTransitionTime": now()}))
            .collect();
            json!({"status": {
                "phase": phase, "hostIP": "127.0.0.1",
                "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                "startTime": now(), "conditions": conditions,
                "initContainerStatuses": init, "containerStatuses": containers,
            }})
        };
        let report = |body: Value| {
            let api = api.clone();
            let name = name.clone();
            async move {
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                {
                    tracing::debug!(error = %e, pod = %name, "test kubelet status");
                }
            }
        };
        let start = |container: &Container| -> Result<Child, String> {
            let env = spec::env(container, &pod, ip);
            let process = spec::Process {
                argv: spec::expand(spec::argv(container, &self.trellis)?, &env),
                env,
                uid: spec::user(container, &pod).0,
                gid: spec::user(container, &pod).1,
                mounts: spec::mounts(container, &volumes),
            };
            spec::spawn(
                &netns,
                &run_dir,
                &process,
                &dir.join(format!("{}.log", container.name)),
            )
            .map_err(|e| format!("container {}: {e}", container.name))
        };

        let mut init_statuses = Vec::new();
        for container in spec.init_containers.iter().flatten() {
            let child = match start(container) {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(pod = %name, error = %e, "test kubelet");
                    return;
                }
            };
            if is_native_sidecar(container) {
                if let Some(p) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    p.sidecars.push((container.name.clone(), child));
                }
                let probe = container
                    .startup_probe
                    .as_ref()
                    .or(container.readiness_probe.as_ref());
                if let Some(probe) = probe
                    && !wait_probe(probe, container, ip).await
                {
                    tracing::error!(pod = %name, container = %container.name, "test kubelet: the sidecar never became ready");
                    return;
                }
                init_statuses.push(json!({"name": container.name, "image": container.image,
                    "imageID": "", "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now()}}}));
            } else {
                let code = wait_exit(child).await;
                init_statuses.push(json!({"name": container.name, "image": container.image,
                    "imageID": "", "ready": code == Some(0), "restartCount": 0,
                    "state": {"terminated": {"exitCode": code.unwrap_or(-1),
                        "reason": if code == Some(0) {"Completed"} else {"Error"},
                        "finishedAt": now()}}}));
                if code != Some(0) {
                    tracing::error!(pod = %name, container = %container.name, ?code, "test kubelet: init container failed");
                    report(status("Pending", init_statuses, Vec::new(), false)).await;
                    return;
                }
            }
        }
        for container in &spec.containers {
            match start(container) {
                Ok(child) => {
                    if let Some(p) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        p.containers.push((container.name.clone(), child));
                    }
                }
                Err(e) => {
                    tracing::error!(pod = %name, error = %e, "test kubelet");
                    return;
                }
            }
        }
        for container in &spec.containers {
            if let Some(probe) = &container.readiness_probe
                && !wait_probe(probe, container, ip).await
            {
                tracing::error!(pod = %name, container = %container.name, "test kubelet: never ready");
                return;
            }
        }
        let running = |c: &Container| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                "started": true, "restartCount": 0, "state": {"running": {"startedAt": now()}}})
        };
        let containers: Vec<Value> = spec.containers.iter().map(running).collect();
        report(status("Running", init_statuses.clone(), containers, true)).await;

        // A Pod that does not restart its containers (a Job's) ends when they have.
        if spec.restart_policy.as_deref().unwrap_or("Always") == "Always" {
            return;
        }
        let codes = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(p) = guard.as_mut() else { return };
            let codes: Vec<Option<i32>> = p
                .containers
                .iter_mut()
                .map(|(_, c)| c.try_wait().ok().flatten().and_then(|s| s.code()))
                .collect();
            let done = p
                .containers
                .iter_mut()
                .all(|(_, c)| matches!(c.try_wait(), Ok(Some(_))));
            if done {
                stop_all(&mut p.sidecars, p.grace);
                break codes;
            }
        };
        let succeeded = codes.iter().all(|c| *c == Some(0));
        let finished: Vec<Value> = spec
            .containers
            .iter()
            .zip(&codes)
            .map(|(c, code)| json!({"name": c.name, "image": c.image, "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code.unwrap_or(-1),
                    "reason": if *code == Some(0) {"Completed"} else {"Error"}, "finishedAt": now()}}}))
            .collect();
        let init_done: Vec<Value> = init_statuses
            .into_iter()
            .map(|mut s| {
                if s["state"].get("running").is_some() {
                    s["ready"] = json!(false);
                    s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now()}});
                }
                s
            })
            .collect();
        report(status(
            if succeeded { "Succeeded" } else { "Failed" },
            init_done,
            finished,
            false,
        ))
        .await;
    }
}

async fn wait_probe(
    probe: &k8s_openapi::api::core::v1::Probe,
    c: &Container,
    ip: std::net::Ipv4Addr,
) -> bool {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let (probe_c, container) = (probe.clone(), c.clone());
        let ok = tokio::task::spawn_blocking(move || spec::probe(&probe_c, &container, ip))
            .await
            .unwrap_or(false);
        if ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_exit(mut child: Child) -> Option<i32> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM to each (the `ip netns exec` wrapper has exec'd into the program, so the
/// signal reaches it), then SIGKILL to what is left when `grace` is up.
fn stop_all(children: &mut [(String, Child)], grace: Duration) {
    for (_, child) in children.iter_mut() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl PodProcesses {
    /// As a kubelet stops a Pod: the containers' `preStop` sleep (Kubernetes' sleep
    /// action), then SIGTERM to the containers, then to the native sidecars (in reverse
    /// start order), each set within the grace period. Blocking.
    pub fn terminate(mut self) {
        std::thread::sleep(self.pre_stop);
        stop_all(
            &mut self.containers,
            self.grace.saturating_sub(self.pre_stop),
        );
        self.sidecars.reverse();
        stop_all(&mut self.sidecars, self.grace);
    }

    /// Kills everything at once (a crash, or the test ending).
    pub fn kill(&mut self) {
        for (_, child) in self.containers.iter_mut().chain(self.sidecars.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PodProcesses {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a Pod's files go.
pub fn pod_dir(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(namespace).join(name)
}
