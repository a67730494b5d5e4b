//! What changed between two meshes, as the set of service hosts whose compiled
//! outbound units may differ: the hosts of changed VirtualServices, DestinationRules,
//! Services and ServiceEntries, and the services that select a workload that came,
//! went or changed. Anything this cannot place (a Sidecar, an unknown kind, a
//! wildcard host) makes every host dirty (`None`).

use std::collections::{HashMap, HashSet};

use trellis_api::{Resource, Spec};
use trellis_compile::{Mesh, Workload, fqdn};

/// The dirty hosts, or `None` for "everything".
pub fn hosts(
    old: &[Resource],
    new: &[Resource],
    old_mesh: &Mesh,
    new_mesh: &Mesh,
) -> Option<HashSet<String>> {
    let mut dirty = HashSet::new();
    let key = |r: &Resource| crate::store::key(r);
    let before: HashMap<_, &Resource> = old.iter().map(|r| (key(r), r)).collect();
    let after: HashMap<_, &Resource> = new.iter().map(|r| (key(r), r)).collect();
    let mut changed: Vec<&Resource> = Vec::new();
    for (k, r) in &after {
        match before.get(k) {
            Some(b) if b.raw == r.raw => {}
            Some(b) => {
                changed.push(b);
                changed.push(r);
            }
            None => changed.push(r),
        }
    }
    changed.extend(
        before
            .iter()
            .filter(|(k, _)| !after.contains_key(*k))
            .map(|(_, r)| *r),
    );
    for r in changed {
        let ns = r.meta.namespace_or_default();
        let mut add = |host: String| -> Option<()> {
            if host.contains('*') {
                return None;
            }
            dirty.insert(host);
            Some(())
        };
        match &r.spec {
            Spec::VirtualService(vs) => {
                for h in &vs.hosts {
                    add(fqdn(h, ns))?;
                }
            }
            Spec::DestinationRule(dr) => add(fqdn(&dr.host, ns))?,
            Spec::Service(_) => add(fqdn(&r.meta.name, ns))?,
            // A slice shapes only the Service it names (none without the label).
            Spec::EndpointSlice(_) => {
                if let Some(service) = r.meta.labels.get(trellis_api::kube::SERVICE_NAME_LABEL) {
                    add(fqdn(service, ns))?;
                }
            }
            Spec::ServiceEntry(se) => {
                for h in &se.hosts {
                    add(h.clone())?;
                }
                // Its workload selector and endpoints are covered by the hosts.
            }
            // Workloads: compared below through the meshes they produce.
            Spec::WorkloadEntry(_) | Spec::Pod(_) | Spec::Deployment(_) => {}
            // Kinds that do not shape a sidecar's outbound routes and clusters.
            Spec::Gateway(_)
            | Spec::Secret(_)
            | Spec::Namespace(_)
            | Spec::ServiceAccount(_)
            | Spec::PeerAuthentication(_)
            | Spec::AuthorizationPolicy(_)
            | Spec::RequestAuthentication(_)
            | Spec::Telemetry(_) => {}
            _ => return None,
        }
    }
    // Workloads that differ: every service (in either mesh) that selects one.
    let old_w: HashSet<&Workload> = old_mesh.workloads.iter().collect();
    let new_w: HashSet<&Workload> = new_mesh.workloads.iter().collect();
    let moved: Vec<&Workload> = old_mesh
        .workloads
        .iter()
        .filter(|w| !new_w.contains(w))
        .chain(new_mesh.workloads.iter().filter(|w| !old_w.contains(w)))
        .collect();
    if !moved.is_empty() {
        for mesh in [old_mesh, new_mesh] {
            for s in &mesh.services {
                let Some(sel) = &s.selector else { continue };
                let selects = |w: &&Workload| {
                    (!s.hostname.ends_with(".svc.cluster.local") || w.namespace == s.namespace)
                        && sel.iter().all(|(k, v)| w.labels.get(k) == Some(v))
                };
                if moved.iter().any(selects) {
                    dirty.insert(s.hostname.clone());
                }
            }
        }
    }
    Some(dirty)
}
