//! `virtualservice.DestinationHostAnalyzer`: every route and mirror destination must be
//! a Service or ServiceEntry host visible to the VirtualService, on a port it exposes;
//! and gateway routes are told when another VirtualService's subset split skips them.
//! Subset names are `destination_rule.rs`'s to check.

use std::collections::BTreeMap;

use trellis_api::Resource;

use super::{Destination, mirror_destinations, route_destinations, virtual_services};
use crate::analyzers::hosts::ServiceHosts;
use crate::analyzers::json::{items, number, text, texts};
use crate::analyzers::names::{full_name, ns_of};
use crate::messages::{
    INGRESS_ROUTE_RULES_NOT_AFFECTED, REFERENCED_RESOURCE_NOT_FOUND,
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
};
use crate::{Analyzer, Context, Reporter};

/// The ports a Service (`port`) or ServiceEntry (`number`) exposes.
fn service_ports(target: &Resource) -> Vec<u64> {
    let field = if target.kind == "ServiceEntry" {
        "number"
    } else {
        "port"
    };
    items(&target.raw["spec"]["ports"])
        .iter()
        .map(|p| number(&p[field]))
        .collect()
}

/// `virtualservice.DestinationHostAnalyzer`: destination hosts must be Services or
/// ServiceEntry hosts visible to the VirtualService, on a port they expose.
pub struct DestinationHostAnalyzer;

impl Analyzer for DestinationHostAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationHostAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks the destination hosts associated with each virtual service"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let hosts = ServiceHosts::new(cx);
        let subset_destinations = subset_destinations(cx);
        for vs in virtual_services(cx) {
            let vs_ns = ns_of(vs);
            let export_to = texts(&vs.raw["spec"]["exportTo"]);
            let all = route_destinations(vs)
                .into_iter()
                .chain(mirror_destinations(vs));
            for d in all {
                let host = d.host();
                let what = if d.mirror { "mirror host" } else { "host" };
                let Some(target) = hosts.lookup(vs_ns, &export_to, host) else {
                    if host.is_empty() {
                        out.report(
                            &REFERENCED_RESOURCE_NOT_FOUND,
                            vs,
                            Some(&d.path),
                            "this route has no destination host; add \
                             `destination: {host: ...}` naming a Service or ServiceEntry host",
                        );
                        continue;
                    }
                    out.report(
                        &REFERENCED_RESOURCE_NOT_FOUND,
                        vs,
                        Some(&d.path),
                        format!(
                            "{what} `{host}` not found: no Service or ServiceEntry {} has \
                             it; check the name, its namespace \
                             (`name.namespace.svc.cluster.local`) and the exportTo of both",
                            if vs_ns.is_empty() {
                                "visible here".to_string()
                            } else {
                                format!("visible from namespace `{vs_ns}`")
                            }
                        ),
                    );
                    continue;
                };
                check_port(out, vs, &d, &service_ports(target));
            }
            check_ingress_subsets(out, vs, &subset_destinations);
        }
    }
}

fn check_port(out: &mut Reporter, vs: &Resource, d: &Destination<'_>, ports: &[u64]) {
    let host = d.host();
    let port = &d.value["port"];
    if port.is_null() {
        if ports.len() > 1 {
            let list: Vec<String> = ports.iter().map(u64::to_string).collect();
            out.report(
                &VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                vs,
                Some(&d.path),
                format!(
                    "`{host}` exposes several ports ({}); add `port: {{number: ...}}` to the \
                     destination to say which one",
                    list.join(", ")
                ),
            );
        }
        return;
    }
    let n = number(&port["number"]);
    if !ports.contains(&n) {
        let list: Vec<String> = ports.iter().map(u64::to_string).collect();
        out.report(
            &REFERENCED_RESOURCE_NOT_FOUND,
            vs,
            Some(&format!("{}.port.number", d.path)),
            format!(
                "`{host}:{n}` not found: `{host}` exposes {}; use one of those ports",
                if list.is_empty() {
                    "no ports".to_string()
                } else {
                    format!("port(s) {}", list.join(", "))
                }
            ),
        );
    }
}

/// VirtualServices routing to subsets of their own hosts: host -> those VirtualServices
/// (once per such route).
fn subset_destinations(cx: &Context<'_>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for vs in virtual_services(cx) {
        let vs_hosts = texts(&vs.raw["spec"]["hosts"]);
        for rule in items(&vs.raw["spec"]["http"]) {
            for route in items(&rule["route"]) {
                let d = &route["destination"];
                if text(&d["subset"]).is_empty() {
                    continue;
                }
                let host = text(&d["host"]);
                for h in vs_hosts.iter().filter(|h| *h == host) {
                    out.entry(h.clone()).or_default().push(full_name(vs));
                }
            }
        }
    }
    out
}

/// On a gateway, a route to a host without a subset ignores the subset routing that
/// another VirtualService defines for that host (it only applies to sidecars).
fn check_ingress_subsets(
    out: &mut Reporter,
    vs: &Resource,
    subsets: &BTreeMap<String, Vec<String>>,
) {
    if items(&vs.raw["spec"]["gateways"]).is_empty() {
        return;
    }
    for (i, rule) in items(&vs.raw["spec"]["http"]).iter().enumerate() {
        for (j, route) in items(&rule["route"]).iter().enumerate() {
            let d = &route["destination"];
            if d.is_null() || !text(&d["subset"]).is_empty() {
                continue;
            }
            let host = text(&d["host"]);
            for other in subsets.get(host).into_iter().flatten() {
                out.report(
                    &INGRESS_ROUTE_RULES_NOT_AFFECTED,
                    vs,
                    Some(&format!("spec.http[{i}].route[{j}].destination.host")),
                    format!(
                        "VirtualService {other} splits `{host}` into subsets, but that routing \
                         does not apply to requests entering through the gateways of this \
                         VirtualService; route to a subset here too if ingress traffic should \
                         follow it"
                    ),
                );
            }
        }
    }
}
