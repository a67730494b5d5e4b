//! The control plane's shared state — the config store and one lock per concern
//! (connections, persistence, the unit cache, the last mesh), none held while
//! compiling — and the store-facing API (`apply`, `delete`, the watched directory).
//! It does not compile or push: a change bumps the config generation and wakes the
//! push loop (`push.rs`), where a compile step that panics is caught (`guard.rs`).

mod connections;
mod guard;
mod persist;
mod push;
mod units;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use trellis_api::{Diagnostic, Resource};

pub use connections::{MAX_FULL_IN_FLIGHT, ProxyStatus, PushSender};
#[cfg(any(test, feature = "testing"))]
pub use guard::testing::{CompileHook, Compiling};
pub use persist::{REMEMBER_FOR, StateFileError};
pub use push::PART_BYTES;

use crate::metrics::Metrics;
use crate::store::{Change, Key, Layer, Store};

/// The shared control-plane state; cheap to clone.
#[derive(Clone, Default)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    store: Mutex<Store>,
    /// Bumped on every change of resources.
    config_generation: AtomicU64,
    /// Wakes the push loop.
    changed: Notify,
    metrics: Metrics,
    /// Connected proxies, what each was sent, versions (`connections.rs`).
    connections: connections::Connections,
    /// The state file and the announced workloads (`persist.rs`).
    persisted: Mutex<persist::Persisted>,
    /// Each sidecar group's outbound resources and units (`units.rs`).
    groups: Mutex<units::GroupCache>,
    /// The mesh last compiled from (`push.rs`).
    last_mesh: Mutex<Option<push::LastMesh>>,
    /// Workloads no proxy announces (local pods without a sidecar).
    listed: Mutex<Arc<Vec<trellis_compile::Workload>>>,
    /// RequestAuthentication key sets fetched from `jwksUri`.
    pub(crate) jwks: crate::jwks::Cache,
    /// The mesh's SPIFFE trust domain (the CA's), for the identities compiled in.
    trust_domain: Mutex<Option<String>>,
    /// MeshConfig `outboundTrafficPolicy.mode` (cluster mode's ConfigMap).
    outbound_policy: Mutex<trellis_compile::OutboundPolicy>,
    /// Why proxies are refused for now (a source still reading its first state).
    held: Mutex<Option<String>>,
    /// Called before each compile step, so a test can make one fail.
    #[cfg(any(test, feature = "testing"))]
    compile_hook: Option<CompileHook>,
}

impl ControlPlane {
    /// An empty control plane; [`crate::spawn_with`] runs it.
    pub fn new() -> ControlPlane {
        ControlPlane::default()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resources in force.
    pub fn resources(&self) -> Arc<Vec<Resource>> {
        self.store().resources()
    }

    /// Sets the workloads no proxy announces (local pods without a sidecar).
    pub fn set_listed_workloads(&self, workloads: Vec<trellis_compile::Workload>) {
        *self.inner.listed.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(workloads);
        self.config_changed();
    }

    /// Sets the trust domain workload identities are compiled with (the CA's).
    pub fn set_trust_domain(&self, trust_domain: &str) {
        *self
            .inner
            .trust_domain
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(trust_domain.to_string());
        self.config_changed();
    }

    /// Sets the mesh-wide `outboundTrafficPolicy` (what capturing sidecars do with
    /// destinations the mesh does not know); a change recompiles.
    pub fn set_outbound_policy(&self, policy: trellis_compile::OutboundPolicy) {
        let mut current = self
            .inner
            .outbound_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *current != policy {
            *current = policy;
            drop(current);
            self.config_changed();
        }
    }

    fn outbound_policy(&self) -> trellis_compile::OutboundPolicy {
        *self
            .inner
            .outbound_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn trust_domain(&self) -> Option<String> {
        self.inner
            .trust_domain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `jwksUri` key sets and their fetch failures.
    pub fn jwks(&self) -> &crate::jwks::Cache {
        &self.inner.jwks
    }

    fn listed_workloads(&self) -> Arc<Vec<trellis_compile::Workload>> {
        self.inner
            .listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the watched directory's resources (already validated).
    pub fn set_directory(&self, resources: Vec<Resource>) {
        if self.store().set_directory(resources) {
            self.config_changed();
        }
    }

    /// Refuses proxies' config streams (they retry) until [`ControlPlane::synced`]:
    /// a source that has not read everything yet would hand them a partial mesh.
    pub fn hold_until_synced(&self, reason: &str) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }

    /// The source has read everything: proxies are served.
    pub fn synced(&self) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Why proxies are refused for now, if they are.
    pub fn held(&self) -> Option<String> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the cluster's resources (already validated, keyed by [`crate::store::key`]);
    /// equal content (a relisted watch) changes nothing and pushes nothing.
    pub fn set_cluster(&self, resources: BTreeMap<Key, Resource>) -> bool {
        let changed = self.store().set_layer(Layer::Cluster, resources);
        if changed {
            self.config_changed();
        }
        changed
    }

    /// Counts and reports a refused directory edit.
    pub fn directory_refused(&self, problems: &[Diagnostic]) {
        self.inner
            .metrics
            .config_errors_directory
            .fetch_add(1, Ordering::Relaxed);
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        tracing::warn!(
            target: crate::CONFIG_LOG,
            "rejected the edit; the running configuration stays:\n  {}",
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
        for warning in crate::source::custom_warnings(&resources) {
            tracing::warn!(target: crate::CONFIG_LOG, "{warning}");
        }
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

    /// Resources changed: the next recompute rebuilds the mesh.
    pub(crate) fn config_changed(&self) {
        self.inner.config_generation.fetch_add(1, Ordering::AcqRel);
        self.inner.changed.notify_one();
    }
}

/// Loads files sent to the API (name, text), as `trellis validate` would read them.
fn load_files(files: &[(String, String)]) -> trellis_api::Loaded {
    let mut loaded = trellis_api::Loaded::default();
    for (name, text) in files {
        loaded.extend(trellis_api::load_str(name, text));
    }
    loaded
}
