//! `virtualservice.ConflictingMeshGatewayHostsAnalyzer`: two VirtualServices bound to
//! the mesh must not define the same host where both are visible. Visibility is per
//! exportTo scope; a VirtualService exported everywhere is visible in every scope.

use std::collections::{BTreeMap, HashSet};

use trellis_api::Resource;

use super::{MESH_GATEWAY, virtual_services};
use crate::analyzers::hosts::{
    EXPORT_ALL, export_scopes, host_matches, is_wildcard, scoped_fqdn, split_scoped,
};
use crate::analyzers::json::texts;
use crate::analyzers::names::{full_name, ns_of};
use crate::messages::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS;
use crate::{Analyzer, Context, Reporter};

/// `virtualservice.ConflictingMeshGatewayHostsAnalyzer`: two VirtualServices bound to the
/// mesh must not define the same host for the same namespaces.
pub struct ConflictingMeshGatewayHostsAnalyzer;

impl Analyzer for ConflictingMeshGatewayHostsAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks if multiple virtual services associated with the mesh gateway have conflicting hosts"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        // scope/fqdn -> VirtualServices bound to the mesh that define it
        let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for vs in virtual_services(cx) {
            let gateways = texts(&vs.raw["spec"]["gateways"]);
            if !gateways.is_empty() && !gateways.iter().any(|g| g == MESH_GATEWAY) {
                continue;
            }
            let vs_ns = ns_of(vs);
            let export_to = texts(&vs.raw["spec"]["exportTo"]);
            for scope in export_scopes(&export_to, vs_ns) {
                for host in texts(&vs.raw["spec"]["hosts"]) {
                    let list = by_host
                        .entry(scoped_fqdn(&scope, vs_ns, &host))
                        .or_default();
                    if !list.iter().any(|r| std::ptr::eq(*r, vs)) {
                        list.push(vs);
                    }
                }
            }
        }
        // Hosts exported to every namespace, split for quick lookups from other scopes.
        let mut everywhere: BTreeMap<&str, &Vec<&Resource>> = BTreeMap::new();
        let mut everywhere_wildcards: Vec<(&str, &Vec<&Resource>)> = Vec::new();
        for (key, list) in &by_host {
            let (scope, host) = split_scoped(key);
            if scope != EXPORT_ALL {
                continue;
            }
            if is_wildcard(host) {
                everywhere_wildcards.push((host, list));
            } else {
                everywhere.insert(host, list);
            }
        }
        let mut reported = HashSet::new();
        for (key, list) in &by_host {
            let (scope, host) = split_scoped(key);
            let mut list = list.clone();
            if scope != EXPORT_ALL {
                // VirtualServices exported everywhere are visible in this scope too.
                let exact: Vec<(&str, &Vec<&Resource>)> = if is_wildcard(host) {
                    everywhere.iter().map(|(h, l)| (*h, *l)).collect()
                } else {
                    everywhere
                        .get_key_value(host)
                        .map(|(h, l)| (*h, *l))
                        .into_iter()
                        .collect()
                };
                for (other_host, others) in exact
                    .into_iter()
                    .chain(everywhere_wildcards.iter().copied())
                {
                    if host_matches(host, other_host) {
                        list.extend(others.iter().copied());
                    }
                }
            }
            if list.len() < 2 {
                continue;
            }
            let names: Vec<String> = list.iter().map(|r| full_name(r)).collect();
            for vs in &list {
                if !reported.insert(full_name(vs)) {
                    continue;
                }
                out.report(
                    &CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                    vs,
                    Some("metadata.name"),
                    format!(
                        "VirtualServices {} are all bound to the mesh and define host `{host}` \
                         (visible in {}); which one sidecars use is undefined, so merge them \
                         into one VirtualService or narrow their exportTo",
                        names.join(", "),
                        if scope == EXPORT_ALL {
                            "every namespace".to_string()
                        } else {
                            format!("namespace `{scope}`")
                        }
                    ),
                );
            }
        }
    }
}
