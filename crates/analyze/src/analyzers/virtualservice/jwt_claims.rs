//! `virtualservice.JWTClaimRouteAnalyzer`: a VirtualService that routes on JWT claims
//! (`@request.auth.claims` headers) at a gateway needs a RequestAuthentication on the
//! gateway's Pods, or the claims never exist. A missing Gateway is `gateway.rs`'s.

use std::collections::{BTreeMap, BTreeSet};

use trellis_api::Resource;

use super::{MESH_GATEWAY, virtual_services};
use crate::analyzers::json::{items, string_map, texts};
use crate::analyzers::names::{NETWORKING, join_name, ns_of, short_or_full};
use crate::analyzers::selectors::{gateway_selector, selector_matches};
use crate::analyzers::workloads::{pod_in_text, pods_selected};
use crate::messages::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN;
use crate::{Analyzer, Context, Reporter};

/// Header prefix that routes on a JWT claim.
const JWT_CLAIM_HEADER: &str = "@request.auth.claims";

/// The first header key (sorted) a VirtualService matches on that is a JWT claim.
fn jwt_claim_key(vs: &Resource) -> Option<String> {
    let mut keys = BTreeSet::new();
    for rule in items(&vs.raw["spec"]["http"]) {
        for m in items(&rule["match"]) {
            for field in ["headers", "withoutHeaders"] {
                for key in m[field].as_object().into_iter().flatten().map(|(k, _)| k) {
                    if key.starts_with(JWT_CLAIM_HEADER) {
                        keys.insert(key.clone());
                    }
                }
            }
        }
    }
    keys.into_iter().next()
}

/// `virtualservice.JWTClaimRouteAnalyzer`: routing on JWT claims at a gateway needs a
/// RequestAuthentication on the gateway Pods, or the claims are never there.
pub struct JwtClaimRouteAnalyzer;

impl Analyzer for JwtClaimRouteAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.JWTClaimRouteAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks the VirtualService using JWT claim based routing has corresponding RequestAuthentication"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let mut request_authn: BTreeMap<&str, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for ra in cx.of("security.istio.io", "RequestAuthentication") {
            request_authn
                .entry(ns_of(ra))
                .or_default()
                .push(string_map(&ra.raw["spec"]["selector"]["matchLabels"]));
        }
        let istio_ns = cx.options().istio_namespace.as_str();
        for vs in virtual_services(cx) {
            let Some(key) = jwt_claim_key(vs) else {
                continue;
            };
            let vs_ns = ns_of(vs);
            for gw_ref in texts(&vs.raw["spec"]["gateways"]) {
                if gw_ref == MESH_GATEWAY {
                    continue;
                }
                let (gw_ns, gw_name) = short_or_full(vs_ns, &gw_ref);
                // A missing Gateway is the GatewayAnalyzer's to report.
                let Some(gw) = cx.find(NETWORKING, "Gateway", &gw_ns, &gw_name) else {
                    continue;
                };
                let selector = gateway_selector(gw);
                for pod in pods_selected(cx, &selector) {
                    let covered = [istio_ns, ns_of(pod)]
                        .iter()
                        .flat_map(|n| request_authn.get(n).into_iter().flatten())
                        .any(|sel| selector_matches(sel, &pod.meta.labels));
                    if !covered {
                        out.report(
                            &JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN,
                            vs,
                            Some("spec.http"),
                            format!(
                                "routes on JWT claim `{key}` at gateway {}, but no \
                                 RequestAuthentication applies to {}; without one the \
                                 token is not validated and the claim is never available, so \
                                 add a RequestAuthentication selecting the gateway Pods (in \
                                 namespace {})",
                                join_name(&gw_ns, &gw_name),
                                pod_in_text(cx, pod),
                                if ns_of(pod) == istio_ns || ns_of(pod).is_empty() {
                                    format!("`{istio_ns}`")
                                } else {
                                    format!("`{istio_ns}` or `{}`", ns_of(pod))
                                }
                            ),
                        );
                    }
                }
            }
        }
    }
}
