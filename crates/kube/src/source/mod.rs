//! The cluster as a source of the control plane's store: a watch per kind (Istio's
//! kinds, Namespaces, Services, Pods, ServiceAccounts, hand-written EndpointSlices),
//! the mesh ConfigMap, and one watch per Secret a Gateway names. Events are folded into one map and handed to
//! [`ControlPlane::set_cluster`] after a short quiet period, whole; the store finds an
//! unchanged map no change, so a restarted watch (410 Gone, relist) pushes nothing.
//! Proxies are refused until every watch has listed once, so none is sent a partial mesh.
//! `snapshot` reads the same kinds once, whole, for `trellis analyze`.

mod kinds;
pub mod mesh_config;
mod secrets;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use trellis_api::Resource;
use trellis_control::ControlPlane;
use trellis_control::store::Key;

pub use kinds::{Reader, Skipped, WatchedKind, load_object, to_resource, watched};
pub use mesh_config::MeshConfig;

/// How the source runs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The control plane's own namespace (Istio's `istio-system`): always seen, and
    /// where the mesh ConfigMap is.
    pub namespace: String,
    /// How long events must pause before the store is updated.
    pub quiet: Duration,
    /// The longest an update waits while events keep coming.
    pub max_delay: Duration,
}

impl Default for SourceOptions {
    fn default() -> SourceOptions {
        SourceOptions {
            namespace: "istio-system".into(),
            quiet: Duration::from_millis(20),
            max_delay: Duration::from_millis(250),
        }
    }
}

/// The running watches; dropping it stops them.
pub struct ClusterSource {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Arc<SourceStats>,
}

/// What the source has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Store updates that changed something.
    pub updates: std::sync::atomic::AtomicU64,
    /// Store updates that found nothing changed (relists, status writes).
    pub unchanged: std::sync::atomic::AtomicU64,
    /// Watch (re)starts: each relist after the first.
    pub relists: std::sync::atomic::AtomicU64,
}

impl ClusterSource {
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Which watch an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum WatchId {
    Kind(usize),
    Mesh,
    /// Secrets of one name, in every namespace (`secrets.rs`).
    Secret(String),
}

enum Message {
    Event(WatchId, Box<watcher::Event<DynamicObject>>),
    Failed(WatchId, watcher::Error),
}

/// One watch's objects, and the relist it is collecting.
#[derive(Default)]
struct WatchState {
    objects: BTreeMap<Key, Resource>,
    relist: Option<BTreeMap<Key, Resource>>,
    listed: bool,
    lists: u64,
    /// Told once that its CRD is not installed.
    missing: bool,
}

/// Starts watching. The control plane refuses proxies until every watch has listed
/// once (`hold_until_synced`), then serves what the cluster holds.
pub fn start(client: kube::Client, control: ControlPlane, options: SourceOptions) -> ClusterSource {
    control.hold_until_synced("waiting for the Kubernetes API server's objects");
    let (tx, rx) = mpsc::unbounded_channel();
    let kinds = watched();
    let mut tasks = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
        let config = match kind.labels {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        };
        tasks.push(spawn_watch(WatchId::Kind(i), api, config, tx.clone()));
    }
    let config_maps = kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &options.namespace, &config_maps);
    tasks.push(spawn_watch(
        WatchId::Mesh,
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", mesh_config::CONFIG_MAP)),
        tx.clone(),
    ));
    let stats = Arc::new(SourceStats::default());
    tasks.push(tokio::spawn(fold(
        client,
        control,
        options,
        kinds,
        rx,
        tx,
        stats.clone(),
    )));
    ClusterSource { tasks, stats }
}

fn spawn_watch(
    id: WatchId,
    api: Api<DynamicObject>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            let message = match event {
                Ok(e) => Message::Event(id.clone(), Box::new(e)),
                Err(e) => Message::Failed(id.clone(), e),
            };
            if tx.send(message).is_err() {
                return;
            }
        }
    })
}

/// A 404 listing a kind: its CRD is not installed.
fn not_installed(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e)) => e.code == 404,
        _ => false,
    }
}

struct Fold {
    control: ControlPlane,
    options: SourceOptions,
    kinds: Vec<WatchedKind>,
    watches: BTreeMap<WatchId, WatchState>,
    mesh: MeshConfig,
    synced: bool,
    started: Instant,
    stats: Arc<SourceStats>,
}

async fn fold(
    client: kube::Client,
    control: ControlPlane,
    options: SourceOptions,
    kinds: Vec<WatchedKind>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    tx: mpsc::UnboundedSender<Message>,
    stats: Arc<SourceStats>,
) {
    let mut state = Fold {
        control,
        options,
        watches: (0..kinds.len())
            .map(|i| (WatchId::Kind(i), WatchState::default()))
            .chain([(WatchId::Mesh, WatchState::default())])
            .collect(),
        kinds,
        mesh: MeshConfig::default(),
        synced: false,
        started: Instant::now(),
        stats,
    };
    let mut secret_watches: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut dirty = false;
    loop {
        // Wait for the first event, then for a quiet moment (bounded).
        let first = if dirty {
            None
        } else {
            match rx.recv().await {
                Some(m) => Some(m),
                None => return,
            }
        };
        if let Some(m) = first {
            dirty |= state.handle(m);
        }
        let batch_start = Instant::now();
        loop {
            let left = state
                .options
                .max_delay
                .saturating_sub(batch_start.elapsed())
                .min(state.options.quiet);
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(m)) => dirty |= state.handle(m),
                Ok(None) => return,
                Err(_) => break,
            }
            if batch_start.elapsed() >= state.options.max_delay {
                break;
            }
        }
        if dirty && state.ready() {
            let map = state.merged();
            let wanted = secrets::referenced(map.values());
            secrets::follow(&client, &wanted, &mut secret_watches, &mut state, &tx);
            state.publish(map);
            dirty = false;
        }
        // Otherwise not every watch has listed yet: `dirty` stays, and the next
        // round publishes once they have.
    }
}

impl Fold {
    /// Applies one message; whether the store needs updating.
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Failed(id, error) => {
                let missing = not_installed(&error);
                let state = self.watches.entry(id.clone()).or_default();
                if missing && !state.listed {
                    // A cluster without this CRD simply has none of the kind.
                    state.listed = true;
                    if !state.missing {
                        state.missing = true;
                        tracing::info!(target: trellis_control::CONFIG_LOG, watch = ?self.describe(&id), "not served by the API server (CRD not installed?); none are read until it is");
                    }
                    return true;
                }
                tracing::warn!(watch = ?self.describe(&id), error = %error, "watch failed; retrying with backoff");
                false
            }
            Message::Event(id, event) => self.event(id, *event),
        }
    }

    fn describe(&self, id: &WatchId) -> String {
        match id {
            WatchId::Kind(i) => self.kinds[*i].resource.plural.clone(),
            WatchId::Mesh => format!(
                "configmap {}/{}",
                self.options.namespace,
                mesh_config::CONFIG_MAP
            ),
            WatchId::Secret(name) => format!("secrets named {name}"),
        }
    }

    fn event(&mut self, id: WatchId, event: watcher::Event<DynamicObject>) -> bool {
        if id == WatchId::Mesh {
            return self.mesh_event(event);
        }
        let kind = match &id {
            WatchId::Kind(i) => self.kinds[*i].clone(),
            _ => secrets::kind(),
        };
        let Some(state) = self.watches.get_mut(&id) else {
            return false;
        };
        match event {
            watcher::Event::Init => {
                state.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                if let Some((k, r)) = convert(&kind, object)
                    && let Some(relist) = state.relist.as_mut()
                {
                    relist.insert(k, r);
                }
                false
            }
            watcher::Event::InitDone => {
                state.objects = state.relist.take().unwrap_or_default();
                state.listed = true;
                state.lists += 1;
                if state.lists > 1 {
                    self.stats
                        .relists
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                true
            }
            watcher::Event::Apply(object) => {
                let k = object_key(&kind, &object);
                match convert(&kind, object) {
                    Some((k, r)) => {
                        state.objects.insert(k, r);
                    }
                    None => {
                        state.objects.remove(&k);
                    }
                }
                true
            }
            watcher::Event::Delete(object) => {
                state.objects.remove(&object_key(&kind, &object));
                true
            }
        }
    }

    fn mesh_event(&mut self, event: watcher::Event<DynamicObject>) -> bool {
        let state = self.watches.entry(WatchId::Mesh).or_default();
        let object = match event {
            watcher::Event::Init => return false,
            watcher::Event::InitDone => {
                let first = !state.listed;
                state.listed = true;
                return first;
            }
            watcher::Event::Delete(_) => None,
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => Some(o),
        };
        let text = object
            .as_ref()
            .and_then(|o| o.data.get("data"))
            .and_then(|d| d.get(mesh_config::MESH_KEY))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let next = match MeshConfig::parse(&self.options.namespace, &text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(target: trellis_control::CONFIG_LOG, "{e}; the previous mesh settings stay");
                return false;
            }
        };
        if next.trust_domain != self.mesh.trust_domain && self.synced {
            tracing::warn!(target: trellis_control::CONFIG_LOG, "MeshConfig trustDomain changed; it takes effect when the control plane restarts");
        }
        self.control.set_outbound_policy(next.outbound_policy());
        let changed = next != self.mesh;
        self.mesh = next;
        changed
    }

    /// Every watch has listed once (or 30 s passed: serve what there is, and say so).
    fn ready(&mut self) -> bool {
        if self.synced {
            return true;
        }
        let waiting: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, s)| !s.listed)
            .map(|(id, _)| self.describe(id))
            .collect();
        if waiting.is_empty() {
            return true;
        }
        if self.started.elapsed() > Duration::from_secs(30) {
            tracing::warn!(
                ?waiting,
                "these watches have not listed after 30 s; serving what the others hold"
            );
            return true;
        }
        false
    }

    /// The resources of every watch, in the namespaces the mesh sees.
    fn merged(&self) -> BTreeMap<Key, Resource> {
        let namespace_labels: HashMap<&str, &BTreeMap<String, String>> = self
            .watches
            .values()
            .flat_map(|w| w.objects.values())
            .filter(|r| r.kind == "Namespace")
            .map(|r| (r.meta.name.as_str(), &r.meta.labels))
            .collect();
        let empty = BTreeMap::new();
        let root = self
            .mesh
            .root_namespace
            .as_deref()
            .unwrap_or(&self.options.namespace);
        let seen = |ns: &str| {
            ns == self.options.namespace
                || ns == root
                || self
                    .mesh
                    .discovers(namespace_labels.get(ns).copied().unwrap_or(&empty))
        };
        self.watches
            .values()
            .flat_map(|w| w.objects.iter())
            .filter(|((kind, ns, name), _)| {
                if kind == "Namespace" {
                    seen(name)
                } else {
                    seen(ns)
                }
            })
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    fn publish(&mut self, map: BTreeMap<Key, Resource>) {
        let count = map.len();
        let changed = self.control.set_cluster(map);
        let counter = if changed {
            &self.stats.updates
        } else {
            &self.stats.unchanged
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !self.synced {
            self.synced = true;
            self.control.synced();
            tracing::info!(
                target: trellis_control::CONFIG_LOG,
                "read {count} resources from the Kubernetes API server in {:.1?}",
                self.started.elapsed()
            );
        }
    }
}

fn object_key(kind: &WatchedKind, object: &DynamicObject) -> Key {
    let name = object.metadata.name.clone().unwrap_or_default();
    let namespace = if kind.resource.kind == "Namespace" {
        String::new()
    } else {
        object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    (kind.resource.kind.clone(), namespace, name)
}

/// The store's key and resource, or nothing (said once per change) when invalid.
fn convert(kind: &WatchedKind, object: DynamicObject) -> Option<(Key, Resource)> {
    match to_resource(kind, object) {
        Ok(r) => Some((trellis_control::store::key(&r), r)),
        Err(Skipped::Invalid(problem)) => {
            tracing::warn!(target: trellis_control::CONFIG_LOG, "ignored: {problem}");
            None
        }
    }
}

/// The namespaces with a given label set, for tests of discovery.
#[doc(hidden)]
pub fn namespaces(resources: &BTreeMap<Key, Resource>) -> BTreeSet<String> {
    resources
        .keys()
        .filter(|(k, _, _)| k == "Namespace")
        .map(|(_, _, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(control: &ControlPlane) -> Fold {
        let kinds = watched();
        Fold {
            control: control.clone(),
            options: SourceOptions::default(),
            watches: (0..kinds.len())
                .map(|i| (WatchId::Kind(i), WatchState::default()))
                .chain([(WatchId::Mesh, WatchState::default())])
                .collect(),
            kinds,
            mesh: MeshConfig::default(),
            synced: false,
            started: Instant::now(),
            stats: Arc::default(),
        }
    }

    fn service(name: &str, resource_version: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": resource_version},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]},
        }))
        .expect("a Service")
    }

    /// Every watch lists `objects` (Services) from scratch, as after a 410 Gone.
    fn list_all(fold: &mut Fold, services: &[DynamicObject]) {
        let ids: Vec<WatchId> = fold.watches.keys().cloned().collect();
        for id in ids {
            let is_services =
                matches!(&id, WatchId::Kind(i) if fold.kinds[*i].resource.kind == "Service");
            fold.handle(Message::Event(id.clone(), Box::new(watcher::Event::Init)));
            if is_services {
                for s in services {
                    fold.handle(Message::Event(
                        id.clone(),
                        Box::new(watcher::Event::InitApply(s.clone())),
                    ));
                }
            }
            fold.handle(Message::Event(id, Box::new(watcher::Event::InitDone)));
        }
    }

    #[test]
    fn a_relist_of_the_same_objects_changes_nothing_and_pushes_nothing() {
        let control = ControlPlane::new();
        control.hold_until_synced("test");
        let mut fold = fold(&control);
        list_all(
            &mut fold,
            &[service("reviews", "10"), service("ratings", "11")],
        );
        assert!(fold.ready());
        let map = fold.merged();
        fold.publish(map);
        assert!(
            control.held().is_none(),
            "served once everything has listed"
        );
        let snapshot = control.resources();
        assert_eq!(snapshot.iter().filter(|r| r.kind == "Service").count(), 2);

        // The watch restarted: the same objects come back at newer versions.
        list_all(
            &mut fold,
            &[service("ratings", "40"), service("reviews", "41")],
        );
        let map = fold.merged();
        fold.publish(map);
        assert!(
            Arc::ptr_eq(&snapshot, &control.resources()),
            "no new snapshot"
        );
        assert_eq!(
            fold.stats
                .updates
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            fold.stats
                .unchanged
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            fold.stats
                .relists
                .load(std::sync::atomic::Ordering::Relaxed),
            fold.watches.len() as u64 - 1
        );

        // One object gone while the watch was down: that is a change.
        list_all(&mut fold, &[service("reviews", "41")]);
        let map = fold.merged();
        fold.publish(map);
        assert_eq!(
            fold.stats
                .updates
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            control
                .resources()
                .iter()
                .filter(|r| r.kind == "Service")
                .count(),
            1
        );
    }
}
