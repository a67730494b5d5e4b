//! The unit cache: each sidecar group's outbound resources (a virtual host per service
//! port and the clusters it routes to), compiled and encoded once per group and kept
//! by `(host, port)` until a host they depend on changes. It compiles groups, several
//! threads at a time; which proxies get the result, and when, is `push.rs`'s business.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use trellis_compile::Mesh;

use super::ControlPlane;
use super::guard::{CompileError, catching, group_name};
use crate::node::ProxySpec;
use crate::resources::{Unit, Units};

/// Sidecars whose outbound config is the same: by namespace, and by labels when some
/// resource makes the outbound config depend on them.
pub(super) type GroupKey = (String, Vec<(String, String)>);

/// A group's outbound resources, or why they could not be compiled.
pub(super) type Compiled = Result<Arc<Units>, Arc<CompileError>>;

/// One group to compile: the proxy it stands for, its units so far, and the outcome
/// (`None` until compiled; a panic's message if the compile failed).
struct Job {
    key: GroupKey,
    spec: Arc<ProxySpec>,
    cache: UnitCache,
    outcome: Option<Result<Arc<Units>, String>>,
}

/// Each sidecar group's outbound resources as last compiled, and its units.
#[derive(Default)]
pub(super) struct GroupCache {
    groups: HashMap<GroupKey, Arc<Units>>,
    units: HashMap<GroupKey, UnitCache>,
}

/// A compiled service-port unit, kept encoded (the typed form is dropped to save
/// memory: with a thousand proxies in ten namespaces this is most of what the
/// control plane holds).
struct CachedUnit {
    /// The virtual host's name and every domain it claims.
    name: String,
    domains: Vec<String>,
    /// Hosts the unit was built from.
    deps: BTreeSet<String>,
    vhost: Unit,
    clusters: Vec<(String, Unit)>,
}

/// A group's units by `(host, port)`, kept until a host they depend on changes, with
/// the order they were assembled in and the resources that assembly gave.
#[derive(Default)]
struct UnitCache {
    units: HashMap<(String, u16), Arc<CachedUnit>>,
    order: Vec<(String, u16)>,
    encoded: Option<Arc<Units>>,
}

impl ControlPlane {
    fn group_cache(&self) -> std::sync::MutexGuard<'_, GroupCache> {
        self.inner.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compiles and encodes each group's outbound resources, several threads at a
    /// time, reusing every unit that depends on no `dirty` host (all are rebuilt when
    /// `dirty` is `None`). A group whose resources did not change keeps its previous
    /// `Arc`, so proxies in it see no change without comparing anything.
    ///
    /// A group whose compile panics is an error here, counted and logged; it is
    /// forgotten with its units, so the next recompute compiles it again from scratch.
    pub(super) fn compile_groups(
        &self,
        mesh: &Mesh,
        wanted: BTreeMap<GroupKey, Arc<ProxySpec>>,
        fresh: bool,
        dirty: Option<&HashSet<String>>,
    ) -> HashMap<GroupKey, Compiled> {
        let mut out = HashMap::new();
        let mut work: Vec<Job> = Vec::new();
        {
            let mut locked = self.group_cache();
            let GroupCache {
                groups: previous,
                units: caches,
            } = &mut *locked;
            for (key, spec) in wanted {
                match previous.get(&key) {
                    // Same mesh as last time: the group's resources cannot differ.
                    Some(units) if !fresh => {
                        out.insert(key, Ok(units.clone()));
                    }
                    _ => {
                        let cache = caches.remove(&key).unwrap_or_default();
                        work.push(Job {
                            key,
                            spec,
                            cache,
                            outcome: None,
                        });
                    }
                }
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let chunk = work.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        for job in part {
                            let cache = std::mem::take(&mut job.cache);
                            let spec = &job.spec;
                            let outcome = catching(|| {
                                #[cfg(any(test, feature = "testing"))]
                                self.before_compile(super::Compiling::Group(spec));
                                outbound_units(mesh, spec, cache, dirty)
                            });
                            job.outcome = Some(outcome.map(|(units, next)| {
                                job.cache = next;
                                units
                            }));
                        }
                    })
                })
                .collect();
            for h in handles {
                // Each compile is caught, so a thread does not panic; if one did, the
                // jobs it had not finished have no outcome and fail below.
                let _ = h.join();
            }
        });
        let mut failures = Vec::new();
        {
            let mut locked = self.group_cache();
            let GroupCache {
                groups: previous,
                units: caches,
            } = &mut *locked;
            for job in work {
                match job.outcome {
                    Some(Ok(units)) => {
                        let arc = match previous.get(&job.key) {
                            Some(old) if Arc::ptr_eq(old, &units) || **old == *units => old.clone(),
                            _ => units,
                        };
                        caches.insert(job.key.clone(), job.cache);
                        out.insert(job.key, Ok(arc));
                    }
                    failed => {
                        let group = group_name(&job.key);
                        let error = Arc::new(match failed {
                            Some(Err(message)) => CompileError::Group { group, message },
                            _ => CompileError::GroupUnfinished { group },
                        });
                        failures.push(error.clone());
                        out.insert(job.key, Err(error));
                    }
                }
            }
            caches.retain(|k, _| matches!(out.get(k), Some(Ok(_))));
            *previous = out
                .iter()
                .filter_map(|(k, compiled)| Some((k.clone(), compiled.as_ref().ok()?.clone())))
                .collect();
        }
        for error in &failures {
            self.compile_failed(error);
        }
        out
    }
}

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
                .map(|c| (c.name.clone(), crate::resources::cluster_unit(c)))
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
