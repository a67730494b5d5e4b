//! `virtualservice.DestinationRuleAnalyzer`: a destination's subset must be defined by
//! a DestinationRule for that host (hosts compared as FQDNs). Whether the subset
//! selects any Pod is `analyzers::destinationrule`'s question.

use std::collections::HashSet;

use super::{mirror_destinations, route_destinations, virtual_services};
use crate::analyzers::hosts::{resource_name_from_host, to_fqdn};
use crate::analyzers::json::{items, text};
use crate::analyzers::names::{NETWORKING, ns_of};
use crate::messages::REFERENCED_RESOURCE_NOT_FOUND;
use crate::{Analyzer, Context, Reporter};

/// `virtualservice.DestinationRuleAnalyzer`: a destination subset must be defined by a
/// DestinationRule for that host.
pub struct DestinationRuleAnalyzer;

impl Analyzer for DestinationRuleAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationRuleAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks the destination rules associated with each virtual service"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let mut defined: HashSet<(String, String, String)> = HashSet::new();
        for dr in cx.of(NETWORKING, "DestinationRule") {
            let dr_ns = ns_of(dr);
            let host = to_fqdn(dr_ns, text(&dr.raw["spec"]["host"]));
            let (n, name) = resource_name_from_host(dr_ns, &host);
            for subset in items(&dr.raw["spec"]["subsets"]) {
                defined.insert((n.clone(), name.clone(), text(&subset["name"]).to_string()));
            }
        }
        for vs in virtual_services(cx) {
            let vs_ns = ns_of(vs);
            let all = route_destinations(vs)
                .into_iter()
                .chain(mirror_destinations(vs));
            for d in all {
                let subset = d.subset();
                if subset.is_empty() {
                    continue;
                }
                let (n, name) = resource_name_from_host(vs_ns, d.host());
                if !defined.contains(&(n, name, subset.to_string())) {
                    out.report(
                        &REFERENCED_RESOURCE_NOT_FOUND,
                        vs,
                        Some(&format!("{}.subset", d.path)),
                        format!(
                            "subset `{subset}` of `{}` is not defined by any DestinationRule \
                             for that host; add it to the DestinationRule's `subsets` or fix \
                             the name",
                            d.host()
                        ),
                    );
                }
            }
        }
    }
}
