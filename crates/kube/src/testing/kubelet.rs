//! The kubelet's part, played by the test: a Node object, every unscheduled Pod bound
//! to it, each given a pod IP in 10.244.0.0/16 (inside the test's network namespace,
//! see `netns.rs`), its processes started by the
//! test's [`PodRunner`], and its status reported Running and Ready, so Deployments
//! become available and EndpointSlices list the address. A Pod being deleted has its
//! processes stopped and is removed, as a kubelet confirms a deletion.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use super::Cluster;
use super::runtime::{ContainerRuntime, PodNetwork, PodProcesses, SharedTable};

/// A Pod's processes under the container runtime, filled in as they start.
type Slot = Arc<Mutex<Option<PodProcesses>>>;
use super::runtime::Registry;

/// The node every test pod runs on.
pub const NODE: &str = "trellis-test-node";

/// What a runner is told about the Pod it starts.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Pod,
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub service_account: String,
    /// The Pod's service-account token for audience `istio-ca`, bound to the Pod, in
    /// a file (as the kubelet projects it to `/var/run/secrets/tokens/istio-token`).
    pub istio_token: PathBuf,
    /// A directory of the Pod's own.
    pub dir: PathBuf,
}

/// Starts a Pod's processes; the Pod is reported Ready when the future ends.
pub type PodRunner = Arc<dyn Fn(PodInfo) -> BoxFuture<'static, Vec<Child>> + Send + Sync>;

/// How the kubelet runs Pods.
#[derive(Clone)]
pub enum Runner {
    /// The test starts each Pod's processes itself, on a loopback address of the
    /// node's namespace ([`PodRunner`]).
    Processes(PodRunner),
    /// The Pod spec is run as written, each Pod in a network namespace of its own,
    /// with kube-proxy's and cluster DNS's parts played too (see `runtime/`).
    Containers(ContainerRuntime),
    /// Pods that `in_node` picks by the test's processes in the node's namespace (a
    /// control plane that reaches the API server on the node's loopback), every other
    /// Pod by the container runtime.
    Both {
        runtime: ContainerRuntime,
        processes: PodRunner,
        in_node: Arc<dyn Fn(&Pod) -> bool + Send + Sync>,
    },
}

impl From<PodRunner> for Runner {
    fn from(runner: PodRunner) -> Runner {
        Runner::Processes(runner)
    }
}

impl From<ContainerRuntime> for Runner {
    fn from(runtime: ContainerRuntime) -> Runner {
        Runner::Containers(runtime)
    }
}

/// Each kubelet in this process hands out addresses from one counter.
static NEXT_IP: AtomicU32 = AtomicU32::new(1);

fn next_ip() -> Ipv4Addr {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// Runs until dropped, stopping every process it started.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    services: Option<tokio::task::JoinHandle<()>>,
    running: Arc<Mutex<HashMap<String, RunningPod>>>,
}

struct RunningPod {
    children: Vec<Child>,
    ip: Ipv4Addr,
    /// Under the container runtime: its processes and network.
    processes: Option<Slot>,
}

impl Kubelet {
    /// Registers the node and starts playing its kubelet.
    pub async fn start(cluster: &Cluster, runner: impl Into<Runner>) -> Kubelet {
        let runner = runner.into();
        let client = cluster.client().await;
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))
        .expect("a Node");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating the test node: {e}"),
        }
        let status = serde_json::json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "the test plays the kubelet",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }});
        nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("the test node's status");
        let running: Arc<Mutex<HashMap<String, RunningPod>>> = Arc::default();
        let dir = cluster.dir().join("pods");
        let table = SharedTable::default();
        let registry = Registry::default();
        let services = (!matches!(runner, Runner::Processes(_))).then(|| {
            tokio::spawn(super::runtime::serve_services(
                client.clone(),
                table.clone(),
                registry.clone(),
            ))
        });
        let task = tokio::spawn(run(client, runner, running.clone(), dir, table, registry));
        Kubelet {
            task,
            services,
            running,
        }
    }

    /// The pod IP the kubelet gave `namespace/name`, once it has.
    pub fn ip_of(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(&format!("{namespace}/{name}")).map(|p| p.ip)
    }

    /// The network namespace the container runtime gave `namespace/name`, for
    /// `ip netns exec` (none for Pods run as the test's processes).
    pub fn netns_of(&self, namespace: &str, name: &str) -> Option<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let slot = running
            .get(&format!("{namespace}/{name}"))?
            .processes
            .clone()?;
        let processes = slot.lock().unwrap_or_else(|e| e.into_inner());
        processes.as_ref().map(|p| p.network.name.clone())
    }

    /// Kills a Pod's processes at once (as a crash would), leaving the Pod object.
    pub fn kill(&self, namespace: &str, name: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get_mut(&format!("{namespace}/{name}")) {
            Some(pod) => {
                for child in &mut pod.children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                if let Some(p) = pod
                    .processes
                    .as_ref()
                    .and_then(|slot| slot.lock().ok())
                    .as_mut()
                    .and_then(|guard| guard.as_mut())
                {
                    p.kill();
                }
                true
            }
            None => false,
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(services) = &self.services {
            services.abort();
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut pod) in running.drain() {
            for child in &mut pod.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(slot) = pod.processes {
                // Killed, and the network namespace removed.
                drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn run(
    client: kube::Client,
    runner: Runner,
    running: Arc<Mutex<HashMap<String, RunningPod>>>,
    dir: PathBuf,
    table: SharedTable,
    registry: Registry,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(processes) = stop(&running, &pod) {
                    tokio::task::spawn_blocking(move || processes.terminate());
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "test kubelet watch");
                continue;
            }
        };
        let (Some(name), Some(namespace)) =
            (pod.metadata.name.clone(), pod.metadata.namespace.clone())
        else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            let stopping = stop(&running, &pod);
            tokio::spawn(async move {
                // Containers, then sidecars, each within the grace period.
                if let Some(processes) = stopping {
                    let _ = tokio::task::spawn_blocking(move || processes.terminate()).await;
                }
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            });
            continue;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.node_name.is_none() {
            let binding = Binding {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(NODE.into()),
                    ..Default::default()
                },
            };
            let body = serde_json::to_vec(&binding).expect("a Binding encodes");
            let request = http::Request::post(format!(
                "/api/v1/namespaces/{namespace}/pods/{name}/binding"
            ))
            .header("content-type", "application/json")
            .body(body)
            .expect("a binding request");
            if let Err(e) = client.request::<serde_json::Value>(request).await {
                tracing::debug!(error = %e, pod = %name, "test kubelet bind");
            }
            continue;
        }
        if spec.node_name.as_deref() != Some(NODE) {
            continue;
        }
        let key = format!("{namespace}/{name}");
        if running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            continue;
        }
        let runtime = match &runner {
            Runner::Containers(runtime) => Some(runtime),
            Runner::Both {
                runtime, in_node, ..
            } if !in_node(&pod) => Some(runtime),
            _ => None,
        };
        if let Some(runtime) = runtime {
            let network = match PodNetwork::create() {
                Ok(network) => network,
                Err(e) => panic!("the test kubelet cannot make {key}'s network: {e}"),
            };
            let slot: Slot = Arc::default();
            registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((namespace.clone(), Arc::downgrade(&slot)));
            running.lock().unwrap_or_else(|e| e.into_inner()).insert(
                key.clone(),
                RunningPod {
                    children: Vec::new(),
                    ip: network.ip,
                    processes: Some(slot.clone()),
                },
            );
            let hosts = table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hosts_for(&namespace);
            let (runtime, client, pod_dir) = (
                runtime.clone(),
                client.clone(),
                dir.join(&namespace).join(&name),
            );
            let _ = std::fs::create_dir_all(&pod_dir);
            tokio::spawn(async move {
                runtime
                    .run(client, pod, pod_dir, network, hosts, slot)
                    .await;
            });
            continue;
        }
        let (Runner::Processes(runner)
        | Runner::Both {
            processes: runner, ..
        }) = &runner
        else {
            continue;
        };
        let ip = next_ip();
        running.lock().unwrap_or_else(|e| e.into_inner()).insert(
            key.clone(),
            RunningPod {
                children: Vec::new(),
                ip,
                processes: None,
            },
        );
        let service_account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let pod_dir = dir.join(&namespace).join(&name);
        let _ = std::fs::create_dir_all(&pod_dir);
        let istio_token = pod_dir.join("istio-token");
        if let Some(token) = pod_token(&client, &pod, &service_account, "istio-ca").await {
            let _ = std::fs::write(&istio_token, token);
        }
        let info = PodInfo {
            pod: pod.clone(),
            name: name.clone(),
            namespace: namespace.clone(),
            ip,
            service_account,
            istio_token,
            dir: pod_dir,
        };
        let runner = runner.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let children = runner(info).await;
            if let Some(p) = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
            {
                p.children = children;
            }
            let containers: Vec<serde_json::Value> = spec
                .containers
                .iter()
                .map(|c| {
                    serde_json::json!({"name": c.name, "image": c.image, "imageID": "",
                        "ready": true, "started": true, "restartCount": 0,
                        "state": {"running": {"startedAt": now()}}})
                })
                .collect();
            let conditions: Vec<serde_json::Value> = [
                "PodScheduled",
                "Initialized",
                "ContainersReady",
                "Ready",
            ]
            .iter()
            .map(|t| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now()}))
            .collect();
            let status = serde_json::json!({"status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}],
                "startTime": now(),
                "conditions": conditions,
                "containerStatuses": containers,
            }});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::debug!(error = %e, pod = %name, "test kubelet status");
            }
        });
    }
}

/// Kills a Pod's own processes; under the container runtime, hands back its
/// processes to stop gracefully.
fn stop(running: &Mutex<HashMap<String, RunningPod>>, pod: &Pod) -> Option<PodProcesses> {
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if let Some(mut p) = running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key)
    {
        for child in &mut p.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        return p
            .processes
            .and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
    None
}

/// A token for the Pod's service account with `audience`, bound to the Pod (the
/// TokenRequest API, as the kubelet asks for projected tokens).
pub async fn pod_token(
    client: &kube::Client,
    pod: &Pod,
    service_account: &str,
    audience: &str,
) -> Option<String> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [audience],
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    service_account_token(client, namespace, service_account, request).await
}

/// A token for `namespace/service_account` with `audience`, bound to nothing.
pub async fn token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    audience: &str,
) -> Option<String> {
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 3600},
    });
    service_account_token(client, namespace, service_account, request).await
}

async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    body: serde_json::Value,
) -> Option<String> {
    // The service account may not exist yet (the controller-manager makes `default`).
    for _ in 0..50 {
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).ok()?)
        .ok()?;
        match client.request::<serde_json::Value>(request).await {
            Ok(v) => return v["status"]["token"].as_str().map(str::to_string),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    None
}
