//! ServiceEntry analyzers: TCP ports without addresses, and protocol clashes between
//! ServiceEntries for the same host and port.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::hosts::export_scopes;
use super::json::{scalar_text, text, texts};
use super::names::{NETWORKING, full_name, ns_of};
use crate::messages::{CONFLICTING_SERVICE_ENTRY_PROTOCOL, SERVICE_ENTRY_ADDRESSES_REQUIRED};
use crate::{Analyzer, Context, Reporter};

/// TCP (or unnamed-protocol) ports on a ServiceEntry that has no addresses.
pub struct ProtocolAddressesAnalyzer;

impl Analyzer for ProtocolAddressesAnalyzer {
    fn name(&self) -> &'static str {
        "serviceentry.Analyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that ServiceEntries with TCP ports have addresses"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        if super::control_plane::auto_allocates_addresses(cx) {
            return;
        }
        for se in cx.of(NETWORKING, "ServiceEntry") {
            let has = |v: &serde_json::Value| v.as_array().is_some_and(|a| !a.is_empty());
            // Addresses written by the user, or allocated by the control plane (status).
            if has(&se.raw["spec"]["addresses"]) || has(&se.raw["status"]["addresses"]) {
                continue;
            }
            let ports = se.raw["spec"]["ports"].as_array().into_iter().flatten();
            for (i, port) in ports.enumerate() {
                let protocol = text(&port["protocol"]);
                if !(protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP")) {
                    continue;
                }
                let shown = if protocol.is_empty() {
                    "no protocol, so TCP".to_string()
                } else {
                    format!("protocol {protocol}")
                };
                out.report(
                    &SERVICE_ENTRY_ADDRESSES_REQUIRED,
                    se,
                    Some(&format!("spec.ports[{i}]")),
                    format!(
                        "port {} ({shown}) needs an address to be told apart from other TCP \
                         services, but the ServiceEntry lists none; add spec.addresses (a VIP \
                         or CIDR), give the port an HTTP or TLS protocol, or turn on DNS \
                         address auto-allocation",
                        scalar_text(&port["number"]).unwrap_or_else(|| "?".into())
                    ),
                );
            }
        }
    }
}

/// ServiceEntries visible in the same namespace that give one host and port different protocols.
pub struct ConflictingServiceEntryProtocolAnalyzer;

impl Analyzer for ConflictingServiceEntryProtocolAnalyzer {
    fn name(&self) -> &'static str {
        "serviceentry.ConflictingServiceEntryProtocolAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that ServiceEntries defining the same host and port agree on its protocol"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let entries: Vec<_> = cx.of(NETWORKING, "ServiceEntry").collect();
        // (scope, host, port) -> [(protocol, index into entries)]
        let mut index: BTreeMap<(String, String, u64), Vec<(String, usize)>> = BTreeMap::new();
        for (n, se) in entries.iter().enumerate() {
            let spec = &se.raw["spec"];
            let scopes = export_scopes(&texts(&spec["exportTo"]), ns_of(se));
            let hosts = texts(&spec["hosts"]);
            let ports: Vec<(u64, String)> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let number = p["number"].as_u64().unwrap_or(0);
                    (number, text(&p["protocol"]).to_ascii_uppercase())
                })
                .collect();
            for scope in &scopes {
                for host in &hosts {
                    for (number, protocol) in &ports {
                        index
                            .entry((scope.clone(), host.clone(), *number))
                            .or_default()
                            .push((protocol.clone(), n));
                    }
                }
            }
        }
        let mut reported: HashSet<usize> = HashSet::new();
        for ((scope, host, port), own) in &index {
            let mut group = own.clone();
            // Entries exported everywhere are also seen in each single namespace.
            if scope != "*"
                && let Some(global) = index.get(&("*".to_string(), host.clone(), *port))
            {
                group.extend(global.iter().cloned());
            }
            let protocols: BTreeSet<&str> = group.iter().map(|(p, _)| p.as_str()).collect();
            if protocols.len() < 2 {
                continue;
            }
            let names: BTreeSet<String> =
                group.iter().map(|(_, n)| full_name(entries[*n])).collect();
            let names = names.into_iter().collect::<Vec<_>>().join(", ");
            let protocols = protocols
                .iter()
                .map(|p| if p.is_empty() { "(unset)" } else { p })
                .collect::<Vec<_>>()
                .join(", ");
            for (_, n) in &group {
                if !reported.insert(*n) {
                    continue;
                }
                out.report(
                    &CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                    entries[*n],
                    Some("metadata.name"),
                    format!(
                        "ServiceEntries {names} all define {host} port {port} but with different \
                         protocols ({protocols}); only one protocol can be used, so make them \
                         agree or merge the entries"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Options, analyze};

    fn run(text: &str) -> Vec<String> {
        let resources = trellis_api::load_str("t.yaml", text).resources;
        let options = Options {
            only: vec!["serviceentry.ConflictingServiceEntryProtocolAnalyzer".into()],
            ..Options::default()
        };
        let mut names: Vec<String> = analyze(&resources, &options)
            .expect("known analyzer")
            .into_iter()
            .map(|m| m.resource())
            .collect();
        names.sort();
        names
    }

    fn entry(name: &str, ns: &str, export: &str, protocol: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hosts: [example.com]\n  exportTo: [{export}]\n  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n---\n"
        )
    }

    #[test]
    fn an_entry_exported_everywhere_clashes_with_a_local_one() {
        let text = entry("local", "a", "'.'", "HTTP") + &entry("global", "b", "'*'", "TCP");
        assert_eq!(
            run(&text),
            ["ServiceEntry a/local", "ServiceEntry b/global"]
        );
    }

    #[test]
    fn entries_in_disjoint_scopes_or_agreeing_do_not_clash() {
        let text = entry("one", "a", "'.'", "HTTP") + &entry("two", "b", "'.'", "TCP");
        assert!(run(&text).is_empty());
        let text = entry("one", "a", "'*'", "http") + &entry("two", "b", "'*'", "HTTP");
        assert!(
            run(&text).is_empty(),
            "protocols compare case-insensitively"
        );
    }
}
