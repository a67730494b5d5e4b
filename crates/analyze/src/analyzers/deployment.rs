//! `deployment.*`: how a Deployment's pods and the Services selecting them fit together.

use std::collections::BTreeMap;

use super::json::string_map;
use super::names::{full_name, ns_of};
use super::workloads::{
    namespace_injection, namespace_named, services_selecting, target_port_text, workload_in_mesh,
};
use crate::messages::{DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES, DEPLOYMENT_CONFLICTING_PORTS};
use crate::{Analyzer, Context, Reporter};

/// Mesh Deployments whose pods sit behind Services that disagree on a port.
pub struct MultiServiceAnalyzer;

impl Analyzer for MultiServiceAnalyzer {
    fn name(&self) -> &'static str {
        "deployment.MultiServiceAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that the Services selecting a mesh Deployment agree on each port's protocol and target"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for deploy in cx.of("apps", "Deployment") {
            let template = &deploy.raw["spec"]["template"];
            let ns = ns_of(deploy);
            let namespace_injects = || {
                namespace_named(cx, ns)
                    .and_then(namespace_injection)
                    .unwrap_or(false)
            };
            if !workload_in_mesh(&template["metadata"], &template["spec"], namespace_injects) {
                continue;
            }
            let pod_labels = string_map(&template["metadata"]["labels"]);
            let services: Vec<_> = services_selecting(cx, ns, &pod_labels).collect();
            if services.is_empty() {
                continue;
            }

            // port -> protocol -> services, and targetPort -> port -> service
            let mut by_port: BTreeMap<i64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
            let mut by_target: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
            for svc in &services {
                let name = full_name(svc);
                for port in svc.raw["spec"]["ports"].as_array().into_iter().flatten() {
                    let Some(number) = port["port"].as_i64() else {
                        continue;
                    };
                    let protocol = port["protocol"].as_str().unwrap_or("TCP").to_string();
                    by_port
                        .entry(number)
                        .or_default()
                        .entry(protocol)
                        .or_default()
                        .push(name.clone());
                    let target = target_port_text(port).unwrap_or_else(|| number.to_string());
                    by_target
                        .entry(target)
                        .or_default()
                        .insert(number, name.clone());
                }
            }

            for (port, protocols) in &by_port {
                if protocols.len() < 2 {
                    continue;
                }
                let detail = protocols
                    .iter()
                    .map(|(p, svcs)| format!("{p} by {}", svcs.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ");
                out.report(
                    &DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES,
                    deploy,
                    Some("metadata.name"),
                    format!(
                        "the pods of deployment {} are selected by services that use port {port} \
                         with different protocols ({detail}); a port can carry only one protocol, \
                         so give the services the same protocol for it or select different pods",
                        deploy.meta.name
                    ),
                );
            }

            for (target, ports) in &by_target {
                if ports.len() < 2 {
                    continue;
                }
                let svcs: Vec<&str> = ports.values().map(String::as_str).collect();
                let numbers: Vec<String> = ports.keys().map(i64::to_string).collect();
                out.report(
                    &DEPLOYMENT_CONFLICTING_PORTS,
                    deploy,
                    Some("metadata.name"),
                    format!(
                        "the pods of deployment {} are selected by services {} that send targetPort \
                         {target} through different ports ({}); services selecting the same \
                         workload must use the same port for the same targetPort",
                        deploy.meta.name,
                        svcs.join(", "),
                        numbers.join(", ")
                    ),
                );
            }
        }
    }
}
