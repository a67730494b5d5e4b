//! `service.*`: checks on Kubernetes Services.

use super::control_plane::{is_control_plane, is_generated_by_gateway_controller};
use super::names::full_name;
use super::workloads::{service_port_protocol, services, target_port_text};
use crate::messages::{
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME, PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
};
use crate::{Analyzer, Context, Reporter};

/// Service ports whose protocol Istio cannot tell from the name or `appProtocol`.
pub struct PortNameAnalyzer;

impl Analyzer for PortNameAnalyzer {
    fn name(&self) -> &'static str {
        "service.PortNameAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that Service ports name their protocol (<protocol>[-<suffix>] or appProtocol)"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for svc in services(cx) {
            let labels = &svc.meta.labels;
            if is_control_plane(labels) || is_generated_by_gateway_controller(labels) {
                continue;
            }
            let external_name = svc.raw["spec"]["type"] == "ExternalName";
            let ports = svc.raw["spec"]["ports"].as_array().into_iter().flatten();
            for (i, port) in ports.enumerate() {
                let path = format!("spec.ports[{i}]");
                let name = port["name"].as_str().unwrap_or("");
                let number = port["port"].as_i64().unwrap_or(0);
                let protocol = service_port_protocol(port);
                let called = if name.is_empty() {
                    "has no name".to_string()
                } else {
                    format!("is named `{name}`")
                };
                if external_name && (protocol.is_none() || name == "tcp") {
                    out.report(
                        &EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
                        svc,
                        Some(&path),
                        format!(
                            "port {number} of ExternalName service {} {called}, so the proxy \
                             treats it as plain TCP and may not forward its traffic: name it after \
                             the application protocol (`http-`, `https-`, `tls-`, ...) or set \
                             `appProtocol`",
                            full_name(svc)
                        ),
                    );
                } else if protocol.is_none() {
                    let target = target_port_text(port).unwrap_or_else(|| number.to_string());
                    out.report(
                        &PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                        svc,
                        Some(&path),
                        format!(
                            "port {number} (targetPort {target}) {called}, which names no \
                             protocol, so Istio falls back to protocol sniffing: name it \
                             <protocol>[-<suffix>] (e.g. `http-web`, `grpc`, `tcp-db`) or set \
                             `appProtocol`"
                        ),
                    );
                }
            }
        }
    }
}
