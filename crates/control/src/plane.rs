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
    /// Workloads known from outside the store (the local runner's pods).
    workloads: Mutex<Vec<Workload>>,
    proxies: Mutex<BTreeMap<String, Connected>>,
    /// The last version handed out; every push takes a new one.
    generation: AtomicU64,
    next_connection: AtomicU64,
    changed: Notify,
    metrics: Metrics,
    /// Each sidecar group's outbound resources as last compiled.
    groups: Mutex<HashMap<GroupKey, Arc<Units>>>,
    /// Where the API layer is saved, so applied resources survive a restart.
    state_file: Mutex<Option<std::path::PathBuf>>,
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
            self.inner.changed.notify_one();
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
        let mut loaded = trellis_api::Loaded::default();
        for (name, text) in files {
            loaded.extend(trellis_api::load_str(name, text));
        }
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
        let changes = self.store().apply(resources);
        if changes.iter().any(|(_, c)| *c != Change::Unchanged) {
            self.save_state();
            self.inner.changed.notify_one();
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
            self.inner.changed.notify_one();
        }
        *self
            .inner
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(restored)
    }

    /// Writes the API layer to the state file (a YAML stream of JSON documents),
    /// atomically: a temporary file renamed over the old one.
    fn save_state(&self) {
        let Some(file) = self
            .inner
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let docs: Vec<String> = self
            .store()
            .api_resources()
            .iter()
            .map(|r| r.raw.to_string())
            .collect();
        let text = docs.join("\n---\n");
        let tmp = file.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = result {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the applied resources");
        }
    }

    /// `trellis delete`: removes the resources the files name.
    pub fn delete(&self, files: &[(String, String)]) -> Result<Vec<(Key, bool)>, Vec<Diagnostic>> {
        let mut loaded = trellis_api::Loaded::default();
        for (name, text) in files {
            loaded.extend(trellis_api::load_str(name, text));
        }
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
            self.inner.changed.notify_one();
        }
        Ok(out)
    }

    /// Workloads known from outside the store (replaces the previous set).
    pub fn set_workloads(&self, workloads: Vec<Workload>) {
        *self
            .inner
            .workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = workloads;
        self.inner.changed.notify_one();
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
        if version != p.sent {
            return;
        }
        p.acked = version;
        p.nack = None;
        if let Some(at) = p.pushed_at.take() {
            self.inner.metrics.push_latency.observe(at.elapsed());
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
            })
            .ok()?;
        assembled.config(version).ok()
    }

    /// Runs the push loop: waits for a change, then recompiles and pushes.
    pub async fn push_loop(self) {
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
        let extra = self
            .inner
            .workloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let targets: Vec<(u64, Arc<ProxySpec>, Sent, bool)> = self
            .proxies()
            .values()
            .map(|p| (p.connection, p.spec.clone(), p.state.clone(), p.needs_full))
            .collect();
        let mut mesh = Mesh::new(&resources, extra);
        // Proxies that announced a pod IP nobody else knows are workloads too.
        let mut known: HashSet<IpAddr> = mesh.workloads.iter().filter_map(|w| w.address).collect();
        for (_, spec, _, _) in &targets {
            if let Some(w) = spec.workload()
                && w.address.is_some_and(|a| known.insert(a))
            {
                mesh.workloads.push(w);
            }
        }
        mesh.reindex();
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
        let groups = self.compile_groups(&mesh, wanted);

        let mut version = None;
        let mut pushed = 0;
        // Group diffs are computed once per (what a proxy had, what it gets).
        let mut group_diffs: HashMap<(usize, usize), Arc<Delta>> = HashMap::new();
        for (connection, spec, before, needs_full) in targets {
            let group = group_of(&spec).and_then(|k| groups.get(&k).cloned());
            let own = Arc::new(spec.own_units(&mesh));
            let (mut changed, mut removed) = if needs_full {
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
            let push = proto::Push {
                version: v,
                incremental: !needs_full,
                base_version: p.sent,
                resources: changed,
                removed,
            };
            let bytes: usize = push.resources.iter().map(|r| r.json.len()).sum();
            p.state = Sent { group, own };
            p.needs_full = false;
            p.sent = v;
            p.last_push = Some(SystemTime::now());
            p.pushed_at = Some(Instant::now());
            if p.tx.send(Ok(push)).is_ok() {
                self.inner.metrics.pushes.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .metrics
                    .push_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                pushed += 1;
            }
        }
        self.inner
            .metrics
            .compile_latency
            .observe(started.elapsed());
        tracing::debug!(pushed, took = ?started.elapsed(), "recomputed");
        pushed
    }

    /// Compiles and encodes each group's outbound resources, several threads at a
    /// time; a group whose resources did not change keeps its previous `Arc` (so
    /// proxies in it see no change without comparing anything).
    fn compile_groups(
        &self,
        mesh: &Mesh,
        wanted: BTreeMap<GroupKey, Arc<ProxySpec>>,
    ) -> HashMap<GroupKey, Arc<Units>> {
        let work: Vec<(GroupKey, Arc<ProxySpec>)> = wanted.into_iter().collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let chunk = work.len().div_ceil(threads).max(1);
        let compiled: Vec<(GroupKey, Units)> = std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(key, spec)| (key.clone(), outbound_units(mesh, spec)))
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
        let mut out = HashMap::new();
        for (key, units) in compiled {
            let arc = match previous.get(&key) {
                Some(old) if **old == units => old.clone(),
                _ => Arc::new(units),
            };
            out.insert(key, arc);
        }
        *previous = out.clone();
        out
    }
}

/// Resources to send and names to drop.
type Delta = (Vec<proto::Resource>, Vec<proto::ResourceName>);

/// A sidecar group's outbound route table and clusters, encoded.
fn outbound_units(mesh: &Mesh, spec: &ProxySpec) -> Units {
    let out = trellis_compile::sidecar_outbound(mesh, &spec.identity);
    for n in &out.notes {
        tracing::debug!(resource = %n.resource, "{}", n.message);
    }
    let mut units = Units::new();
    crate::resources::add_tables(
        &mut units,
        &[trellis_model::RouteTable {
            name: "outbound".into(),
            virtual_hosts: out.virtual_hosts,
        }],
    );
    crate::resources::add_clusters(&mut units, &out.clusters);
    units
}
