//! VirtualService: routing rules for traffic addressed to a set of hosts, bound to
//! the mesh (sidecars) and/or to Gateways. HTTP rules live in `http_route`; this
//! module has the resource, its TLS and TCP rules, and the whole-resource checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{
    Destination, ExportKind, address_list, check_export_to, check_labels, check_port, is_default,
};
use super::host;
use super::http_policy::is_jwt_claim_key;
use super::http_route::HttpRoute;
use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Hosts the rules apply to; none makes this a delegate of another VirtualService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `namespace/name` of Gateways, and `mesh` for sidecars; none means `mesh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A rule for TLS traffic that is passed through, chosen by SNI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A rule for opaque TCP traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A weighted destination of a TLS or TCP rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight: i32,
}

/// Connection-level conditions of a TCP rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(
        default,
        deserialize_with = "address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_subnet: String,
}

/// Conditions of a TLS rule; `sniHosts` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(
        default,
        deserialize_with = "address_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

/// The gateway name that means "the sidecars of the mesh".
pub const MESH_GATEWAY: &str = "mesh";

impl VirtualService {
    /// True when the rules apply to Gateways only (gateways listed, `mesh` not among them).
    pub fn gateway_only(&self) -> bool {
        !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == MESH_GATEWAY)
    }
}

/// `namespace/name` references (both DNS-1123 labels), or the legacy `name.namespace` form.
pub(crate) fn check_gateway_names(c: &mut Checker, field: &str, names: &[String]) {
    c.each(field, names, |c, _, name| match name.split_once('/') {
        None => {
            if let Some((gw, ns)) = name.split_once('.') {
                c.warn(format!(
                    "using legacy gatewayName format \"{name}\"; prefer the <namespace>/<name> format: \"{ns}/{gw}\""
                ));
            }
            if let Err(e) = host::fqdn(name) {
                c.error(e);
            }
        }
        Some((ns, gw)) => {
            if ns.is_empty() || gw.is_empty() {
                c.error("config namespace and gateway name cannot be empty");
            }
            if !host::is_dns_label(ns) {
                c.error(format!("invalid value for namespace: \"{ns}\""));
            }
            if !host::is_dns_label(gw) {
                c.error(format!("invalid value for gateway name: \"{gw}\""));
            }
        }
    });
}

/// Several destinations may not all weigh zero; weights are proportions.
pub(crate) fn check_total_weight(c: &mut Checker, count: usize, total: i64) {
    if count > 1 && total == 0 {
        c.error_at("route", "total destination weight = 0");
    } else if count > 1 && total != 100 {
        c.warn(format!(
            "route weights add up to {total}, not 100; traffic is split in proportion to them"
        ));
    }
}

fn check_destinations(c: &mut Checker, routes: &[RouteDestination]) {
    let mut total: i64 = 0;
    c.each("route", routes, |c, _, r| {
        match &r.destination {
            None => c.error("destination is required"),
            Some(d) => c.at("destination", |c| d.check(c)),
        }
        if r.weight < 0 {
            c.error_at("weight", format!("weight {} < 0", r.weight));
        }
        total += i64::from(r.weight);
    });
    check_total_weight(c, routes.len(), total);
}

fn check_subnets(c: &mut Checker, subnets: &[String]) {
    c.each("destinationSubnets", subnets, |c, _, s| {
        if let Err(e) = host::ip_subnet(s) {
            c.error(e);
        }
    });
}

impl Validate for VirtualService {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        let delegate = self.hosts.is_empty();
        if delegate {
            if !self.gateways.is_empty() {
                c.error_at(
                    "gateways",
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !self.tls.is_empty() {
                c.error_at(
                    "tls",
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !self.tcp.is_empty() {
                c.error_at(
                    "tcp",
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }
        let to_gateway = self.gateway_only();
        if !self.gateways.is_empty() {
            check_gateway_names(c, "gateways", &self.gateways);
        }
        if !to_gateway {
            self.check_jwt_claim_routes(c);
        }
        self.check_hosts(c, to_gateway);
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            c.error("http, tcp or tls must be provided in virtual service");
        }
        c.each("http", &self.http, |c, _, r| r.check(c, delegate));
        c.each("tls", &self.tls, |c, _, r| {
            self.check_tls_route(c, r, to_gateway)
        });
        c.each("tcp", &self.tcp, |c, _, r| {
            c.each("match", &r.match_, |c, _, m| {
                check_subnets(c, &m.destination_subnets);
                if m.port != 0 {
                    check_port(c, "port", m.port);
                }
                check_labels(c, "sourceLabels", &m.source_labels);
                check_gateway_names(c, "gateways", &m.gateways);
            });
            if r.route.is_empty() {
                c.error("TCP route is required");
            }
            check_destinations(c, &r.route);
        });
        check_export_to(
            c,
            meta.namespace_or_default(),
            &self.export_to,
            ExportKind::Plain,
        );
        super::unreachable::check(self, c);
    }
}

impl VirtualService {
    fn check_hosts(&self, c: &mut Checker, to_gateway: bool) {
        let sni = self
            .tls
            .iter()
            .any(|t| t.match_.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_valid = true;
        c.each("hosts", &self.hosts, |c, _, h| {
            let result = if to_gateway {
                host::gateway_bound_domain(sni, h)
            } else {
                host::wildcard_domain(h)
            };
            match result {
                Err(e) if !host::is_ip(h) => {
                    c.error(e);
                    all_valid = false;
                }
                Err(_) => {}
                Ok(()) if !to_gateway && h == "*" => {
                    c.error("wildcard host * is not allowed for virtual services bound to the mesh gateway");
                    all_valid = false;
                }
                Ok(()) => {}
            }
        });
        if !all_valid {
            return;
        }
        for (i, a) in self.hosts.iter().enumerate() {
            for b in &self.hosts[i + 1..] {
                if host::host_matches(a, b) {
                    c.error_at(
                        "hosts",
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }

    fn check_jwt_claim_routes(&self, c: &mut Checker) {
        for (i, rule) in self.http.iter().enumerate() {
            for (j, m) in rule.match_.iter().enumerate() {
                for key in m.headers.keys().chain(m.without_headers.keys()) {
                    if is_jwt_claim_key(key) {
                        c.error_at(
                            &format!("http[{i}].match[{j}]"),
                            format!("JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {:?}", self.gateways),
                        );
                    }
                }
            }
        }
    }

    fn check_tls_route(&self, c: &mut Checker, r: &TlsRoute, to_gateway: bool) {
        if r.match_.is_empty() {
            c.error("TLS route must have at least one match condition");
        }
        c.each("match", &r.match_, |c, _, m| {
            if m.sni_hosts.is_empty() {
                c.error("TLS match must have at least one SNI host");
            }
            c.each("sniHosts", &m.sni_hosts, |c, _, sni| {
                self.check_sni_host(c, sni, to_gateway)
            });
            check_subnets(c, &m.destination_subnets);
            if m.port != 0 {
                check_port(c, "port", m.port);
            }
            check_labels(c, "sourceLabels", &m.source_labels);
            check_gateway_names(c, "gateways", &m.gateways);
        });
        if r.route.is_empty() {
            c.error("TLS route is required");
        }
        check_destinations(c, &r.route);
    }

    fn check_sni_host(&self, c: &mut Checker, sni: &str, to_gateway: bool) {
        let result = if to_gateway {
            host::gateway_bound_domain(true, sni)
        } else {
            host::wildcard_domain(sni)
        };
        if let Err(e) = result {
            if host::is_ip(sni) {
                c.warn(format!("using an IP address (\"{sni}\") goes against SNI spec and most clients do not support this"));
            } else {
                c.error(e);
            }
            return;
        }
        if !self.hosts.iter().any(|h| host::host_subset_of(sni, h)) {
            c.error(format!(
                "SNI host \"{sni}\" is not a compatible subset of any of the virtual service hosts: [{}]",
                self.hosts.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(spec: &str) -> Vec<String> {
        super::super::findings("VirtualService", "vs", spec, false)
    }

    fn warnings(spec: &str) -> Vec<String> {
        super::super::findings("VirtualService", "vs", spec, true)
    }

    const ROUTE: &str = "  http:\n  - route:\n    - destination: {host: cart}\n";

    #[test]
    fn simple_route_passes() {
        let e = errors(&format!("  hosts: [cart]\n{ROUTE}"));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn needs_http_tcp_or_tls() {
        let e = errors("  hosts: [cart]\n");
        assert_eq!(
            e,
            vec!["spec: http, tcp or tls must be provided in virtual service".to_string()]
        );
    }

    #[test]
    fn bare_star_host_only_for_gateways() {
        let e = errors(&format!("  hosts: [\"*\"]\n{ROUTE}"));
        assert!(e[0].contains("wildcard host * is not allowed"), "{e:?}");
        let e = errors(&format!(
            "  hosts: [\"*\"]\n  gateways: [istio-system/edge]\n{ROUTE}"
        ));
        assert!(e.is_empty(), "{e:?}");
        let e = errors(&format!(
            "  hosts: [\"*\"]\n  gateways: [istio-system/edge, mesh]\n{ROUTE}"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn overlapping_hosts_are_duplicates() {
        let e = errors(&format!(
            "  hosts: [\"*.shop.example.com\", \"*.example.com\"]\n{ROUTE}"
        ));
        assert!(e[0].contains("duplicate hosts in virtual service"), "{e:?}");
    }

    #[test]
    fn ip_hosts_are_allowed() {
        let e = errors(&format!("  hosts: [10.0.0.1]\n{ROUTE}"));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn gateway_references_are_namespace_slash_name() {
        let e = errors(&format!(
            "  hosts: [a.com]\n  gateways: [\"istio-system/*\"]\n{ROUTE}"
        ));
        assert_eq!(
            e,
            vec!["spec.gateways[0]: invalid value for gateway name: \"*\"".to_string()]
        );
        let w = warnings(&format!(
            "  hosts: [a.com]\n  gateways: [edge.istio-system]\n{ROUTE}"
        ));
        assert!(w[0].contains("legacy gatewayName format"), "{w:?}");
    }

    #[test]
    fn weights_must_not_be_negative_or_all_zero() {
        let two = |a: i32, b: i32| {
            format!(
                "  hosts: [cart]\n  http:\n  - route:\n    - destination: {{host: cart, subset: a}}\n      weight: {a}\n    - destination: {{host: cart, subset: b}}\n      weight: {b}\n"
            )
        };
        assert!(errors(&two(90, 10)).is_empty());
        assert_eq!(
            errors(&two(0, 0)),
            vec!["spec.http[0].route: total destination weight = 0".to_string()]
        );
        assert_eq!(
            errors(&two(110, -10)),
            vec!["spec.http[0].route[1].weight: weight -10 < 0".to_string()]
        );
        let w = warnings(&two(50, 20));
        assert!(w[0].contains("add up to 70"), "{w:?}");
    }

    #[test]
    fn delegates_take_no_gateways_tls_or_tcp() {
        let e = errors(&format!("  gateways: [istio-system/edge]\n{ROUTE}"));
        assert!(
            e[0].contains("delegate virtual service must have no gateways"),
            "{e:?}"
        );
    }

    #[test]
    fn delegating_rules_only_delegate() {
        let e = errors(
            "  hosts: [a.com]\n  http:\n  - delegate: {name: d, namespace: shop}\n    route:\n    - destination: {host: cart}\n",
        );
        assert!(e[0].contains("must not specify route"), "{e:?}");
    }

    #[test]
    fn sni_hosts_must_fall_within_hosts() {
        let tls = |sni: &str| {
            format!(
                "  hosts: [\"*.example.com\"]\n  tls:\n  - match:\n    - sniHosts: [{sni}]\n    route:\n    - destination: {{host: b}}\n"
            )
        };
        assert!(errors(&tls("a.example.com")).is_empty());
        assert!(errors(&tls("a.example.org"))[0].contains("is not a compatible subset"));
    }

    #[test]
    fn tcp_rules_need_routes() {
        let e = errors("  hosts: [db]\n  tcp:\n  - match:\n    - port: 5432\n");
        assert_eq!(e, vec!["spec.tcp[0]: TCP route is required".to_string()]);
    }

    #[test]
    fn jwt_claim_routing_needs_a_gateway() {
        let spec = |gw: &str| {
            format!(
                "  hosts: [a.com]\n{gw}  http:\n  - match:\n    - headers:\n        \"@request.auth.claims.tier\": {{exact: gold}}\n    route:\n    - destination: {{host: a}}\n"
            )
        };
        assert!(errors(&spec(""))[0].contains("is only supported for gateway"));
        assert!(errors(&spec("  gateways: [istio-system/edge]\n")).is_empty());
    }

    #[test]
    fn export_to_is_checked() {
        let e = errors(&format!(
            "  hosts: [a]\n  exportTo: [\"*\", billing]\n{ROUTE}"
        ));
        assert!(
            e[0].contains("cannot have both public (*) and non-public"),
            "{e:?}"
        );
    }

    #[test]
    fn http_rule_checks_reach_nested_fields() {
        let e = errors(
            "  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: \"([a-z\"}\n    timeout: 0.0005s\n    retries: {attempts: -1}\n    route:\n    - destination: {host: \"*\", subset: Canary_V2, port: {number: 70000}}\n",
        );
        let paths: Vec<&str> = e
            .iter()
            .map(|m| m.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.http[0].match[0].uri.regex",
                "spec.http[0].retries.attempts",
                "spec.http[0].route[0].destination.host",
                "spec.http[0].route[0].destination.subset",
                "spec.http[0].route[0].destination.port.number",
                "spec.http[0].timeout",
            ],
            "{e:?}"
        );
    }
}
