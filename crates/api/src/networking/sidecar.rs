//! Sidecar: narrows what a workload's proxy listens for (ingress listeners) and
//! which services it can reach (egress hosts), and sets its outbound policy and
//! inbound connection pool.

use serde::{Deserialize, Serialize};

use super::common::{
    Destination, Port, Protocol, WorkloadLabelSelector, check_port, check_port_name, check_protocol,
};
use super::host;
use super::pool::ConnectionPoolSettings;
use super::tls::{ServerTlsMode, ServerTlsSettings};
use crate::check::{Checker, Validate};
use crate::meta::ObjectMeta;

/// `spec` of a Sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads this applies to; none means every workload in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// How traffic is captured into a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    #[default]
    Default,
    Iptables,
    None,
}

/// A port the workload serves, and where the proxy forwards it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix://path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Services reachable from the workload, optionally on one port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/host` entries (`*/`, `./`, `~/` namespaces; `*` hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// What happens to traffic for hosts not in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    #[default]
    RegistryOnly,
    AllowAny,
}

/// `outboundTrafficPolicy:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// Where ALLOW_ANY traffic goes instead of straight out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

impl Validate for Sidecar {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        if let Some(selector) = &self.workload_selector {
            c.at("workloadSelector", |c| selector.check(c, "the sidecar"));
        }
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            c.error("sidecar: empty configuration provided");
            return;
        }
        let mut ports: Vec<u32> = Vec::new();
        c.each("ingress", &self.ingress, |c, _, listener| {
            listener.check(c, &mut ports)
        });
        if let Some(pool) = &self.inbound_connection_pool {
            c.at("inboundConnectionPool", |c| pool.check(c));
        }
        let mut ports: Vec<u32> = Vec::new();
        let mut sockets: Vec<String> = Vec::new();
        let last = self.egress.len().saturating_sub(1);
        let mut catch_all = false;
        c.each("egress", &self.egress, |c, i, egress| {
            match &egress.port {
                None if catch_all => c.error("sidecar: egress can have only one listener with empty port"),
                None if i != last => c.error("sidecar: the egress listener with empty port should be the last listener in the list"),
                None => catch_all = true,
                Some(port) => {
                    c.at("port", |c| check_egress_port(c, port, &egress.bind, egress.capture_mode));
                    if port.number == 0 {
                        if sockets.contains(&egress.bind) {
                            c.error_at("bind", "sidecar: unix domain socket values for listeners must be unique");
                        }
                        sockets.push(egress.bind.clone());
                    } else {
                        if ports.contains(&port.number) {
                            c.error_at("port.number", "sidecar: ports on IP bound listeners must be unique");
                        }
                        ports.push(port.number);
                    }
                }
            }
            egress.check_hosts(c, meta.namespace_or_default());
        });
        if let Some(policy) = &self.outbound_traffic_policy
            && let Some(proxy) = &policy.egress_proxy
        {
            c.at("outboundTrafficPolicy", |c| {
                if policy.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
                    c.error("sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
                    return;
                }
                c.at("egressProxy", |c| {
                    if let Err(e) = host::fqdn(&proxy.host) {
                        c.error_at("host", e);
                    }
                    if proxy.port.is_none() {
                        c.error("sidecar: egress_proxy port must be non-nil");
                        return;
                    }
                    proxy.check(c);
                });
            });
        }
    }
}

/// Name (if given), protocol and number; a `unix://` bind when the number is 0.
fn check_egress_port(c: &mut Checker, port: &Port, bind: &str, capture: Option<CaptureMode>) {
    if port.target_port > 0 {
        c.error_at("targetPort", "targetPort has no impact on Sidecars");
    }
    if !port.name.is_empty() {
        check_port_name(c, "name", &port.name);
    }
    check_protocol(c, "protocol", &port.protocol);
    if port.number == 0 {
        match bind.strip_prefix("unix://") {
            None => {
                c.error("sidecar: ports with 0 value must have a unix domain socket bind address")
            }
            Some(path) => {
                if let Err(e) = host::unix_address(path) {
                    c.error(e);
                }
            }
        }
        if capture.is_some_and(|m| m == CaptureMode::Iptables) {
            c.error("sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
        }
    } else {
        check_port(c, "number", port.number);
        if !bind.is_empty()
            && let Err(e) = host::ip_address(bind)
        {
            c.error(format!("bind: {e}"));
        }
    }
}

impl IngressListener {
    fn check(&self, c: &mut Checker, ports: &mut Vec<u32>) {
        let Some(port) = &self.port else {
            c.error("sidecar: port is required for ingress listeners");
            return;
        };
        c.at("port", |c| {
            if port.target_port > 0 {
                c.error_at("targetPort", "targetPort has no impact on Sidecars");
            }
            if !port.name.is_empty() {
                check_port_name(c, "name", &port.name);
            }
            check_protocol(c, "protocol", &port.protocol);
            check_port(c, "number", port.number);
        });
        if !self.bind.is_empty()
            && let Err(e) = host::ip_address(&self.bind)
        {
            c.error_at("bind", e);
        }
        if ports.contains(&port.number) {
            c.error_at(
                "port.number",
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        ports.push(port.number);
        if !self.default_endpoint.is_empty() {
            c.at("defaultEndpoint", |c| {
                check_default_endpoint(c, &self.default_endpoint)
            });
        }
        if let Some(tls) = &self.tls {
            c.at("tls", |c| {
                let unsupported = [
                    (!tls.subject_alt_names.is_empty(), "subjectAltNames"),
                    (tls.https_redirect, "httpsRedirect"),
                    (!tls.credential_name.is_empty(), "credentialName"),
                    (!tls.credential_names.is_empty(), "credentialNames"),
                    (!tls.tls_certificates.is_empty(), "tlsCertificates"),
                ];
                for (set, field) in unsupported {
                    if set {
                        c.error_at(field, format!("sidecar: {field} is not supported in ingress tls"));
                    }
                }
                if matches!(tls.mode(), ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough) {
                    c.error_at("mode", "configuration is invalid: cannot set mode to ISTIO_MUTUAL or AUTO_PASSTHROUGH in sidecar ingress tls");
                }
                if !Protocol::parse(&port.protocol).is_tls() {
                    c.error("server cannot have TLS settings for non HTTPS/TLS ports");
                }
                tls.check(c);
            });
        }
        if let Some(pool) = &self.connection_pool {
            c.at("connectionPool", |c| {
                pool.check(c);
                if pool.http.is_some() && !Protocol::parse(&port.protocol).is_http() {
                    c.warn(format!(
                        "HTTP connection pool settings are configured for port {} but its protocol is not HTTP ({}); only TCP settings will apply",
                        port.number, port.protocol
                    ));
                }
            });
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://path`.
fn check_default_endpoint(c: &mut Checker, endpoint: &str) {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        if let Err(e) = host::unix_address(path) {
            c.error(e);
        }
        return;
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        c.error(format!("address {endpoint}: missing port in address"));
        return;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        c.error("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset");
    }
    match port.parse::<u32>() {
        Ok(n) => {
            if let Err(e) = crate::check::rules::port(i64::from(n)) {
                c.error(e);
            }
        }
        Err(_) => c.error(format!(
            "sidecar: defaultEndpoint port ({port}) is not a number"
        )),
    }
}

impl EgressListener {
    /// `namespace/host` entries; repeats and `*/*` next to other hosts only warn.
    fn check_hosts(&self, c: &mut Checker, namespace: &str) {
        if self.hosts.is_empty() {
            c.error_at(
                "hosts",
                "sidecar: egress listener must contain at least one host",
            );
            return;
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        c.each("hosts", &self.hosts, |c, _, h| {
            if let Some((ns, svc)) = h.split_once('/') {
                let ns = if ns == "." { namespace } else { ns };
                let repeated = if svc == "*" {
                    seen.iter().any(|(n, _)| n == ns)
                } else {
                    seen.iter().any(|(n, s)| n == ns && (s == svc || s == "*"))
                };
                if repeated {
                    c.warn(format!("duplicated egress host: {h}"));
                }
                seen.push((ns.to_string(), svc.to_string()));
            }
            for e in host::namespace_slash_host(h, false) {
                c.error(e);
            }
        });
        let all = seen.iter().any(|(n, s)| n == "*" && s == "*");
        if all && seen.iter().any(|(n, _)| n != "*") {
            c.at("hosts", |c| {
                c.warn("`*/*` host select all resources, no other hosts can be added");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(spec: &str) -> Vec<String> {
        super::super::findings("Sidecar", "default", spec, false)
    }

    #[test]
    fn typical_sidecar_passes() {
        let e = errors(
            "  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn empty_sidecar_is_rejected() {
        assert_eq!(
            errors("  {}\n"),
            vec!["spec: sidecar: empty configuration provided".to_string()]
        );
    }

    #[test]
    fn egress_hosts_are_namespace_slash_host() {
        let e = errors("  egress:\n  - hosts: [foo.com, \"Bad_NS/*\"]\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("must be of form namespace/dnsName"), "{e:?}");
    }

    #[test]
    fn catch_all_egress_listener_comes_last() {
        let e = errors(
            "  egress:\n  - hosts: [\"*/*\"]\n  - port: {number: 80, protocol: HTTP}\n    hosts: [\"*/*\"]\n",
        );
        assert!(e[0].contains("should be the last listener"), "{e:?}");
    }

    #[test]
    fn ingress_needs_port_and_local_default_endpoint() {
        let e = errors("  ingress:\n  - defaultEndpoint: 127.0.0.1:80\n");
        assert!(
            e[0].contains("port is required for ingress listeners"),
            "{e:?}"
        );
        let e = errors(
            "  ingress:\n  - port: {number: 80, protocol: HTTP}\n    defaultEndpoint: 10.0.0.1:80\n",
        );
        assert!(e[0].contains("defaultEndpoint must be of form"), "{e:?}");
        let e = errors(
            "  ingress:\n  - port: {number: 80, protocol: HTTP}\n    defaultEndpoint: unix:///var/run/app.sock\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn egress_proxy_needs_allow_any() {
        let e = errors(
            "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n    egressProxy: {host: proxy.example.com, port: {number: 3128}}\n",
        );
        assert!(e[0].contains("ALLOW_ANY"), "{e:?}");
    }

    #[test]
    fn unknown_capture_mode_suggests_the_nearest() {
        let e = errors("  egress:\n  - hosts: [\"*/*\"]\n    captureMode: IPTABLE\n");
        assert!(e[0].contains("did you mean `IPTABLES`"), "{e:?}");
    }
}
