//! PeerAuthentication resolved for one workload, as Istio composes it: the oldest
//! mesh-wide policy (root namespace, no selector), then the oldest namespace-wide one,
//! then the oldest selecting the workload (not in the root namespace); each UNSET
//! inherits from the scope above, PERMISSIVE at the top; `portLevelMtls` (workload
//! ports) only from the workload policy, UNSET there meaning the workload's mode.

use trellis_api::security::{MtlsMode as Written, PeerAuthentication, parse_port_key};
use trellis_model::security::{MtlsMode, MtlsPolicy};

use super::{PolicyTarget, ROOT_NAMESPACE, name_of};
use crate::mesh::Mesh;

/// The written mode, or `None` for UNSET.
fn resolved(mode: Written) -> Option<MtlsMode> {
    match mode {
        Written::Unset => None,
        Written::Disable => Some(MtlsMode::Disable),
        Written::Permissive => Some(MtlsMode::Permissive),
        Written::Strict => Some(MtlsMode::Strict),
    }
}

/// The mTLS mode of `target`'s inbound side, per port.
pub(super) fn mtls(mesh: &Mesh, target: &PolicyTarget<'_>) -> MtlsPolicy {
    // Policies are sorted oldest first, so the first of each scope wins.
    let mut mesh_wide = None;
    let mut namespace_wide = None;
    let mut workload = None;
    for (r, pa) in &mesh.peer_authentications {
        let ns = r.meta.namespace_or_default();
        let pa: &PeerAuthentication = pa;
        if !pa.selects_workloads() {
            if ns == ROOT_NAMESPACE {
                mesh_wide.get_or_insert((r, pa));
            } else if ns == target.namespace {
                namespace_wide.get_or_insert((r, pa));
            }
        } else if ns == target.namespace
            && ns != ROOT_NAMESPACE
            && pa
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(target.labels))
        {
            workload.get_or_insert((r, pa));
        }
    }
    let mut out = MtlsPolicy::default();
    for (r, pa) in [mesh_wide, namespace_wide, workload].into_iter().flatten() {
        out.from.push(name_of(r));
        if let Some(mode) = resolved(pa.mode()) {
            out.mode = mode;
        }
    }
    if let Some((_, pa)) = workload {
        for (key, setting) in pa.port_level_mtls.iter().flatten() {
            if let Ok(port) = parse_port_key(key) {
                out.ports
                    .insert(port, resolved(setting.mode).unwrap_or(out.mode));
            }
        }
    }
    for port in target.ports {
        out.ports.entry(*port).or_insert(out.mode);
    }
    out
}
