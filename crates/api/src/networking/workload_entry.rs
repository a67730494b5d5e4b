//! WorkloadEntry: a workload that is not a Kubernetes pod (a VM, a bare-metal host),
//! described by its address, ports and labels. ServiceEntry endpoints use the same
//! shape, so the checks here serve both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{check_labels, check_port, check_port_name, is_default};
use super::host;
use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// `spec` of a WorkloadEntry, and one endpoint of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP address, DNS name, or `unix://` socket of the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port name (of the service) to the port the workload listens on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on; workloads on other networks are reached through gateways.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Relative share of traffic among the service's endpoints.
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

impl Validate for WorkloadEntry {
    fn validate(&self, _meta: &ObjectMeta, c: &mut Checker) {
        self.check(c, None, true);
    }
}

impl WorkloadEntry {
    /// Address, ports and labels; `service_ports` are the ServiceEntry's port names
    /// (when checking an endpoint), `allow_fqdn` whether a DNS name may be the address.
    pub(crate) fn check(&self, c: &mut Checker, service_ports: Option<&[&str]>, allow_fqdn: bool) {
        let addr = self.address.as_str();
        if addr.is_empty() {
            if self.network.is_empty() {
                c.error_at(
                    "address",
                    "address is required (or set network for a workload reached through a gateway)",
                );
                return;
            }
            c.warn(format!(
                "address is unset with network \"{}\"",
                self.network
            ));
        }
        let unix = addr.strip_prefix("unix://");
        if let Some(path) = unix {
            if let Err(e) = host::unix_address(path) {
                c.error_at("address", e);
            }
            if !self.ports.is_empty() {
                c.error_at(
                    "ports",
                    format!("unix endpoint {addr} must not include ports"),
                );
            }
        } else if !addr.is_empty() && !host::is_ip(addr) {
            if !allow_fqdn {
                c.error_at(
                    "address",
                    format!("endpoint address \"{addr}\" is not a valid IP address"),
                );
            } else if host::fqdn(addr).is_err() {
                c.error_at(
                    "address",
                    format!("endpoint address \"{addr}\" is not a valid FQDN or an IP address"),
                );
            }
        }
        for (name, port) in &self.ports {
            let at = format!("ports[{name}]");
            if let Some(known) = service_ports
                && !known.contains(&name.as_str())
            {
                c.error_at(
                    &at,
                    format!("endpoint port {name} is not defined by the service entry"),
                );
            }
            check_port_name(c, &at, name);
            check_port(c, &at, *port);
        }
        check_labels(c, "labels", &self.labels);
        if unix.is_some()
            && let Some(known) = service_ports
            && known.len() != 1
        {
            c.error_at(
                "address",
                "exactly 1 service port required for unix endpoints",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::error_messages;

    fn errors(we: &WorkloadEntry) -> Vec<String> {
        error_messages(|c| we.validate(&ObjectMeta::default(), c))
    }

    #[test]
    fn address_required_unless_network_set() {
        assert_eq!(errors(&WorkloadEntry::default()).len(), 1);
        let we = WorkloadEntry {
            network: "net".into(),
            ..Default::default()
        };
        assert!(errors(&we).is_empty());
    }

    #[test]
    fn unix_sockets_take_no_ports() {
        let we = WorkloadEntry {
            address: "unix://@foo".into(),
            ports: [("http".to_string(), 80)].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(errors(&we).len(), 1);
        let we = WorkloadEntry {
            address: "unix://relative".into(),
            ..Default::default()
        };
        assert_eq!(errors(&we).len(), 1);
    }

    #[test]
    fn ports_need_valid_names_and_numbers() {
        let we = WorkloadEntry {
            address: "1.1.1.1".into(),
            ports: [("@".to_string(), 80), ("http".to_string(), 99999)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(errors(&we).len(), 2);
    }
}
