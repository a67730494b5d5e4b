//! ServiceEntry: adds a service to the mesh's registry — an external API, a
//! database on VMs, a set of WorkloadEntries — with its hosts, addresses, ports,
//! how endpoints are resolved, and where it sits (inside or outside the mesh).

use serde::{Deserialize, Serialize};

use super::common::{
    ExportKind, Port, Protocol, WorkloadLabelSelector, address_list, check_export_to, check_port,
    check_port_name, check_protocol,
};
use super::host;
use super::workload_entry::WorkloadEntry;
use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// Whether the service is part of the mesh (has sidecars) or outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// How the proxy finds the service's endpoints. Unset means NONE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the client connected to.
    #[default]
    None,
    /// Use the listed endpoint addresses.
    Static,
    /// Resolve host names with DNS, connecting to every address returned.
    Dns,
    /// Resolve with DNS, connecting to the first address returned.
    DnsRoundRobin,
    /// Resolve each wildcard-matched host on demand.
    DynamicDns,
}

/// `spec` of a ServiceEntry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(
        default,
        deserialize_with = "address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Written out endpoints (an empty list is still "set"); excludes `workloadSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    /// Selects pods and WorkloadEntries as endpoints; excludes `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    /// The effective resolution (NONE when unset).
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or_default()
    }

    /// The written endpoints (none when unset).
    pub fn endpoints(&self) -> &[WorkloadEntry] {
        self.endpoints.as_deref().unwrap_or(&[])
    }
}

impl Validate for ServiceEntry {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        let resolution = self.resolution();
        if let Some(selector) = &self.workload_selector {
            c.at("workloadSelector", |c| {
                selector.check(c, "the service entry")
            });
            if self.endpoints.is_some() {
                c.error("only one of WorkloadSelector or Endpoints is allowed in Service Entry");
            }
        }
        if self.hosts.is_empty() {
            c.error_at("hosts", "service entry must have at least one host");
        }
        c.each("hosts", &self.hosts, |c, _, h| {
            if h == "*" {
                c.error("invalid host *: a ServiceEntry host cannot be a bare wildcard");
            } else if let Err(e) = host::wildcard_domain(h) {
                c.error(e);
            } else if let Err(e) = host::partial_wildcard(h) {
                c.warn(e);
            }
        });
        let mut cidr = false;
        c.each("addresses", &self.addresses, |c, _, a| {
            cidr |= a.contains('/');
            if let Err(e) = host::ip_subnet(a) {
                c.error(e);
            }
        });
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            c.error_at(
                "addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
        let names = self.check_ports(c, resolution);
        let auto_allocate = meta
            .annotations
            .get("networking.istio.io/enable-autoallocate-ip")
            .is_none_or(|v| v != "false");
        if self.addresses.is_empty() && !auto_allocate {
            c.each("ports", &self.ports, |c, _, p| {
                if p.protocol.is_empty() || Protocol::parse(&p.protocol) == Protocol::Tcp {
                    c.warn("addresses are required for ports serving TCP (or unset) protocol when IP auto-allocation is off");
                }
            });
        }
        self.check_resolution(c, resolution, &names);
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self.ports.iter().find(|p| {
                let proto = Protocol::parse(&p.protocol);
                !proto.is_http() && !proto.is_tls()
            });
            if opaque.is_some() {
                c.error_at(
                    "ports",
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                );
            }
        }
        check_export_to(
            c,
            meta.namespace_or_default(),
            &self.export_to,
            ExportKind::ServiceEntry,
        );
    }
}

impl ServiceEntry {
    /// Unique names and numbers, valid protocols; returns the port names.
    fn check_ports(&self, c: &mut Checker, resolution: Resolution) -> Vec<&str> {
        c.each("ports", &self.ports, |c, i, port| {
            let earlier = &self.ports[..i];
            if earlier.iter().any(|p| p.name == port.name) {
                c.error_at(
                    "name",
                    format!("service entry port name \"{}\" already defined", port.name),
                );
            }
            if earlier.iter().any(|p| p.number == port.number) {
                c.error_at(
                    "number",
                    format!("service entry port {} already defined", port.number),
                );
            }
            if port.target_port != 0 {
                check_port(c, "targetPort", port.target_port);
                if resolution == Resolution::None {
                    c.warn("targetPort has no effect when resolution mode is NONE");
                }
            }
            check_port_name(c, "name", &port.name);
            check_protocol(c, "protocol", &port.protocol);
            check_port(c, "number", port.number);
        });
        self.ports.iter().map(|p| p.name.as_str()).collect()
    }

    fn check_resolution(&self, c: &mut Checker, resolution: Resolution, ports: &[&str]) {
        match resolution {
            Resolution::None => {
                if self.endpoints.is_some() {
                    c.error_at(
                        "endpoints",
                        "no endpoints should be provided for resolution type NONE",
                    );
                }
                if self.workload_selector.is_some() {
                    c.warn("workloadSelector should not be set when resolution mode is NONE");
                }
            }
            Resolution::Static => {
                c.each("endpoints", self.endpoints(), |c, _, e| {
                    e.check(c, Some(ports), false)
                });
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                let name = if resolution == Resolution::Dns {
                    "DNS"
                } else {
                    "DNS_ROUND_ROBIN"
                };
                if self.endpoints().is_empty() {
                    c.each("hosts", &self.hosts, |c, _, h| {
                        if host::fqdn(h).is_err() {
                            c.error(format!("hosts must be FQDN if no endpoints are provided for resolution mode {name}"));
                        }
                    });
                }
                if resolution == Resolution::DnsRoundRobin && self.endpoints().len() > 1 {
                    c.error_at(
                        "endpoints",
                        format!("there must only be 0 or 1 endpoint for resolution mode {name}"),
                    );
                }
                c.each("endpoints", self.endpoints(), |c, _, e| {
                    if !host::is_ip(&e.address) && host::fqdn(&e.address).is_err() {
                        c.error_at(
                            "address",
                            format!(
                                "endpoint address \"{}\" is not a valid FQDN or an IP address",
                                e.address
                            ),
                        );
                    }
                    super::common::check_labels(c, "labels", &e.labels);
                    for (port_name, number) in &e.ports {
                        let at = format!("ports[{port_name}]");
                        if !ports.contains(&port_name.as_str()) {
                            c.error_at(
                                &at,
                                format!(
                                    "endpoint port {port_name} is not defined by the service entry"
                                ),
                            );
                        }
                        check_port_name(c, &at, port_name);
                        check_port(c, &at, *number);
                    }
                });
                if self.workload_selector.is_some() {
                    c.warn(format!(
                        "workloadSelector should not be set when resolution mode is {name}"
                    ));
                }
                if !self.addresses.is_empty()
                    && self.hosts.len() > 1
                    && self
                        .ports
                        .iter()
                        .any(|p| Protocol::parse(&p.protocol).is_tcp())
                {
                    c.warn("service entry can not have more than one host specified simultaneously with address and tcp port");
                }
            }
            Resolution::DynamicDns => {
                if self.endpoints.is_some() {
                    c.error_at(
                        "endpoints",
                        "endpoints cannot be set with resolution DYNAMIC_DNS",
                    );
                }
                c.each("hosts", &self.hosts, |c, _, h| {
                    if !h.starts_with("*.") {
                        c.warn(format!(
                            "DYNAMIC_DNS resolution is meant for wildcard hosts; `{h}` is not one"
                        ));
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(spec: &str) -> Vec<String> {
        super::super::findings("ServiceEntry", "se", spec, false)
    }
    #[test]
    fn external_api_passes() {
        let e = errors(
            "  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports:\n  - {number: 443, name: https, protocol: TLS}\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn unquoted_ipv6_in_flow_lists_is_an_address() {
        let e = errors("  hosts: [example.com]\n  addresses: [1.2.3.4, 001:db8::]\n");
        assert!(e.is_empty(), "{e:?}");
        let e = errors("  hosts: [example.com]\n  addresses: [{a: b}]\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn resolution_none_takes_no_endpoints() {
        let e = errors("  hosts: [example.com]\n  endpoints:\n  - address: 1.2.3.4\n");
        assert!(e[0].contains("no endpoints should be provided"), "{e:?}");
    }

    #[test]
    fn selector_and_endpoints_exclude_each_other() {
        let e = errors(
            "  hosts: [example.com]\n  resolution: STATIC\n  workloadSelector: {}\n  endpoints:\n  - address: 1.2.3.4\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("only one of WorkloadSelector or Endpoints")),
            "{e:?}"
        );
    }

    #[test]
    fn cidr_needs_none_or_static() {
        let e = errors("  hosts: [example.com]\n  addresses: [1.2.3.4/16]\n  resolution: DNS\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn ports_unique_by_name_and_number() {
        let e = errors(
            "  hosts: [example.com]\n  ports:\n  - {name: a, number: 1}\n  - {name: a, number: 1}\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn dns_round_robin_takes_one_endpoint() {
        let e = errors(
            "  hosts: [example.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: a.example.com\n  - address: b.example.com\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn unknown_resolution_suggests_the_nearest() {
        let e = errors("  hosts: [example.com]\n  resolution: STATC\n");
        assert!(e[0].contains("did you mean `STATIC`"), "{e:?}");
    }
}
