//! Checks of VirtualServices against what they reference: gateways (`gateway`),
//! destination hosts and ports (`destination_host`), DestinationRule subsets
//! (`destination_rule`), other VirtualServices on the mesh gateway (`conflicting_hosts`),
//! and the RequestAuthentication that JWT claim routing needs (`jwt_claims`).
//! Each reads `Resource::raw`; this module holds the destinations they share.

mod conflicting_hosts;
mod destination_host;
mod destination_rule;
mod gateway;
mod jwt_claims;

pub use conflicting_hosts::ConflictingMeshGatewayHostsAnalyzer;
pub use destination_host::DestinationHostAnalyzer;
pub use destination_rule::DestinationRuleAnalyzer;
pub use gateway::GatewayAnalyzer;
pub use jwt_claims::JwtClaimRouteAnalyzer;

use serde_json::Value;
use trellis_api::Resource;

use super::json::{items, text};
use super::names::NETWORKING;
use crate::Context;

/// The gateway name that means "the sidecars of the mesh".
const MESH_GATEWAY: &str = "mesh";

fn virtual_services<'c>(cx: &'c Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of(NETWORKING, "VirtualService")
}

/// One destination of a VirtualService, with where it is written.
struct Destination<'a> {
    /// The `destination:` (or `mirror:`) object; null when the route has none.
    value: &'a Value,
    /// Field path for the line, such as `spec.http[0].route[1].destination`.
    path: String,
    mirror: bool,
}

impl Destination<'_> {
    fn host(&self) -> &str {
        text(&self.value["host"])
    }
    fn subset(&self) -> &str {
        text(&self.value["subset"])
    }
}

/// Every `route[].destination` of the tcp, tls and http rules.
fn route_destinations(vs: &Resource) -> Vec<Destination<'_>> {
    let mut out = Vec::new();
    for kind in ["tcp", "tls", "http"] {
        for (i, rule) in items(&vs.raw["spec"][kind]).iter().enumerate() {
            for (j, route) in items(&rule["route"]).iter().enumerate() {
                out.push(Destination {
                    value: &route["destination"],
                    path: format!("spec.{kind}[{i}].route[{j}].destination"),
                    mirror: false,
                });
            }
        }
    }
    out
}

/// Every `mirror` and `mirrors[].destination` of the http rules.
fn mirror_destinations(vs: &Resource) -> Vec<Destination<'_>> {
    let mut out = Vec::new();
    for (i, rule) in items(&vs.raw["spec"]["http"]).iter().enumerate() {
        if !rule["mirror"].is_null() {
            out.push(Destination {
                value: &rule["mirror"],
                path: format!("spec.http[{i}].mirror"),
                mirror: true,
            });
        }
        for (j, m) in items(&rule["mirrors"]).iter().enumerate() {
            out.push(Destination {
                value: &m["destination"],
                path: format!("spec.http[{i}].mirrors[{j}].destination"),
                mirror: true,
            });
        }
    }
    out
}
