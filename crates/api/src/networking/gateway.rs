//! Gateway: a load balancer at the edge of the mesh — which proxy pods (by
//! labels) listen on which ports, for which hosts, with which TLS settings.
//! Routing for those hosts comes from VirtualServices bound to the Gateway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Port, Protocol, check_port};
use super::host;
use super::tls::ServerTlsSettings;
use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// `spec` of a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway proxy pods this configuration applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One listener of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// IP address or `unix://` socket to listen on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Hosts served, as `host` or `namespace/host` (`*/`, `./` allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Validate for Gateway {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        // VirtualServices refer to Gateways as namespace/name, so no dots in the name.
        if !meta.name.is_empty() && !host::is_dns_label(&meta.name) {
            c.error(format!(
                "invalid gateway name: \"{}\" (must be a DNS-1123 label: no dots)",
                meta.name
            ));
        }
        if self.servers.is_empty() {
            c.error_at("servers", "gateway must have at least one server");
        }
        c.each("servers", &self.servers, |c, i, server| {
            server.check(c);
            if let Some(port) = &server.port {
                let earlier = self.servers[..i].iter().filter_map(|s| s.port.as_ref());
                if earlier.into_iter().any(|p| p.name == port.name) {
                    c.error_at(
                        "port.name",
                        format!(
                            "port names in servers must be unique: duplicate name {}",
                            port.name
                        ),
                    );
                }
                let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
                if redirect && !Protocol::parse(&port.protocol).is_http() {
                    c.at("tls.httpsRedirect", |c| {
                        c.warn("tls.httpsRedirect should only be used with http servers");
                    });
                }
            }
        });
    }
}

impl Server {
    fn check(&self, c: &mut Checker) {
        if self.hosts.is_empty() {
            c.error_at("hosts", "server config must contain at least one host");
        }
        c.each("hosts", &self.hosts, |c, _, h| {
            for e in host::namespace_slash_host(h, true) {
                c.error(e);
            }
        });
        let unix = self.bind.strip_prefix("unix://");
        let port_ok = match &self.port {
            None => {
                c.error("port is required");
                false
            }
            Some(port) => c.at("port", |c| check_server_port(c, port, unix.is_some())),
        };
        match unix {
            Some(path) => {
                if let Err(e) = host::unix_address(path) {
                    c.error_at("bind", e);
                }
                if self.port.as_ref().is_some_and(|p| p.number != 0) {
                    c.error_at(
                        "port.number",
                        "port number must be 0 for unix domain socket",
                    );
                }
            }
            None if !self.bind.is_empty() => {
                if let Err(e) = host::ip_address(&self.bind) {
                    c.error_at("bind", e);
                }
            }
            None => {}
        }
        if let Some(tls) = &self.tls {
            c.at("tls", |c| tls.check(c));
        }
        let Some(port) = self.port.as_ref().filter(|_| port_ok) else {
            return;
        };
        let protocol = Protocol::parse(&port.protocol);
        match &self.tls {
            None if protocol.is_tls() => {
                c.error("server must have TLS settings for HTTPS/TLS protocols");
            }
            Some(tls) if !protocol.is_tls() => {
                if protocol.is_http() {
                    // Only an https redirect makes sense on a plain HTTP port.
                    if !tls.is_passthrough()
                        || !tls.ca_certificates.is_empty()
                        || !tls.private_key.is_empty()
                        || !tls.server_certificate.is_empty()
                    {
                        c.error_at(
                            "tls",
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    c.error_at(
                        "tls",
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
            _ => {}
        }
    }
}

/// A known protocol, a port in range (0 allowed on Unix sockets), a name, no target port.
/// Returns whether the port passed.
fn check_server_port(c: &mut Checker, port: &Port, unix: bool) -> bool {
    let mut ok = true;
    if Protocol::parse(&port.protocol) == Protocol::Unsupported {
        ok = false;
        c.error_at(
            "protocol",
            format!(
                "invalid protocol \"{}\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, MONGO, REDIS, MYSQL, TCP",
                port.protocol
            ),
        );
    }
    if (port.number > 0 || !unix) && !(1..=65535).contains(&port.number) {
        ok = false;
        check_port(c, "number", port.number);
    }
    if port.target_port > 0 {
        ok = false;
        c.error_at("targetPort", "targetPort has no impact on Gateways");
    }
    if port.name.is_empty() {
        ok = false;
        c.error_at("name", "port name must be set");
    }
    ok
}

#[cfg(test)]
mod tests {
    fn errors(name: &str, spec: &str) -> Vec<String> {
        super::super::findings("Gateway", name, spec, false)
    }

    fn server(port: &str, tls: &str) -> String {
        format!("  servers:\n  - port: {port}\n    hosts: [shop.example.com]\n{tls}")
    }

    const HTTPS: &str = "{number: 443, name: https, protocol: HTTPS}";

    #[test]
    fn https_server_with_credential_passes() {
        let e = errors(
            "gw",
            &server(HTTPS, "    tls: {mode: SIMPLE, credentialName: cert}\n"),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn gateway_names_have_no_dots() {
        let e = errors(
            "shop.edge",
            &server("{number: 80, name: http, protocol: HTTP}", ""),
        );
        assert!(
            e[0].starts_with("spec: invalid gateway name: \"shop.edge\""),
            "{e:?}"
        );
    }

    #[test]
    fn servers_need_port_and_hosts() {
        assert_eq!(
            errors("gw", "  servers: []\n"),
            vec!["spec.servers: gateway must have at least one server".to_string()]
        );
        let e = errors("gw", "  servers:\n  - hosts: [a.com]\n");
        assert_eq!(e, vec!["spec.servers[0]: port is required".to_string()]);
        let e = errors(
            "gw",
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: []\n",
        );
        assert_eq!(
            e,
            vec!["spec.servers[0].hosts: server config must contain at least one host".to_string()]
        );
    }

    #[test]
    fn ports_need_known_protocol_range_and_unique_names() {
        let e = errors(
            "gw",
            &server(
                "{number: 70000, name: smtp, protocol: SMTP, targetPort: 25}",
                "",
            ),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errors(
            "gw",
            "  servers:\n  - port: {number: 80, name: web, protocol: HTTP}\n    hosts: [a.com]\n  - port: {number: 81, name: web, protocol: HTTP}\n    hosts: [b.com]\n",
        );
        assert!(e[0].contains("duplicate name web"), "{e:?}");
    }

    #[test]
    fn tls_settings_match_the_protocol() {
        let e = errors("gw", &server(HTTPS, ""));
        assert!(
            e[0].contains("server must have TLS settings for HTTPS/TLS protocols"),
            "{e:?}"
        );
        let e = errors(
            "gw",
            &server(
                "{number: 5432, name: pg, protocol: TCP}",
                "    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
        );
        assert!(
            e[0].contains("server cannot have TLS settings for non HTTPS/TLS ports"),
            "{e:?}"
        );
        let e = errors(
            "gw",
            &server(
                "{number: 80, name: http, protocol: HTTP}",
                "    tls: {httpsRedirect: true}\n",
            ),
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn server_hosts_follow_namespace_rules() {
        let e = errors(
            "gw",
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"Shop_NS/a.example.com\", \"*shop.example.com\", \"./b.example.com\"]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn unix_socket_servers_use_port_zero() {
        let e = errors(
            "gw",
            "  servers:\n  - port: {number: 0, name: uds, protocol: HTTP}\n    bind: unix:///var/run/gw.sock\n    hosts: [a.com]\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }
}
