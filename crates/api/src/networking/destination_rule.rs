//! DestinationRule: what happens to traffic after routing picked a service — load
//! balancing, connection pools, outlier detection, TLS to the upstream, tunnels —
//! for the whole host, per port, and per named subset of its endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{
    ExportKind, PortSelector, check_duration, check_export_to, check_labels, check_port,
    check_selector_labels, is_default,
};
use super::host;
use super::load_balancer::LoadBalancerSettings;
use super::pool::ConnectionPoolSettings;
use super::tls::ClientTlsSettings;
use crate::check::{Checker, Validate};
use crate::meta::{ObjectMeta, WorkloadSelector};
use crate::values::Duration;

/// `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The service the rule applies to (short names resolve in the rule's namespace).
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Applies the rule only to the selected client workloads in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// Settings for traffic to the host (or to one subset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policy for one port of the host; overrides the host-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// A named group of the host's endpoints, picked by labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Ejecting endpoints that keep failing from the load-balancing pool for a while.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: use `consecutiveGatewayErrors` or `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub consecutive_errors: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub split_external_local_origin_errors: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_ejection_percent: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_health_percent: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// Tunnelling the upstream connection through an HTTP CONNECT or POST proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default)]
    pub target_host: String,
    #[serde(default)]
    pub target_port: u32,
}

/// PROXY protocol version sent to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// `proxyProtocol: {version: V1|V2}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// Caps retries to a share of active requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

impl Validate for DestinationRule {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        let namespace = meta.namespace_or_default();
        if let Err(e) = host::wildcard_domain(&self.host) {
            c.error_at("host", e);
        }
        if let Some(policy) = &self.traffic_policy {
            c.at("trafficPolicy", |c| policy.check(c, namespace));
        }
        c.each("subsets", &self.subsets, |c, i, subset| {
            if self.subsets[..i].iter().any(|s| s.name == subset.name) {
                c.error_at("name", format!("duplicate subset names: {}", subset.name));
            }
            subset.check(c, namespace);
        });
        let kind = if self.workload_selector.is_some() {
            ExportKind::DestinationRuleWithSelector
        } else {
            ExportKind::Plain
        };
        check_export_to(c, namespace, &self.export_to, kind);
        if let Some(selector) = &self.workload_selector {
            c.at("workloadSelector", |c| {
                check_selector_labels(c, "matchLabels", &selector.match_labels);
                if selector.match_labels.is_empty() {
                    c.warn("workload selector specified without labels");
                }
            });
        }
    }
}

impl Subset {
    fn check(&self, c: &mut Checker, namespace: &str) {
        if self.name.is_empty() {
            c.error_at("name", "subset name cannot be empty");
        } else if !host::is_dns_label(&self.name) {
            c.error_at("name", format!("subset name is invalid: {}", self.name));
        }
        check_labels(c, "labels", &self.labels);
        if let Some(policy) = &self.traffic_policy {
            c.at("trafficPolicy", |c| policy.check(c, namespace));
        }
    }
}

impl TrafficPolicy {
    pub(crate) fn check(&self, c: &mut Checker, namespace: &str) {
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none()
        {
            c.error("traffic policy must have at least one field");
            return;
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            c.error("tunnel and proxyProtocol must not be set together");
            return;
        }
        check_common(
            c,
            namespace,
            self.outlier_detection.as_ref(),
            self.connection_pool.as_ref(),
            self.load_balancer.as_ref(),
            self.tls.as_ref(),
        );
        c.each("portLevelSettings", &self.port_level_settings, |c, _, p| {
            p.check(c, namespace);
        });
        if let Some(tunnel) = &self.tunnel {
            c.at("tunnel", |c| tunnel.check(c));
        }
        if let Some(budget) = &self.retry_budget
            && let Some(p) = budget.percent
            && !(0.0..=100.0).contains(&p)
        {
            c.error_at(
                "retryBudget.percent",
                format!("percent {p} must be in the range 0..100"),
            );
        }
    }
}

/// The checks a host-wide and a port-level policy share.
fn check_common(
    c: &mut Checker,
    namespace: &str,
    outlier: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(outlier) = outlier {
        c.at("outlierDetection", |c| outlier.check(c));
    }
    if let Some(pool) = pool {
        c.at("connectionPool", |c| pool.check(c));
    }
    if let Some(lb) = lb {
        c.at("loadBalancer", |c| lb.check(c, outlier));
    }
    if let Some(tls) = tls {
        c.at("tls", |c| tls.check(c, namespace));
    }
}

impl PortTrafficPolicy {
    fn check(&self, c: &mut Checker, namespace: &str) {
        match &self.port {
            None => c.error("portLevelSettings entries need a port"),
            Some(port) => check_port(c, "port.number", port.number),
        }
        if self.outlier_detection.is_none()
            && self.connection_pool.is_none()
            && self.load_balancer.is_none()
            && self.tls.is_none()
        {
            c.error("port traffic policy must have at least one field besides the port");
            return;
        }
        check_common(
            c,
            namespace,
            self.outlier_detection.as_ref(),
            self.connection_pool.as_ref(),
            self.load_balancer.as_ref(),
            self.tls.as_ref(),
        );
    }
}

impl OutlierDetection {
    fn check(&self, c: &mut Checker) {
        check_duration(c, "baseEjectionTime", self.base_ejection_time);
        check_duration(c, "interval", self.interval);
        if self.consecutive_errors != 0 {
            c.warn("outlier detection consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead");
        }
        if !self.split_external_local_origin_errors
            && self
                .consecutive_local_origin_failures
                .is_some_and(|n| n > 0)
        {
            c.error_at(
                "consecutiveLocalOriginFailures",
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        for (field, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if !(0..=100).contains(&value) {
                c.error_at(field, format!("percentage {value} is not in range 0..100"));
            }
        }
        for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                c.error_at(
                    &format!("outlierDetectionHttpErrorCodes[{i}]"),
                    format!("HTTP status {code} must be in the range 100..599"),
                );
            }
        }
    }
}

impl TunnelSettings {
    fn check(&self, c: &mut Checker) {
        if !self.protocol.is_empty() && self.protocol != "CONNECT" && self.protocol != "POST" {
            c.error_at(
                "protocol",
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if let (Err(e), false) = (
            host::fqdn(&self.target_host),
            host::is_ip(&self.target_host),
        ) {
            c.error_at(
                "targetHost",
                format!("tunnel target host must be valid FQDN or IP address: {e}"),
            );
        }
        check_port(c, "targetPort", self.target_port);
    }
}

#[cfg(test)]
mod tests {
    fn errors(spec: &str) -> Vec<String> {
        super::super::findings("DestinationRule", "r", spec, false)
    }
    #[test]
    fn valid_rule_passes() {
        let e = errors(
            "  host: cart.shop.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn host_is_required() {
        let e = errors("  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n");
        assert!(
            e[0].contains("spec.host: empty domain name not allowed"),
            "{e:?}"
        );
    }

    #[test]
    fn subset_names_must_be_unique_dns_labels() {
        let e = errors("  host: a.b\n  subsets:\n  - name: v1\n  - name: v1\n  - name: v1.0\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("duplicate subset names: v1"));
        assert!(e[1].contains("subset name is invalid: v1.0"));
    }

    #[test]
    fn empty_traffic_policy_is_rejected() {
        let e = errors("  host: a.b\n  trafficPolicy: {}\n");
        assert!(
            e[0].contains("traffic policy must have at least one field"),
            "{e:?}"
        );
    }

    #[test]
    fn outlier_percentages_are_bounded() {
        let e = errors(
            "  host: a.b\n  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 150\n      interval: 0.0005s\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn unknown_lb_algorithm_suggests_the_nearest() {
        let e = errors("  host: a.b\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBBIN}\n");
        assert!(e[0].contains("did you mean `ROUND_ROBIN`"), "{e:?}");
    }

    #[test]
    fn selector_rules_stay_in_their_namespace() {
        let e = errors(
            "  host: a.b\n  workloadSelector: {matchLabels: {app: x}}\n  exportTo: [billing]\n",
        );
        assert!(
            e[0].contains("cannot have exportTo beyond current namespace"),
            "{e:?}"
        );
        let e = errors("  host: a.b\n  workloadSelector: {matchLabels: {app: \"x-*\"}}\n");
        assert!(
            e[0].contains("wildcard is not supported in selector"),
            "{e:?}"
        );
    }
}
