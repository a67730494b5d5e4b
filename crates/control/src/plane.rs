//! The control plane's state and its one loop: when the store, the registry or the set
//! of connected proxies changes, compile every connected proxy's config from one
//! [`Mesh`], compare it with what that proxy last received, and push only the changed
//! ones, each push a new version. ACKs and NACKs update per-proxy sync status.
//!
//! Compilation runs off the async threads (`spawn_blocking`); locks are held only to
//! copy state in and out, never while compiling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use trellis_api::{Diagnostic, Resource};
use trellis_compile::{Mesh, Workload};
use trellis_model::{ProxyConfig, Role};

use crate::metrics::Metrics;
use crate::node::ProxySpec;
use crate::proto;
use crate::resources::Units;
use crate::store::{Change, Key, Store};

/// At most this many full pushes are in flight at once: when a thousand proxies
/// connect together, their (large) first configurations go out a few at a time rather
/// than all being encoded into memory at once.
pub const MAX_FULL_IN_FLIGHT: usize = 16;

/// What the push stream of one proxy carries.
pub type PushSender = mpsc::UnboundedSender<Result<proto::Push, tonic::Status>>;

/// The shared control-plane state; cheap to clone.
#[derive(Clone, Default)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    store: Mutex<Store>,
    proxies: Mutex<BTreeMap<String, Connected>>,
    /// The last version handed out; every push takes a new one.
    generation: AtomicU64,
    next_connection: AtomicU64,
    changed: Notify,
    metrics: Metrics,
    /// Full pushes sent and not yet answered, and whether some proxy waits for one.
    full_in_flight: std::sync::atomic::AtomicUsize,
    full_deferred: std::sync::atomic::AtomicBool,
    /// Bumped on every change of resources.
    config_generation: AtomicU64,
    /// The mesh last compiled from, and what it was built from (so a recompute caused
    /// only by proxies coming and going reuses it and its groups).
    last_mesh: Mutex<Option<LastMesh>>,
    /// Each sidecar group's outbound resources as last compiled, and its units.
    groups: Mutex<HashMap<GroupKey, Arc<Units>>>,
    unit_caches: Mutex<HashMap<GroupKey, UnitCache>>,
    /// Where the API layer is saved, so applied resources survive a restart.
    state_file: Mutex<Option<std::path::PathBuf>>,
    /// Workloads that proxies announced before a restart (see [`Remembered`]).
    remembered: Mutex<Remembered>,
}

/// How long after a restart the workloads proxies had announced are still served as
/// endpoints while their proxies reconnect.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30);

/// The workloads connected sidecars announced, saved beside the state file so that a
/// restarted control plane does not push configs without them: the first proxy to
/// reconnect would otherwise learn that every service whose pods have not reconnected
/// yet has no endpoints, and fail requests with 503 (UH) until they do. A remembered
/// workload counts until its proxy reconnects (its Hello then speaks for it) or until
/// [`REMEMBER_FOR`] has passed since the restart.
#[derive(Default)]
struct Remembered {
    until: Option<Instant>,
    workloads: Vec<(String, Workload)>,
    /// Fingerprint of the announced set last saved.
    saved: u64,
}

/// One announced workload as saved in the workloads file.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedWorkload {
    proxy: String,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    address: IpAddr,
    ports: BTreeMap<String, u16>,
    service_account: String,
}

/// Replaces `file` with `text` all at once: a temporary file renamed over it.
fn write_atomically(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file))
}

/// Where announced workloads are saved, beside the state file.
fn workloads_file(state_file: &std::path::Path) -> std::path::PathBuf {
    state_file.with_extension("workloads.json")
}

/// What was last sent to a proxy: the outbound resources it shares with the
/// sidecars of its group, and its own.
#[derive(Clone, Default)]
struct Sent {
    group: Option<Arc<Units>>,
    own: Arc<Units>,
}

/// Sidecars whose outbound config is the same: by namespace, and by labels when some
/// resource makes the outbound config depend on them.
type GroupKey = (String, Vec<(String, String)>);

/// A compiled service-port unit, kept encoded (the typed form is dropped to save
/// memory: with a thousand proxies in ten namespaces this is most of what the
/// control plane holds).
struct CachedUnit {
    /// The virtual host's name and every domain it claims.
    name: String,
    domains: Vec<String>,
    /// Hosts the unit was built from.
    deps: std::collections::BTreeSet<String>,
    vhost: crate::resources::Unit,
    clusters: Vec<(String, crate::resources::Unit)>,
}

/// A group's units by `(host, port)`, kept until a host they depend on changes, with
/// the order they were assembled in and the resources that assembly gave.
#[derive(Default)]
struct UnitCache {
    units: HashMap<(String, u16), Arc<CachedUnit>>,
    order: Vec<(String, u16)>,
    encoded: Option<Arc<Units>>,
}

/// The last mesh: a fingerprint of its inputs, the mesh and the resources it was
/// built from.
type LastMesh = (u64, Arc<Mesh>, Arc<Vec<Resource>>);

/// One connected proxy.
struct Connected {
    connection: u64,
    spec: Arc<ProxySpec>,
    tx: PushSender,
    /// The resources of the last push (what the next incremental push diffs from).
    state: Sent,
    /// The next push must be full: nothing sent yet, or the proxy refused one.
    needs_full: bool,
    sent: u64,
    acked: u64,
    last_push: Option<SystemTime>,
    pushed_at: Option<Instant>,
    nack: Option<(u64, String)>,
    /// The version of a full push not yet answered (it counts against the limit).
    full_in_flight: Option<u64>,
}

/// Where a proxy stands, as `trellis proxy-status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub id: String,
    pub role: Role,
    pub namespace: String,
    pub workload: String,
    pub pod_ip: String,
    /// `SYNCED` (the last push is ACKed), `STALE` (sent, not ACKed, or NACKed),
    /// `NOT SENT` (nothing pushed yet).
    pub state: String,
    /// The version last pushed.
    pub version: u64,
    pub acked_version: u64,
    /// Milliseconds since the Unix epoch of the last push.
    pub last_push_ms: Option<u64>,
    /// Milliseconds between the last push and now, at the time of asking.
    pub last_push_age_ms: Option<u64>,
    pub nack_version: Option<u64>,
    pub nack_error: Option<String>,
}

impl ControlPlane {
    /// An empty control plane; [`crate::serve`] runs it.
    pub fn new() -> ControlPlane {
        ControlPlane::default()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn proxies(&self) -> MutexGuard<'_, BTreeMap<String, Connected>> {
        self.inner.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resources in force.
    pub fn resources(&self) -> Arc<Vec<Resource>> {
        self.store().resources()
    }

    /// Replaces the watched directory's resources (already validated).
    pub fn set_directory(&self, resources: Vec<Resource>) {
        if self.store().set_directory(resources) {
            self.config_changed();
        }
    }

    /// Counts a refused directory edit.
    pub fn directory_refused(&self, problems: &[Diagnostic]) {
        self.inner
            .metrics
            .config_errors_directory
            .fetch_add(1, Ordering::Relaxed);
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        eprintln!(
            "control plane: rejected the edit; the running configuration stays:\n  {}",
            lines.join("\n  ")
        );
    }

    /// `trellis apply`: validates every file and applies all or nothing.
    pub fn apply(&self, files: &[(String, String)]) -> Result<Vec<(Key, Change)>, Vec<Diagnostic>> {
        let loaded = load_files(files);
        let resources = crate::source::validated(loaded).inspect_err(|_| {
            self.inner
                .metrics
                .config_errors_api
                .fetch_add(1, Ordering::Relaxed);
        })?;
        Ok(self.apply_resources(resources))
    }

    /// Adds or replaces already validated resources (the in-memory API).
    pub fn apply_resources(&self, resources: Vec<Resource>) -> Vec<(Key, Change)> {
        let t = Instant::now();
        let changes = self.store().apply(resources);
        tracing::debug!(took = ?t.elapsed(), "store apply");
        if changes.iter().any(|(_, c)| *c != Change::Unchanged) {
            self.save_state();
            self.config_changed();
        }
        changes
    }

    /// Keeps the API layer in `file` from now on, first loading what it holds.
    pub fn persist_to(&self, file: std::path::PathBuf) -> Result<usize, String> {
        let mut restored = 0;
        if let Ok(text) = std::fs::read_to_string(&file) {
            let loaded = trellis_api::load_str(&file.display().to_string(), &text);
            let resources = crate::source::validated(loaded).map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                format!("{}: {}", file.display(), lines.join("; "))
            })?;
            restored = resources.len();
            self.store().apply(resources);
            self.config_changed();
        }
        if let Ok(text) = std::fs::read_to_string(workloads_file(&file)) {
            match serde_json::from_str::<Vec<SavedWorkload>>(&text) {
                Ok(saved) => {
                    let mut r = self.remembered();
                    r.until = Some(Instant::now() + REMEMBER_FOR);
                    r.workloads = saved
                        .into_iter()
                        .map(|w| {
                            let workload = Workload {
                                name: w.name,
                                namespace: w.namespace,
                                labels: w.labels,
                                address: Some(w.address),
                                ports: w.ports,
                                service_account: w.service_account,
                            };
                            (w.proxy, workload)
                        })
                        .collect();
                }
                Err(e) => tracing::warn!(error = %e, "ignoring the saved workloads"),
            }
        }
        *self
            .inner
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(restored)
    }

    fn remembered(&self) -> MutexGuard<'_, Remembered> {
        self.inner
            .remembered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered workloads that still count: their proxy is not connected and the
    /// grace period has not ended.
    fn remembered_workloads(&self, connected: &HashSet<&str>) -> Vec<(String, Workload)> {
        let mut r = self.remembered();
        if r.until.is_some_and(|until| Instant::now() >= until) {
            r.until = None;
            r.workloads.clear();
        }
        r.workloads
            .iter()
            .filter(|(proxy, _)| !connected.contains(proxy.as_str()))
            .cloned()
            .collect()
    }

    /// Saves the announced (and still remembered) workloads when they changed.
    fn save_workloads(&self, workloads: &[(String, Workload)]) {
        let fingerprint = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(workloads, &mut h);
            std::hash::Hasher::finish(&h)
        };
        if self.remembered().saved == fingerprint {
            return;
        }
        let Some(file) = self.state_file() else {
            return;
        };
        let saved: Vec<SavedWorkload> = workloads
            .iter()
            .filter_map(|(proxy, w)| {
                Some(SavedWorkload {
                    proxy: proxy.clone(),
                    name: w.name.clone(),
                    namespace: w.namespace.clone(),
                    labels: w.labels.clone(),
                    address: w.address?,
                    ports: w.ports.clone(),
                    service_account: w.service_account.clone(),
                })
            })
            .collect();
        let file = workloads_file(&file);
        match write_atomically(&file, &serde_json::to_string(&saved).unwrap_or_default()) {
            Ok(()) => self.remembered().saved = fingerprint,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot save the announced workloads");
            }
        }
    }

    fn state_file(&self) -> Option<std::path::PathBuf> {
        self.inner
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes the API layer to the state file (a YAML stream of JSON documents),
    /// atomically: a temporary file renamed over the old one.
    fn save_state(&self) {
        let Some(file) = self.state_file() else {
            return;
        };
        let docs: Vec<String> = self
            .store()
            .api_resources()
            .iter()
            .map(|r| r.raw.to_string())
            .collect();
        if let Err(e) = write_atomically(&file, &docs.join("\n---\n")) {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the applied resources");
        }
    }

    /// `trellis delete`: removes the resources the files name.
    pub fn delete(&self, files: &[(String, String)]) -> Result<Vec<(Key, bool)>, Vec<Diagnostic>> {
        let loaded = load_files(files);
        let errors: Vec<Diagnostic> = loaded
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == trellis_api::Severity::Error)
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let keys: Vec<Key> = loaded.resources.iter().map(crate::store::key).collect();
        let out = self.store().delete(&keys);
        if out.iter().any(|(_, found)| *found) {
            self.save_state();
            self.config_changed();
        }
        Ok(out)
    }

    /// Registers a proxy's stream; returns its connection number.
    pub fn connect(&self, spec: ProxySpec, running_version: u64, tx: PushSender) -> u64 {
        // Versions keep increasing for a proxy across a control-plane restart.
        self.inner
            .generation
            .fetch_max(running_version, Ordering::AcqRel);
        let connection = self.inner.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        let id = spec.id.clone();
        let mut proxies = self.proxies();
        proxies.insert(
            id.clone(),
            Connected {
                connection,
                spec: Arc::new(spec),
                tx,
                state: Sent::default(),
                needs_full: true,
                full_in_flight: None,
                sent: 0,
                acked: 0,
                last_push: None,
                pushed_at: None,
                nack: None,
            },
        );
        self.inner
            .metrics
            .connected
            .store(proxies.len() as u64, Ordering::Relaxed);
        drop(proxies);
        tracing::info!(proxy = %id, "proxy connected");
        self.inner.changed.notify_one();
        connection
    }

    /// Forgets a proxy whose stream ended (unless it has reconnected since).
    pub fn disconnect(&self, id: &str, connection: u64) {
        let mut proxies = self.proxies();
        let Some(entry) = proxies.get(id) else { return };
        if entry.connection != connection {
            return;
        }
        let announced = entry.spec.workload().is_some();
        if entry.full_in_flight.is_some() {
            self.full_answered();
        }
        proxies.remove(id);
        self.inner
            .metrics
            .connected
            .store(proxies.len() as u64, Ordering::Relaxed);
        drop(proxies);
        tracing::info!(proxy = %id, "proxy disconnected");
        if announced {
            self.inner.changed.notify_one();
        }
    }

    /// The proxy applied `version`.
    pub fn ack(&self, id: &str, connection: u64, version: u64) {
        let mut proxies = self.proxies();
        let Some(p) = proxies.get_mut(id).filter(|p| p.connection == connection) else {
            return;
        };
        let finished_full = p.full_in_flight.is_some_and(|v| v <= version);
        if finished_full {
            p.full_in_flight = None;
            self.full_answered();
        }
        if version != p.sent {
            return;
        }
        p.acked = version;
        p.nack = None;
        if let Some(at) = p.pushed_at.take() {
            self.inner.metrics.push_latency.observe(at.elapsed());
        }
    }

    /// Resources changed: the next recompute rebuilds the mesh.
    fn config_changed(&self) {
        self.inner.config_generation.fetch_add(1, Ordering::AcqRel);
        self.inner.changed.notify_one();
    }

    /// A full push was answered (or its proxy left): let a waiting one go.
    fn full_answered(&self) {
        self.inner.full_in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.inner.full_deferred.swap(false, Ordering::AcqRel) {
            self.inner.changed.notify_one();
        }
    }

    /// The proxy refused `version` and keeps running its previous config.
    pub fn nack(&self, id: &str, connection: u64, version: u64, error: String) {
        self.inner.metrics.nacks.fetch_add(1, Ordering::Relaxed);
        let mismatch = error.starts_with(crate::client::BASE_MISMATCH);
        eprintln!(
            "control plane: proxy {id} refused version {version} (NACK), keeping its previous configuration: {error}"
        );
        let mut proxies = self.proxies();
        let Some(p) = proxies.get_mut(id).filter(|p| p.connection == connection) else {
            return;
        };
        if version == p.sent
            && let Some(at) = p.pushed_at.take()
        {
            self.inner.metrics.push_latency.observe(at.elapsed());
        }
        // What the proxy runs is no longer what we last sent: the next push is whole.
        p.needs_full = true;
        if mismatch {
            // The proxy missed a push it was meant to build on: resend at once.
            drop(proxies);
            self.inner.changed.notify_one();
            return;
        }
        p.nack = Some((version, error));
    }

    /// Every connected proxy's sync status.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let now = SystemTime::now();
        self.proxies()
            .values()
            .map(|p| {
                let state = if p.sent == 0 {
                    "NOT SENT"
                } else if p.acked == p.sent && p.nack.is_none() {
                    "SYNCED"
                } else {
                    "STALE"
                };
                let ms = |t: SystemTime, from: SystemTime| {
                    t.duration_since(from).map_or(0, |d| d.as_millis() as u64)
                };
                ProxyStatus {
                    id: p.spec.id.clone(),
                    role: p.spec.role,
                    namespace: p.spec.identity.namespace.clone(),
                    workload: p.spec.identity.name.clone(),
                    pod_ip: p.spec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
                    state: state.into(),
                    version: p.sent,
                    acked_version: p.acked,
                    last_push_ms: p.last_push.map(|t| ms(t, SystemTime::UNIX_EPOCH)),
                    last_push_age_ms: p.last_push.map(|t| ms(now, t)),
                    nack_version: p.nack.as_ref().map(|n| n.0),
                    nack_error: p.nack.as_ref().map(|n| n.1.clone()),
                }
            })
            .collect()
    }

    /// The config last pushed to proxy `id`, reassembled from its resources.
    pub fn proxy_config(&self, id: &str) -> Option<ProxyConfig> {
        let (state, version) = {
            let proxies = self.proxies();
            let p = proxies.get(id)?;
            if p.sent == 0 {
                return None;
            }
            (p.state.clone(), p.sent)
        };
        let mut all: Units = state.group.as_deref().cloned().unwrap_or_default();
        all.extend(state.own.iter().map(|(k, u)| (k.clone(), u.clone())));
        let (resources, _) = crate::resources::diff(None, &all);
        let mut assembled = crate::resources::Assembled::default();
        assembled
            .apply(&proto::Push {
                version,
                incremental: false,
                base_version: 0,
                resources,
                removed: vec![],
                more: false,
            })
            .ok()?;
        assembled.config(version).ok()
    }

    /// Runs the push loop: waits for a change, then recompiles and pushes.
    pub async fn push_loop(self) {
        // Remembered workloads stop counting when their grace period ends.
        if let Some(until) = self.remembered().until {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                me.inner.changed.notify_one();
            });
        }
        loop {
            self.inner.changed.notified().await;
            // Coalesce a burst of changes (a file saved in pieces, proxies connecting).
            tokio::time::sleep(Duration::from_millis(5)).await;
            let me = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || me.recompute()).await {
                tracing::error!(error = %e, "recompute failed");
            }
        }
    }

    /// Compiles what changed for every connected proxy and pushes the difference.
    ///
    /// Sidecars are grouped by what their outbound config depends on (namespace, and
    /// labels only when some resource matches on them); each group's outbound
    /// resources are compiled and encoded once and diffed once, whatever the number of
    /// sidecars in it. A proxy's own resources (listeners, inbound) are small and
    /// compiled per proxy. Unchanged resources are never resent.
    pub fn recompute(&self) -> usize {
        let started = Instant::now();
        let resources = self.resources();
        let targets: Vec<(u64, Arc<ProxySpec>, Sent, bool)> = self
            .proxies()
            .values()
            .map(|p| (p.connection, p.spec.clone(), p.state.clone(), p.needs_full))
            .collect();
        // The workloads proxies announced, and those remembered from before a restart
        // whose proxies have not reconnected yet.
        let announced: Vec<(String, Workload)> = {
            let connected: HashSet<&str> = targets.iter().map(|t| t.1.id.as_str()).collect();
            let mut all: Vec<(String, Workload)> = targets
                .iter()
                .filter_map(|(_, spec, _, _)| Some((spec.id.clone(), spec.workload()?)))
                .collect();
            all.extend(self.remembered_workloads(&connected));
            all
        };
        self.save_workloads(&announced);
        // What the mesh is built from: the resources and the announced workloads.
        let inputs = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(
                &self.inner.config_generation.load(Ordering::Acquire),
                &mut h,
            );
            for (_, w) in &announced {
                std::hash::Hash::hash(
                    &(&w.name, &w.namespace, &w.labels, w.address, &w.ports),
                    &mut h,
                );
            }
            std::hash::Hasher::finish(&h)
        };
        let last = self
            .inner
            .last_mesh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cached = last
            .as_ref()
            .filter(|(fp, _, _)| *fp == inputs)
            .map(|(_, m, _)| m.clone());
        let fresh = cached.is_none();
        let mesh = match cached {
            Some(m) => m,
            None => {
                let mut mesh = Mesh::new(&resources, Vec::new());
                // Proxies that announced a pod IP nobody else knows are workloads too.
                let mut known: HashSet<IpAddr> =
                    mesh.workloads.iter().filter_map(|w| w.address).collect();
                for (_, w) in &announced {
                    if w.address.is_some_and(|a| known.insert(a)) {
                        mesh.workloads.push(w.clone());
                    }
                }
                mesh.reindex();
                let mesh = Arc::new(mesh);
                *self
                    .inner
                    .last_mesh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) =
                    Some((inputs, mesh.clone(), resources.clone()));
                mesh
            }
        };
        // Which hosts changed since the last mesh (`None`: assume all did).
        let dirty = match (&last, fresh) {
            (_, false) => Some(HashSet::new()),
            (Some((_, old_mesh, old_resources)), true) => {
                crate::dirty::hosts(old_resources, &resources, old_mesh, &mesh)
            }
            (None, true) => None,
        };
        let by_labels = trellis_compile::outbound_depends_on_labels(&mesh);
        let group_of = |spec: &ProxySpec| -> Option<GroupKey> {
            (spec.role == Role::Sidecar).then(|| {
                let labels = if by_labels {
                    spec.identity.labels.clone().into_iter().collect()
                } else {
                    Vec::new()
                };
                (spec.identity.namespace.clone(), labels)
            })
        };
        // Each group's outbound resources, compiled on every core.
        let mut wanted: BTreeMap<GroupKey, Arc<ProxySpec>> = BTreeMap::new();
        for (_, spec, _, _) in &targets {
            if let Some(key) = group_of(spec) {
                wanted.entry(key).or_insert_with(|| spec.clone());
            }
        }
        let t_mesh = started.elapsed();
        let groups = self.compile_groups(&mesh, wanted, fresh, dirty.as_ref());
        let t_groups = started.elapsed();

        let mut version = None;
        let mut pushed = 0;
        // Group diffs are computed once per (what a proxy had, what it gets).
        let mut group_diffs: HashMap<(usize, usize), Arc<Delta>> = HashMap::new();
        for (connection, spec, before, needs_full) in targets {
            let group = group_of(&spec).and_then(|k| groups.get(&k).cloned());
            // A sidecar's own resources depend only on what it announced.
            let own = if spec.role == Role::Sidecar && !before.own.is_empty() {
                before.own.clone()
            } else {
                Arc::new(spec.own_units(&mesh))
            };
            let (mut changed, mut removed) = if needs_full || Arc::ptr_eq(&own, &before.own) {
                (Vec::new(), Vec::new())
            } else {
                crate::resources::diff(Some(&before.own), &own)
            };
            if needs_full {
                for (k, u) in own.iter().chain(group.iter().flat_map(|g| g.iter())) {
                    changed.push(crate::resources::resource(k, u));
                }
            } else {
                let same_group = match (&before.group, &group) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same_group {
                    let key = (
                        before.group.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize),
                        group.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize),
                    );
                    let d = group_diffs
                        .entry(key)
                        .or_insert_with(|| {
                            Arc::new(crate::resources::diff(
                                before.group.as_deref(),
                                group.as_deref().unwrap_or(&Units::new()),
                            ))
                        })
                        .clone();
                    changed.extend(d.0.iter().cloned());
                    removed.extend(d.1.iter().cloned());
                }
            }
            if !needs_full && changed.is_empty() && removed.is_empty() {
                continue;
            }
            let v = *version
                .get_or_insert_with(|| self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1);
            let mut proxies = self.proxies();
            let Some(p) = proxies
                .get_mut(&spec.id)
                .filter(|p| p.connection == connection)
            else {
                continue;
            };
            if needs_full {
                if self.inner.full_in_flight.load(Ordering::Acquire) >= MAX_FULL_IN_FLIGHT {
                    // Sent when one in flight is answered.
                    self.inner.full_deferred.store(true, Ordering::Release);
                    continue;
                }
                self.inner.full_in_flight.fetch_add(1, Ordering::AcqRel);
                p.full_in_flight = Some(v);
            }
            let push = proto::Push {
                version: v,
                incremental: !needs_full,
                base_version: p.sent,
                resources: changed,
                removed,
                more: false,
            };
            let bytes: usize = push.resources.iter().map(|r| r.json.len()).sum();
            p.state = Sent { group, own };
            p.needs_full = false;
            p.sent = v;
            p.last_push = Some(SystemTime::now());
            p.pushed_at = Some(Instant::now());
            if split(push)
                .into_iter()
                .all(|part| p.tx.send(Ok(part)).is_ok())
            {
                self.inner.metrics.pushes.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .metrics
                    .push_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                pushed += 1;
            }
        }
        crate::resources::prune_interned();
        crate::trim::release_free_memory();
        self.inner
            .metrics
            .compile_latency
            .observe(started.elapsed());
        tracing::debug!(
            pushed,
            dirty = dirty.as_ref().map_or(usize::MAX, HashSet::len),
            mesh = ?t_mesh,
            groups = ?t_groups,
            took = ?started.elapsed(),
            "recomputed"
        );
        pushed
    }

    /// Compiles and encodes each group's outbound resources, several threads at a
    /// time, reusing every unit that depends on no `dirty` host (all are rebuilt when
    /// `dirty` is `None`). A group whose resources did not change keeps its previous
    /// `Arc`, so proxies in it see no change without comparing anything.
    fn compile_groups(
        &self,
        mesh: &Mesh,
        wanted: BTreeMap<GroupKey, Arc<ProxySpec>>,
        fresh: bool,
        dirty: Option<&HashSet<String>>,
    ) -> HashMap<GroupKey, Arc<Units>> {
        let mut out = HashMap::new();
        let mut work: Vec<(GroupKey, Arc<ProxySpec>, UnitCache)> = Vec::new();
        {
            let previous = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
            let mut caches = self
                .inner
                .unit_caches
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (key, spec) in wanted {
                match previous.get(&key) {
                    // Same mesh as last time: the group's resources cannot differ.
                    Some(units) if !fresh => {
                        out.insert(key, units.clone());
                    }
                    _ => {
                        let cache = caches.remove(&key).unwrap_or_default();
                        work.push((key, spec, cache));
                    }
                }
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let chunk = work.len().div_ceil(threads).max(1);
        let compiled: Vec<(GroupKey, Arc<Units>, UnitCache)> = std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter_mut()
                            .map(|(key, spec, cache)| {
                                let (units, next) =
                                    outbound_units(mesh, spec, std::mem::take(cache), dirty);
                                (key.clone(), units, next)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut previous = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut caches = self
            .inner
            .unit_caches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (key, units, cache) in compiled {
            let arc = match previous.get(&key) {
                Some(old) if Arc::ptr_eq(old, &units) || **old == *units => old.clone(),
                _ => units,
            };
            caches.insert(key.clone(), cache);
            out.insert(key, arc);
        }
        caches.retain(|k, _| out.contains_key(k));
        *previous = out.clone();
        out
    }
}

/// The most resource bytes one push message carries; larger pushes go in parts.
pub const PART_BYTES: usize = 16 << 10;

/// Splits a push into messages of at most [`PART_BYTES`] of resources (one resource
/// larger than that goes alone); all but the last say `more`.
fn split(push: proto::Push) -> Vec<proto::Push> {
    let total: usize = push.resources.iter().map(|r| r.json.len()).sum();
    if total <= PART_BYTES {
        return vec![push];
    }
    let proto::Push {
        version,
        incremental,
        base_version,
        resources,
        removed,
        ..
    } = push;
    let part = |resources| proto::Push {
        version,
        incremental,
        base_version,
        resources,
        removed: Vec::new(),
        more: true,
    };
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for r in resources {
        if size + r.json.len() > PART_BYTES && !current.is_empty() {
            parts.push(part(std::mem::take(&mut current)));
            size = 0;
        }
        size += r.json.len();
        current.push(r);
    }
    parts.push(part(current));
    if let Some(last) = parts.last_mut() {
        last.more = false;
        last.removed = removed;
    }
    parts
}

/// Loads files sent to the API (name, text), as `trellis validate` would read them.
fn load_files(files: &[(String, String)]) -> trellis_api::Loaded {
    let mut loaded = trellis_api::Loaded::default();
    for (name, text) in files {
        loaded.extend(trellis_api::load_str(name, text));
    }
    loaded
}

/// Resources to send and names to drop.
type Delta = (Vec<proto::Resource>, Vec<proto::ResourceName>);

/// A sidecar group's outbound route table and clusters, encoded, from its units:
/// those in `cache` that depend on no dirty host are reused, the rest compiled.
/// Returns the resources and the cache of the units used.
fn outbound_units(
    mesh: &Mesh,
    spec: &ProxySpec,
    mut cache: UnitCache,
    dirty: Option<&HashSet<String>>,
) -> (Arc<Units>, UnitCache) {
    use crate::proto::Kind;
    use crate::resources::{unit, vhost_name};
    let plan = trellis_compile::outbound_plan(mesh, &spec.identity);
    let keys: Vec<(String, u16)> = plan
        .iter()
        .map(|(s, p)| (s.hostname.clone(), p.number))
        .collect();
    let compile = |service, port| {
        let u = trellis_compile::outbound_unit(mesh, &spec.identity, service, port);
        for n in &u.notes {
            tracing::debug!(resource = %n.resource, "{}", n.message);
        }
        Arc::new(CachedUnit {
            vhost: unit(&u.vhost),
            clusters: u
                .clusters
                .iter()
                .map(|c| (c.name.clone(), unit(c)))
                .collect(),
            name: u.vhost.name,
            domains: u.vhost.domains,
            deps: u.deps,
        })
    };
    // Fast path: the same service ports as last time; patch the few dirty units into
    // the previous resources, as long as none changes its domains or its clusters'
    // names (which could move domains or orphan clusters between units).
    if let (Some(d), Some(previous)) = (dirty, cache.encoded.clone())
        && keys == cache.order
    {
        let mut patched: Option<Units> = None;
        let mut ok = true;
        for (key, (service, port)) in keys.iter().zip(&plan) {
            let Some(old) = cache.units.get(key).cloned() else {
                ok = false;
                break;
            };
            if old.deps.iter().all(|h| !d.contains(h)) {
                continue;
            }
            let new = compile(service, port);
            let vkey = (Kind::VirtualHost as i32, vhost_name("outbound", &new.name));
            let same_shape = new.domains == old.domains
                && new
                    .clusters
                    .iter()
                    .map(|c| &c.0)
                    .eq(old.clusters.iter().map(|c| &c.0))
                && previous.get(&vkey) == Some(&old.vhost);
            if !same_shape {
                ok = false;
                break;
            }
            let units = patched.get_or_insert_with(|| (*previous).clone());
            units.insert(vkey, new.vhost.clone());
            for (name, u) in &new.clusters {
                units.insert((Kind::Cluster as i32, name.clone()), u.clone());
            }
            cache.units.insert(key.clone(), new);
        }
        if ok {
            let units = patched.map_or(previous, Arc::new);
            cache.encoded = Some(units.clone());
            return (units, cache);
        }
    }
    let mut next = HashMap::new();
    let mut claimed: HashSet<String> = HashSet::new();
    let mut units = Units::new();
    let mut order = Vec::new();
    for (key, (service, port)) in keys.iter().zip(plan) {
        let reusable = cache
            .units
            .remove(key)
            .filter(|c| dirty.is_some_and(|d| c.deps.iter().all(|h| !d.contains(h))));
        let cached = reusable.unwrap_or_else(|| compile(service, port));
        let domains: Vec<&String> = cached
            .domains
            .iter()
            .filter(|d| claimed.insert((*d).clone()))
            .collect();
        if !domains.is_empty() {
            let name = vhost_name("outbound", &cached.name);
            let encoded = if domains.len() == cached.domains.len() {
                cached.vhost.clone()
            } else {
                // Some domain went to an earlier service: this vhost gets the rest
                // (rare, so it is compiled again rather than kept typed).
                let mut vh =
                    trellis_compile::outbound_unit(mesh, &spec.identity, service, port).vhost;
                vh.domains = domains.into_iter().cloned().collect();
                unit(&vh)
            };
            units.insert((Kind::VirtualHost as i32, name.clone()), encoded);
            order.push(name);
            for (c, u) in &cached.clusters {
                units
                    .entry((Kind::Cluster as i32, c.clone()))
                    .or_insert_with(|| u.clone());
            }
        }
        next.insert(key.clone(), cached);
    }
    units.insert((Kind::RouteTable as i32, "outbound".into()), unit(&order));
    let units = Arc::new(units);
    let cache = UnitCache {
        units: next,
        order: keys,
        encoded: Some(units.clone()),
    };
    (units, cache)
}
