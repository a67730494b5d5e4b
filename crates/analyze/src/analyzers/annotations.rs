//! `annotations.*`: Istio annotations on Kubernetes resources that Istio does not know,
//! that sit on the wrong kind of resource, that have bad values, or that are
//! deprecated or alpha.

use std::net::IpAddr;

use trellis_api::Resource;

use crate::messages::{
    ALPHA_ANNOTATION, DEPRECATED_ANNOTATION, INVALID_ANNOTATION, MISPLACED_ANNOTATION,
    UNKNOWN_ANNOTATION,
};
use crate::{Analyzer, Context, Reporter};

/// The maturity of the feature an annotation controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maturity {
    Alpha,
    Beta,
    Stable,
}

/// Where an annotation may be written: `Any` kind, or the listed kinds.
const ANY: &[&str] = &["Any"];
const POD: &[&str] = &["Pod"];
const SERVICE: &[&str] = &["Service"];
const WORKLOAD_ENTRY: &[&str] = &["WorkloadEntry"];
const GATEWAY: &[&str] = &["Gateway"];

/// One annotation Istio defines.
struct Known {
    name: &'static str,
    maturity: Maturity,
    deprecated: bool,
    kinds: &'static [&'static str],
}

const fn known(
    name: &'static str,
    maturity: Maturity,
    deprecated: bool,
    kinds: &'static [&'static str],
) -> Known {
    Known {
        name,
        maturity,
        deprecated,
        kinds,
    }
}

use Maturity::{Alpha, Beta, Stable};

/// The annotations Istio defines (istio.io/api `annotation`), with the feature
/// maturity, whether deprecated, and the kinds they belong on.
static KNOWN: &[Known] = &[
    known(
        "alpha.istio.io/canonical-serviceaccounts",
        Alpha,
        true,
        SERVICE,
    ),
    known(
        "alpha.istio.io/kubernetes-serviceaccounts",
        Alpha,
        true,
        SERVICE,
    ),
    known("ambient.istio.io/bypass-inbound-capture", Alpha, false, POD),
    known("ambient.istio.io/dns-capture", Alpha, false, POD),
    known("ambient.istio.io/redirection", Beta, false, POD),
    known(
        "ambient.istio.io/waypoint-inbound-binding",
        Alpha,
        false,
        &["GatewayClass", "Gateway"],
    ),
    known("galley.istio.io/analyze-suppress", Alpha, false, ANY),
    known("gateway.istio.io/controller-version", Alpha, false, ANY),
    known("gateway.istio.io/name-override", Alpha, false, GATEWAY),
    known("gateway.istio.io/service-account", Alpha, false, GATEWAY),
    known("inject.istio.io/templates", Alpha, false, POD),
    known(
        "istio.io/autoRegistrationGroup",
        Alpha,
        false,
        WORKLOAD_ENTRY,
    ),
    known("istio.io/connectedAt", Alpha, false, WORKLOAD_ENTRY),
    known("istio.io/disconnectedAt", Alpha, false, WORKLOAD_ENTRY),
    known("istio.io/dry-run", Alpha, false, &["AuthorizationPolicy"]),
    known("istio.io/reroute-virtual-interfaces", Alpha, false, POD),
    known("istio.io/rev", Alpha, false, POD),
    known("istio.io/workloadController", Alpha, false, WORKLOAD_ENTRY),
    known("kubernetes.io/ingress.class", Stable, false, &["Ingress"]),
    known("networking.istio.io/exportTo", Alpha, false, SERVICE),
    known("networking.istio.io/service-type", Alpha, false, GATEWAY),
    known(
        "networking.istio.io/traffic-distribution",
        Alpha,
        false,
        &["Service", "ServiceEntry"],
    ),
    known("prometheus.istio.io/merge-metrics", Alpha, false, POD),
    known("proxy.istio.io/config", Beta, false, POD),
    known("proxy.istio.io/overrides", Alpha, false, POD),
    known(
        "readiness.status.sidecar.istio.io/applicationPorts",
        Alpha,
        false,
        POD,
    ),
    known(
        "readiness.status.sidecar.istio.io/failureThreshold",
        Alpha,
        false,
        POD,
    ),
    known(
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        Alpha,
        false,
        POD,
    ),
    known(
        "readiness.status.sidecar.istio.io/periodSeconds",
        Alpha,
        false,
        POD,
    ),
    known("sidecar.istio.io/agentLogLevel", Alpha, false, POD),
    known("sidecar.istio.io/bootstrapOverride", Alpha, false, POD),
    known("sidecar.istio.io/componentLogLevel", Alpha, false, POD),
    known("sidecar.istio.io/discoveryAddress", Alpha, true, POD),
    known("sidecar.istio.io/enableCoreDump", Alpha, false, POD),
    known("sidecar.istio.io/extraStatTags", Alpha, true, POD),
    known("sidecar.istio.io/inject", Beta, true, POD),
    known("sidecar.istio.io/interceptionMode", Alpha, false, POD),
    known("sidecar.istio.io/logLevel", Alpha, false, POD),
    known("sidecar.istio.io/nativeSidecar", Alpha, false, POD),
    known("sidecar.istio.io/proxyCPU", Alpha, false, POD),
    known("sidecar.istio.io/proxyCPULimit", Alpha, false, POD),
    known("sidecar.istio.io/proxyImage", Alpha, false, POD),
    known("sidecar.istio.io/proxyImageType", Alpha, false, POD),
    known("sidecar.istio.io/proxyMemory", Alpha, false, POD),
    known("sidecar.istio.io/proxyMemoryLimit", Alpha, false, POD),
    known("sidecar.istio.io/rewriteAppHTTPProbers", Alpha, false, POD),
    known("sidecar.istio.io/statsCompression", Alpha, false, POD),
    known("sidecar.istio.io/statsEvictionInterval", Alpha, false, POD),
    known("sidecar.istio.io/statsFlushInterval", Alpha, false, POD),
    known("sidecar.istio.io/statsHistogramBuckets", Alpha, false, POD),
    known("sidecar.istio.io/statsInclusionPrefixes", Alpha, true, POD),
    known("sidecar.istio.io/statsInclusionRegexps", Alpha, true, POD),
    known("sidecar.istio.io/statsInclusionSuffixes", Alpha, true, POD),
    known("sidecar.istio.io/status", Alpha, false, POD),
    known("sidecar.istio.io/userVolume", Alpha, false, POD),
    known("sidecar.istio.io/userVolumeMount", Alpha, false, POD),
    known("status.sidecar.istio.io/port", Alpha, false, POD),
    known(
        "topology.istio.io/controlPlaneClusters",
        Alpha,
        false,
        &["Namespace"],
    ),
    known("traffic.istio.io/nodeSelector", Stable, false, SERVICE),
    known(
        "traffic.sidecar.istio.io/excludeInboundPorts",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/excludeInterfaces",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/includeInboundPorts",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/includeOutboundPorts",
        Alpha,
        false,
        POD,
    ),
    known(
        "traffic.sidecar.istio.io/kubevirtInterfaces",
        Alpha,
        true,
        POD,
    ),
];

fn lookup(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

/// Annotations in Istio's namespace (a key prefix ending in `istio.io`), plus the one
/// Kubernetes annotation Istio documents.
fn is_istio_annotation(key: &str) -> bool {
    key == "kubernetes.io/ingress.class"
        || key
            .split('/')
            .next()
            .is_some_and(|p| p.ends_with("istio.io"))
}

/// The kinds whose annotations are checked, with their API group.
const CHECKED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Service"),
    ("", "Pod"),
    ("apps", "Deployment"),
];

fn checked_resources<'a>(cx: &'a Context<'_>) -> impl Iterator<Item = &'a Resource> + 'a {
    CHECKED.iter().flat_map(|(g, k)| cx.of(g, k))
}

/// Istio's `annotations.K8sAnalyzer`.
pub struct K8sAnalyzer;

impl Analyzer for K8sAnalyzer {
    fn name(&self) -> &'static str {
        "annotations.K8sAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks for unknown, misplaced, invalid and deprecated Istio annotations on Kubernetes resources"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let at = Some("metadata.annotations");
        for r in checked_resources(cx) {
            for (key, value) in &r.meta.annotations {
                if !is_istio_annotation(key) {
                    continue;
                }
                let Some(def) = lookup(key) else {
                    out.report(
                        &UNKNOWN_ANNOTATION,
                        r,
                        at,
                        format!(
                            "`{key}` is not an annotation Istio knows; check its spelling \
                             against https://istio.io/latest/docs/reference/config/annotations/"
                        ),
                    );
                    continue;
                };
                if def.deprecated {
                    // Keeping the deprecated annotation beside the label that replaces it is deliberate.
                    let has_replacement =
                        key == "sidecar.istio.io/inject" && r.meta.labels.contains_key(key);
                    if !has_replacement {
                        let instead = if key == "sidecar.istio.io/inject" {
                            "; use the `sidecar.istio.io/inject` label instead"
                        } else {
                            ""
                        };
                        out.report(
                            &DEPRECATED_ANNOTATION,
                            r,
                            at,
                            format!(
                                "annotation `{key}` is deprecated and may stop working in a \
                                 future Istio release{instead}"
                            ),
                        );
                    }
                }
                if def.kinds == ANY {
                    continue;
                }
                if !def.kinds.contains(&r.kind.as_str()) {
                    out.report(
                        &MISPLACED_ANNOTATION,
                        r,
                        at,
                        format!(
                            "annotation `{key}` has no effect on a {}: it belongs on {}{}",
                            r.kind,
                            def.kinds.join(", "),
                            if r.kind == "Deployment" && def.kinds == POD {
                                " (put it under spec.template.metadata.annotations)"
                            } else {
                                ""
                            }
                        ),
                    );
                    continue;
                }
                if let Err(why) = validate(key, value) {
                    out.report(
                        &INVALID_ANNOTATION,
                        r,
                        at,
                        format!("annotation `{key}` has an invalid value `{value}`: {why}"),
                    );
                }
            }
        }
    }
}

/// Annotations that installations set on their own; reporting them as alpha is noise.
const ALWAYS_QUIET: &[&str] = &[
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

/// Annotations the injector writes on every pod when the CNI plugin does the traffic redirection.
const QUIET_WITH_CNI: &[&str] = &[
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
];

/// Istio's `annotations.AlphaAnalyzer` (run only when named).
pub struct AlphaAnalyzer;

impl Analyzer for AlphaAnalyzer {
    fn name(&self) -> &'static str {
        "annotations.AlphaAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks for Istio annotations of alpha-phase features on Kubernetes resources"
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for r in checked_resources(cx) {
            // Without the istio-init container, the CNI plugin redirects traffic and the
            // injector sets the redirection annotations itself.
            let cni = r.kind == "Pod"
                && !r.raw["spec"]["initContainers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["name"] == "istio-init");
            for key in r.meta.annotations.keys() {
                if !is_istio_annotation(key) || ALWAYS_QUIET.contains(&key.as_str()) {
                    continue;
                }
                if cni && QUIET_WITH_CNI.contains(&key.as_str()) {
                    continue;
                }
                if lookup(key).is_some_and(|d| d.maturity == Alpha) {
                    out.report(
                        &ALPHA_ANNOTATION,
                        r,
                        Some("metadata.annotations"),
                        format!(
                            "annotation `{key}` belongs to an alpha-phase feature, which may be \
                             incomplete or change; think twice before relying on it in production"
                        ),
                    );
                }
            }
        }
    }
}

/// Why an annotation's value is not what Istio's injector parses.
#[derive(Debug, thiserror::Error)]
enum InvalidValue {
    /// Not one of a fixed set of spellings, or not of the expected shape.
    #[error("expected {0}")]
    Expected(&'static str),
    #[error("`{0}` is not a port number (0-65535)")]
    NotAPort(String),
    #[error("`{0}` is not a CIDR range such as 10.0.0.0/8")]
    NotACidr(String),
    #[error("not valid YAML: {0}")]
    NotYaml(trellis_api::yaml::SyntaxError),
}

/// Checks the values Istio's injector parses; other annotations take any text.
fn validate(key: &str, value: &str) -> Result<(), InvalidValue> {
    match key {
        "sidecar.istio.io/interceptionMode" => match value {
            "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
            _ => Err(InvalidValue::Expected("REDIRECT, TPROXY or NONE")),
        },
        "status.sidecar.istio.io/port" => parse_port(value).map(|_| ()),
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => {
            parse_unsigned(value, u32::MAX.into())
                .map(|_| ())
                .map_err(|_| InvalidValue::Expected("a whole number of at most 4294967295"))
        }
        "traffic.sidecar.istio.io/includeOutboundIPRanges" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeOutboundIPRanges"
        | "traffic.sidecar.istio.io/excludeOutboundIPRanges" => cidr_list(value),
        "traffic.sidecar.istio.io/includeInboundPorts" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeInboundPorts"
        | "traffic.sidecar.istio.io/excludeInboundPorts"
        | "traffic.sidecar.istio.io/excludeOutboundPorts" => port_list(value),
        "prometheus.istio.io/merge-metrics" => match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" | "0" | "f" | "F" | "false" | "FALSE"
            | "False" => Ok(()),
            _ => Err(InvalidValue::Expected("true or false")),
        },
        "proxy.istio.io/config" => proxy_config(value),
        _ => Ok(()),
    }
}

/// A decimal number without sign or spaces, at most `max`.
fn parse_unsigned(text: &str, max: u64) -> Result<u64, ()> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse::<u64>().ok().filter(|n| *n <= max).ok_or(())
}

fn parse_port(text: &str) -> Result<u64, InvalidValue> {
    parse_unsigned(text.trim(), u16::MAX.into())
        .map_err(|_| InvalidValue::NotAPort(text.trim().to_string()))
}

/// A comma-separated list of ports; an empty list is allowed.
fn port_list(value: &str) -> Result<(), InvalidValue> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(());
    }
    value.split(',').try_for_each(|p| parse_port(p).map(|_| ()))
}

/// A comma-separated list of CIDR ranges such as `10.0.0.0/8`; an empty list is allowed.
fn cidr_list(value: &str) -> Result<(), InvalidValue> {
    if value.is_empty() {
        return Ok(());
    }
    value.split(',').try_for_each(|cidr| {
        let bad = || InvalidValue::NotACidr(cidr.to_string());
        let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let ok_bits = bits.len() <= 3
            && !(bits.len() > 1 && bits.starts_with('0'))
            && parse_unsigned(bits, max).is_ok();
        if ok_bits { Ok(()) } else { Err(bad()) }
    })
}

/// The proxy config override must be a YAML (or JSON) mapping.
fn proxy_config(value: &str) -> Result<(), InvalidValue> {
    let docs = trellis_api::yaml::parse(value).map_err(InvalidValue::NotYaml)?;
    match docs.first().map(|d| d.root.to_json()) {
        None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => Ok(()),
        Some(_) => Err(InvalidValue::Expected("a mapping of ProxyConfig fields")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_annotations_are_recognised_by_prefix() {
        assert!(is_istio_annotation("networking.istio.io/exportThree"));
        assert!(is_istio_annotation("istio.io/rev"));
        assert!(is_istio_annotation("kubernetes.io/ingress.class"));
        assert!(!is_istio_annotation("kubernetes.io/psp"));
        assert!(!is_istio_annotation("helm.sh/hook"));
        assert!(!is_istio_annotation("example.com/istio.io"));
    }

    #[test]
    fn the_table_is_sorted_and_unique() {
        for pair in KNOWN.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} then {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn values_are_checked_as_the_injector_parses_them() {
        let ok = |k, v| validate(k, v).is_ok();
        let delay = "readiness.status.sidecar.istio.io/initialDelaySeconds";
        assert!(ok(delay, "10"));
        assert!(!ok(delay, "bar"));
        assert!(!ok(delay, "+10"));
        assert!(!ok(delay, "-1"));
        assert!(!ok(delay, "4294967296"));
        let include = "traffic.sidecar.istio.io/includeOutboundIPRanges";
        assert!(ok(include, "*"));
        assert!(ok(include, "10.0.0.0/8,fd00::/8"));
        assert!(!ok(include, "10.0.0.0"));
        assert!(!ok(include, "10.0.0.0/33"));
        let ports = "traffic.sidecar.istio.io/excludeInboundPorts";
        assert!(ok(ports, "15020, 8080"));
        assert!(ok(ports, ""));
        assert!(!ok(ports, "15020,http"));
        assert!(!ok(ports, "70000"));
        assert!(ok("traffic.sidecar.istio.io/includeInboundPorts", "*"));
        assert!(ok("sidecar.istio.io/interceptionMode", "TPROXY"));
        assert!(!ok("sidecar.istio.io/interceptionMode", "redirect"));
        assert!(ok("prometheus.istio.io/merge-metrics", "False"));
        assert!(!ok("prometheus.istio.io/merge-metrics", "no"));
        assert!(ok("proxy.istio.io/config", "{}"));
        assert!(ok("proxy.istio.io/config", "concurrency: 2"));
        assert!(!ok("proxy.istio.io/config", "- a"));
    }
}
