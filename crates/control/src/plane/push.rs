//! Pushing: the push loop waits for a change, then [`ControlPlane::recompute`] builds
//! the mesh (reused while only proxies come and go), finds the dirty hosts, has each
//! sidecar group compiled (`units.rs`), diffs what every proxy gets against what it
//! has and sends only the difference, in parts. It keeps no per-proxy state of its
//! own: that is `connections.rs`'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use trellis_api::Resource;
use trellis_compile::{Mesh, Workload};
use trellis_model::Role;

use super::ControlPlane;
use super::connections::Sent;
use super::guard::{CompileError, catching};
use super::units::GroupKey;
use crate::node::ProxySpec;
use crate::proto;
use crate::resources::Units;

/// The most resource bytes one push message carries; larger pushes go in parts.
pub const PART_BYTES: usize = 16 << 10;

/// The last mesh: a fingerprint of its inputs, the mesh and the resources it was
/// built from (so a recompute caused only by proxies coming and going reuses it and
/// its groups).
pub(super) type LastMesh = (u64, Arc<Mesh>, Arc<Vec<Resource>>);

/// Resources to send and names to drop.
type Delta = (Vec<proto::Resource>, Vec<proto::ResourceName>);

/// A connected proxy as a recompute found it.
struct Target {
    connection: u64,
    spec: Arc<ProxySpec>,
    /// What it was last sent.
    before: Sent,
    needs_full: bool,
    /// The last recompute could not compile for it.
    failed: bool,
}

/// The mesh to compile from, whether it differs from the last one, and which hosts
/// changed since then (`None`: assume all did).
struct CurrentMesh {
    mesh: Arc<Mesh>,
    fresh: bool,
    dirty: Option<HashSet<String>>,
}

impl ControlPlane {
    /// Runs the push loop: waits for a change, then recompiles and pushes.
    pub async fn push_loop(self) {
        // Remembered workloads stop counting when their grace period ends.
        if let Some(until) = self.remembered_until() {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                me.inner.changed.notify_one();
            });
        }
        // Key sets whose refresh time came are fetched at the next recompute.
        {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    if me.inner.jwks.refresh_due() {
                        me.config_changed();
                    }
                }
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
            // The jwksUri key sets the compile found missing or stale: fetched off the
            // loop; a landed one that changes what proxies get causes a recompute.
            for uri in self.inner.jwks.take_due() {
                let me = self.clone();
                tokio::spawn(async move {
                    if me.inner.jwks.fetch(&uri).await {
                        me.config_changed();
                    }
                });
            }
        }
    }

    /// The mesh built from the resources and the `announced` workloads: the last one
    /// when neither changed, else a new one, with the hosts that differ.
    fn current_mesh(&self, announced: &[(String, Workload)]) -> CurrentMesh {
        // The generation is read before the resources: a change landing in between
        // then only causes one more rebuild, never a mesh of old resources filed
        // under the new generation (which the next recompute would reuse).
        let generation = self.inner.config_generation.load(Ordering::Acquire);
        let resources = self.resources();
        let inputs = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&generation, &mut h);
            for (_, w) in announced {
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
        if let Some((_, mesh, _)) = last.as_ref().filter(|(fp, _, _)| *fp == inputs) {
            return CurrentMesh {
                mesh: mesh.clone(),
                fresh: false,
                dirty: Some(HashSet::new()),
            };
        }
        let mut mesh = Mesh::new(&resources, (*self.listed_workloads()).clone());
        if let Some(td) = self.trust_domain() {
            mesh.trust_domain = td;
        }
        mesh.outbound_policy = self.outbound_policy();
        // Proxies that announced a pod IP nobody else knows are workloads too; one
        // that announced a known Pod's IP is that Pod's sidecar (cluster mode: the
        // Pod then takes the mesh's mutual TLS).
        let mut known: HashMap<IpAddr, usize> = mesh
            .workloads
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((w.address?, i)))
            .collect();
        for (_, w) in announced {
            let Some(address) = w.address else { continue };
            match known.get(&address) {
                Some(&i) => mesh.workloads[i].sidecar |= w.sidecar,
                None => {
                    known.insert(address, mesh.workloads.len());
                    mesh.workloads.push(w.clone());
                }
            }
        }
        mesh.reindex();
        let mesh = Arc::new(mesh);
        let dirty = last.and_then(|(_, old_mesh, old_resources)| {
            crate::dirty::hosts(&old_resources, &resources, &old_mesh, &mesh)
        });
        // Kept only once everything above is done: were a step to panic, the next
        // recompute builds this mesh again rather than reusing it half-handled.
        *self
            .inner
            .last_mesh
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((inputs, mesh.clone(), resources));
        CurrentMesh {
            mesh,
            fresh: true,
            dirty,
        }
    }

    /// A proxy's own resources; `None` (counted, logged, in its status) when their
    /// compile panicked.
    fn own_units(&self, target: &Target, mesh: &Mesh) -> Option<Arc<Units>> {
        // A sidecar's own resources depend only on what it announced, except its
        // security, which depends on the policies too: recompiled every time (a scan of
        // the policies), the rest reused.
        // A capturing sidecar's own part (its capture targets: every visible service's
        // addresses) depends on the services too: compiled whole each time.
        if target.spec.role == Role::Sidecar
            && !target.spec.capture
            && !target.before.own.is_empty()
        {
            let compiled = catching(|| target.spec.security(mesh, &self.inner.jwks));
            return match compiled {
                Ok(security) => Some(with_security(&target.before.own, &security)),
                Err(message) => {
                    let error = Arc::new(CompileError::Own {
                        proxy: target.spec.id.clone(),
                        message,
                    });
                    self.compile_failed(&error);
                    self.set_compile_error(&target.spec.id, target.connection, Some(error));
                    None
                }
            };
        }
        let spec = &target.spec;
        let compiled = catching(|| {
            #[cfg(any(test, feature = "testing"))]
            self.before_compile(super::Compiling::Own(spec));
            spec.own_units(mesh, &self.inner.jwks)
        });
        match compiled {
            Ok(units) => Some(Arc::new(units)),
            Err(message) => {
                let error = Arc::new(CompileError::Own {
                    proxy: spec.id.clone(),
                    message,
                });
                self.compile_failed(&error);
                self.set_compile_error(&spec.id, target.connection, Some(error));
                None
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
    ///
    /// A compile step that panics pushes nothing to the proxies it concerns (they keep
    /// what they run) and says why in their status; the next recompute tries again.
    pub fn recompute(&self) -> usize {
        let started = Instant::now();
        let targets: Vec<Target> = self
            .proxies()
            .values()
            .map(|p| Target {
                connection: p.connection,
                spec: p.spec.clone(),
                before: p.state.clone(),
                needs_full: p.needs_full,
                failed: p.compile_error.is_some(),
            })
            .collect();
        // The workloads proxies announced, and those remembered from before a restart
        // whose proxies have not reconnected yet.
        let announced: Vec<(String, Workload)> = {
            let connected: HashSet<&str> = targets.iter().map(|t| t.spec.id.as_str()).collect();
            let mut all: Vec<(String, Workload)> = targets
                .iter()
                .filter_map(|t| Some((t.spec.id.clone(), t.spec.workload()?)))
                .collect();
            all.extend(self.remembered_workloads(&connected));
            all
        };
        self.save_workloads(&announced);
        let current = catching(|| {
            #[cfg(any(test, feature = "testing"))]
            self.before_compile(super::Compiling::Mesh);
            self.current_mesh(&announced)
        });
        let CurrentMesh { mesh, fresh, dirty } = match current {
            Ok(current) => current,
            Err(message) => {
                let error = Arc::new(CompileError::Mesh { message });
                self.compile_failed(&error);
                for t in &targets {
                    self.set_compile_error(&t.spec.id, t.connection, Some(error.clone()));
                }
                return 0;
            }
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
        for t in &targets {
            if let Some(key) = group_of(&t.spec) {
                wanted.entry(key).or_insert_with(|| t.spec.clone());
            }
        }
        let t_mesh = started.elapsed();
        let groups = self.compile_groups(&mesh, wanted, fresh, dirty.as_ref());
        let t_groups = started.elapsed();

        let mut version = None;
        let mut pushed = 0;
        // Group diffs are computed once per (what a proxy had, what it gets).
        let mut group_diffs: HashMap<(usize, usize), Arc<Delta>> = HashMap::new();
        for target in targets {
            let group = match group_of(&target.spec).and_then(|k| groups.get(&k)) {
                None => None,
                Some(Ok(units)) => Some(units.clone()),
                Some(Err(error)) => {
                    let (id, connection) = (&target.spec.id, target.connection);
                    self.set_compile_error(id, connection, Some(error.clone()));
                    continue;
                }
            };
            let Some(own) = self.own_units(&target, &mesh) else {
                continue;
            };
            if target.failed {
                self.set_compile_error(&target.spec.id, target.connection, None);
            }
            let Target {
                connection,
                spec,
                before,
                needs_full,
                ..
            } = target;
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
            let v = *version.get_or_insert_with(|| self.inner.connections.next_version());
            let mut proxies = self.proxies();
            let Some(p) = proxies
                .get_mut(&spec.id)
                .filter(|p| p.connection == connection)
            else {
                continue;
            };
            if needs_full {
                if !self.inner.connections.start_full() {
                    continue;
                }
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
}

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

/// `own` with its security resource made `security`: the same `Arc` when nothing
/// changed, so an unchanged sidecar is skipped without a diff.
fn with_security(own: &Arc<Units>, security: &trellis_model::Security) -> Arc<Units> {
    let key = (
        proto::Kind::Security as i32,
        crate::resources::SECURITY.to_string(),
    );
    let mut fresh = Units::new();
    crate::resources::add_security(&mut fresh, security);
    if own.get(&key).map(|u| u.hash) == fresh.get(&key).map(|u| u.hash) {
        return own.clone();
    }
    let mut units = (**own).clone();
    units.remove(&key);
    units.extend(fresh);
    Arc::new(units)
}
