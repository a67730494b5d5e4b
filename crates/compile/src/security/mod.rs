//! Which security policies apply to one proxy's workload, with Istio's scope and
//! precedence, compiled into the model's [`Security`]: PeerAuthentication resolved to
//! a mode per port (`peer.rs`), AuthorizationPolicies typed for evaluation (`authz.rs`,
//! values in `values.rs`), RequestAuthentication JWT rules (`jwt.rs`). The one idea:
//! attachment (`attaches`) is Istio's `ShouldAttachPolicy`, shared by every kind.

mod authz;
mod jwt;
mod peer;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use trellis_api::Resource;
use trellis_api::meta::{PolicyTargetReference, WorkloadSelector};
use trellis_model::Security;

use crate::mesh::Mesh;
use crate::{Inbound, Note, ProxyIdentity};

pub use authz::CUSTOM_NOT_SUPPORTED;

/// The root namespace: its policies without a selector apply to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The label Istio puts on the pods of a Kubernetes Gateway API gateway.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The workload a proxy serves, as policy selection sees it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyTarget<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// A gateway proxy: classic Gateways selecting it make `targetRef`s reach it.
    pub gateway: bool,
    /// Its inbound workload (target) ports, to state the mTLS mode of each.
    pub ports: &'a [u16],
}

/// Compiles every security policy that applies to `target`, with notes on what was
/// left out or is not supported.
pub fn security(mesh: &Mesh, target: &PolicyTarget<'_>) -> (Security, Vec<Note>) {
    let mut notes = Vec::new();
    let classic = classic_gateways(mesh, target);
    let security = Security {
        mtls: peer::mtls(mesh, target),
        authorization: authz::policies(mesh, target, &classic, &mut notes),
        jwt_rules: jwt::rules(mesh, target, &classic),
    };
    (security, notes)
}

/// The security of the sidecar of `who` with these inbound listeners (by their
/// workload ports).
pub fn sidecar_security(
    mesh: &Mesh,
    who: &ProxyIdentity,
    inbound: &[Inbound],
) -> (Security, Vec<Note>) {
    let ports: Vec<u16> = inbound.iter().map(|i| i.app.port()).collect();
    security(
        mesh,
        &PolicyTarget {
            namespace: &who.namespace,
            labels: &who.labels,
            gateway: false,
            ports: &ports,
        },
    )
}

/// The security of the gateway proxy `who`.
pub fn gateway_security(mesh: &Mesh, who: &ProxyIdentity) -> (Security, Vec<Note>) {
    security(
        mesh,
        &PolicyTarget {
            namespace: &who.namespace,
            labels: &who.labels,
            gateway: true,
            ports: &[],
        },
    )
}

/// `namespace/name` of the classic (networking.istio.io) Gateways whose selector
/// picks this gateway proxy.
fn classic_gateways(mesh: &Mesh, target: &PolicyTarget<'_>) -> Vec<(String, String)> {
    if !target.gateway {
        return Vec::new();
    }
    mesh.gateways
        .iter()
        .filter(|(_, gw)| {
            !gw.selector.is_empty()
                && gw
                    .selector
                    .iter()
                    .all(|(k, v)| target.labels.get(k) == Some(v))
        })
        .map(|(r, _)| {
            (
                r.meta.namespace_or_default().to_string(),
                r.meta.name.clone(),
            )
        })
        .collect()
}

/// How a policy says where it attaches.
pub(crate) struct Attachment<'a> {
    pub selector: Option<&'a WorkloadSelector>,
    pub target_refs: Vec<&'a PolicyTargetReference>,
}

impl<'a> Attachment<'a> {
    pub fn new(
        selector: Option<&'a WorkloadSelector>,
        target_ref: Option<&'a PolicyTargetReference>,
        target_refs: &'a [PolicyTargetReference],
    ) -> Self {
        let target_refs = if target_refs.is_empty() {
            target_ref.into_iter().collect()
        } else {
            target_refs.iter().collect()
        };
        Attachment {
            selector,
            target_refs,
        }
    }
}

/// The core group is written `""` or `core`.
fn group_is(r: &PolicyTargetReference, group: &str) -> bool {
    let written = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    written == group
}

/// Istio's `ShouldAttachPolicy`: whether a policy in `policy_ns` (already one of the
/// namespaces looked in) attaches to `target`. A `targetRef` to a classic Gateway
/// reaches the gateways it selects; one to a Kubernetes Gateway the pods labelled
/// with its name; one to a Service or ServiceEntry only a waypoint, which Trellis has
/// none of, so it attaches nowhere. Without target refs, the selector decides.
pub(crate) fn attaches(
    a: &Attachment<'_>,
    policy_ns: &str,
    target: &PolicyTarget<'_>,
    classic: &[(String, String)],
) -> bool {
    let classic_hit = a.target_refs.iter().any(|r| {
        group_is(r, "networking.istio.io")
            && r.kind == "Gateway"
            && classic.iter().any(|(ns, name)| {
                *name == r.name
                    && ns == policy_ns
                    && r.namespace
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == ns)
            })
    });
    if classic_hit {
        return true;
    }
    let selected = || a.selector.is_none_or(|s| s.matches(target.labels));
    let Some(gateway_name) = target.labels.get(GATEWAY_NAME_LABEL) else {
        return a.target_refs.is_empty() && selected();
    };
    if a.target_refs.is_empty() {
        return selected();
    }
    policy_ns == target.namespace
        && a.target_refs.iter().any(|r| {
            group_is(r, "gateway.networking.k8s.io")
                && r.kind == "Gateway"
                && r.name == *gateway_name
                && r.namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == target.namespace)
        })
}

/// The namespaces a workload's policies are looked up in: the root namespace and its
/// own (once, when they are the same).
fn lookup_namespaces<'a>(target: &'a PolicyTarget<'_>) -> Vec<&'a str> {
    if target.namespace == ROOT_NAMESPACE {
        vec![ROOT_NAMESPACE]
    } else {
        vec![ROOT_NAMESPACE, target.namespace]
    }
}

/// `namespace/name`.
fn name_of(r: &Resource) -> String {
    format!("{}/{}", r.meta.namespace_or_default(), r.meta.name)
}

/// Sorts policies oldest first, as Istio does: by `creationTimestamp` (none counts as
/// oldest), then name, then namespace.
pub(crate) fn sort_by_age<T>(items: &mut [(Resource, T)]) {
    items.sort_by_cached_key(|(r, _)| {
        (
            creation_seconds(r),
            r.meta.name.clone(),
            r.meta.namespace_or_default().to_string(),
        )
    });
}

/// `metadata.creationTimestamp` as seconds since the epoch (RFC 3339, as the API
/// server writes it); `None` when absent or unreadable.
fn creation_seconds(r: &Resource) -> Option<i64> {
    let text = r.meta.other.get("creationTimestamp")?.as_str()?;
    parse_rfc3339(text)
}

/// `2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.5+02:00` → seconds since the epoch.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "Z"),
    };
    let mut c = clock.splitn(3, ':');
    let (h, min) = (num(c.next()?)?, num(c.next()?)?);
    let sec = num(c.next()?.split('.').next()?)?;
    let offset_secs = match offset.as_bytes().first() {
        Some(b'+' | b'-') => {
            let (oh, om) = offset[1..].split_once(':')?;
            let v = num(oh)? * 3600 + num(om)? * 60;
            if offset.starts_with('-') { -v } else { v }
        }
        _ => 0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec - offset_secs)
}
