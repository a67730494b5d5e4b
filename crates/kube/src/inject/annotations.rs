//! Istio's per-pod injection settings, read from the pod's annotations and checked:
//! the proxy's resources, image and log level (`sidecar.istio.io/*`), its proxy config
//! (`proxy.istio.io/config`) and what capture leaves out (`traffic.sidecar.istio.io/*`). A value the annotation cannot take is an
//! [`InjectError::Annotation`] naming it, so the pod is refused with a reason instead of
//! running with a setting silently dropped.

use serde_json::Value;

use super::InjectError;

pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// What a pod's annotations change about its sidecar (each `None`: the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    pub image: Option<String>,
    /// A `TRELLIS_LOG` filter (Istio's `warning` and `critical` mapped to ours).
    pub log_level: Option<String>,
    /// `*` or CIDRs, comma-separated (empty: no outbound capture).
    pub include_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ports: Option<String>,
    /// `*` or ports, comma-separated.
    pub include_inbound_ports: Option<String>,
    pub exclude_inbound_ports: Option<String>,
    /// Istio's ProxyConfig (YAML) for this pod, handed to the proxy as the
    /// `PROXY_CONFIG` variable (it reads `terminationDrainDuration`).
    pub proxy_config: Option<String>,
    /// `proxyMetadata.ISTIO_META_DNS_CAPTURE: "true"` in `proxy.istio.io/config`: the
    /// app's DNS queries go to the sidecar, which answers for the mesh's names.
    pub dns_capture: bool,
}

impl Overrides {
    /// Reads and checks the annotations of `metadata`.
    pub fn read(metadata: &Value) -> Result<Overrides, InjectError> {
        let get = |key: &str| {
            metadata["annotations"]
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
        };
        let quantity = |key: &'static str| -> Result<Option<String>, InjectError> {
            match get(key) {
                None => Ok(None),
                Some(v) if is_quantity(v) => Ok(Some(v.to_string())),
                Some(v) => Err(bad(
                    key,
                    v,
                    "a Kubernetes quantity (such as 100m, 0.5, 128Mi)",
                )),
            }
        };
        let list = |key: &'static str,
                    star: bool,
                    item: fn(&str) -> bool,
                    expected: &'static str|
         -> Result<Option<String>, InjectError> {
            let Some(v) = get(key) else { return Ok(None) };
            if star && v == "*" {
                return Ok(Some("*".into()));
            }
            let items: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if items.iter().all(|i| item(i)) {
                Ok(Some(items.join(",")))
            } else {
                Err(bad(key, v, expected))
            }
        };
        let image = match get(PROXY_IMAGE) {
            None => None,
            Some(v) if !v.is_empty() && !v.contains(char::is_whitespace) => Some(v.to_string()),
            Some(v) => return Err(bad(PROXY_IMAGE, v, "an image reference")),
        };
        let log_level = match get(LOG_LEVEL) {
            None => None,
            Some(v) => Some(
                log_filter(v)
                    .ok_or_else(|| {
                        bad(
                            LOG_LEVEL,
                            v,
                            "a level: trace, debug, info, warning, error, critical or off",
                        )
                    })?
                    .to_string(),
            ),
        };
        let proxy_config = match get(PROXY_CONFIG) {
            None => None,
            Some(v) if proxy_config_is_valid(v) => Some(v.to_string()),
            Some(v) => {
                return Err(bad(
                    PROXY_CONFIG,
                    v,
                    "Istio's ProxyConfig as YAML, e.g. `terminationDrainDuration: 10s`",
                ));
            }
        };
        let dns_capture = proxy_config.as_deref().is_some_and(dns_capture_asked);
        Ok(Overrides {
            proxy_config,
            dns_capture,
            cpu: quantity(PROXY_CPU)?,
            memory: quantity(PROXY_MEMORY)?,
            cpu_limit: quantity(PROXY_CPU_LIMIT)?,
            memory_limit: quantity(PROXY_MEMORY_LIMIT)?,
            image,
            log_level,
            include_outbound_ip_ranges: list(
                INCLUDE_OUTBOUND_IP_RANGES,
                true,
                is_cidr,
                "`*` or a comma-separated list of CIDRs",
            )?,
            exclude_outbound_ip_ranges: list(
                EXCLUDE_OUTBOUND_IP_RANGES,
                false,
                is_cidr,
                "a comma-separated list of CIDRs",
            )?,
            exclude_outbound_ports: list(
                EXCLUDE_OUTBOUND_PORTS,
                false,
                is_port,
                "a comma-separated list of ports (1-65535)",
            )?,
            include_inbound_ports: list(
                INCLUDE_INBOUND_PORTS,
                true,
                is_port,
                "`*` or a comma-separated list of ports (1-65535)",
            )?,
            exclude_inbound_ports: list(
                EXCLUDE_INBOUND_PORTS,
                false,
                is_port,
                "a comma-separated list of ports (1-65535)",
            )?,
        })
    }
}

fn bad(annotation: &'static str, value: &str, expected: &'static str) -> InjectError {
    InjectError::Annotation {
        annotation,
        value: value.to_string(),
        expected,
    }
}

/// Istio's proxy log levels as `TRELLIS_LOG` filters.
fn log_filter(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// A YAML mapping whose `terminationDrainDuration`, if any, is a duration (the one
/// field the proxy reads; the others are Istio's to define).
/// Whether a (valid) ProxyConfig asks for DNS capture, as Istio reads it.
fn dns_capture_asked(text: &str) -> bool {
    let Ok(docs) = trellis_api::yaml::parse(text) else {
        return false;
    };
    docs.first().is_some_and(|doc| {
        let json = doc.root.to_json();
        let flag = &json["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"];
        flag.as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || flag == &Value::Bool(true)
    })
}

fn proxy_config_is_valid(text: &str) -> bool {
    let Ok(docs) = trellis_api::yaml::parse(text) else {
        return false;
    };
    let [doc] = docs.as_slice() else {
        return false;
    };
    let json = doc.root.to_json();
    let Some(map) = json.as_object() else {
        return false;
    };
    match map.get("terminationDrainDuration") {
        None => true,
        Some(Value::String(d)) => trellis_api::values::Duration::parse(d).is_ok(),
        Some(_) => false,
    }
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok_and(|p| p > 0)
}

/// `ADDRESS/PREFIX` (IPv4 or IPv6), or a bare address.
fn is_cidr(s: &str) -> bool {
    let (address, prefix) = s.split_once('/').unwrap_or((s, ""));
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

/// A Kubernetes resource quantity: a decimal number, then an optional binary
/// (`Ki`…`Ei`) or decimal (`n u m k M G T P E`) suffix or exponent (`e3`).
fn is_quantity(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    if parts.next().is_some() || (whole.is_empty() && fraction.is_none_or(str::is_empty)) {
        return false;
    }
    const SUFFIXES: [&str; 15] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
    ];
    if SUFFIXES.contains(&suffix) || suffix == "Ei" {
        return true;
    }
    suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(annotations: Value) -> Result<Overrides, InjectError> {
        Overrides::read(&json!({ "annotations": annotations }))
    }

    #[test]
    fn istios_annotations_are_read() {
        let o = read(json!({
            PROXY_CPU: "200m", PROXY_MEMORY: "256Mi", PROXY_CPU_LIMIT: "1",
            PROXY_MEMORY_LIMIT: "1Gi", PROXY_IMAGE: "example.org/proxy:1", LOG_LEVEL: "warning",
            INCLUDE_OUTBOUND_IP_RANGES: "10.0.0.0/8, 192.168.0.0/16",
            EXCLUDE_OUTBOUND_PORTS: "3306,5432", INCLUDE_INBOUND_PORTS: "*",
        }))
        .expect("valid");
        assert_eq!(o.cpu.as_deref(), Some("200m"));
        assert_eq!(o.memory_limit.as_deref(), Some("1Gi"));
        assert_eq!(o.image.as_deref(), Some("example.org/proxy:1"));
        assert_eq!(o.log_level.as_deref(), Some("warn"));
        assert_eq!(
            o.include_outbound_ip_ranges.as_deref(),
            Some("10.0.0.0/8,192.168.0.0/16")
        );
        assert_eq!(o.exclude_outbound_ports.as_deref(), Some("3306,5432"));
        assert_eq!(o.include_inbound_ports.as_deref(), Some("*"));
        assert_eq!(read(json!({})).expect("none"), Overrides::default());
        let drain = "terminationDrainDuration: 20s\nholdApplicationUntilProxyStarts: true";
        let o = read(json!({ PROXY_CONFIG: drain })).expect("valid");
        assert_eq!(o.proxy_config.as_deref(), Some(drain));
    }

    #[test]
    fn a_bad_value_names_its_annotation() {
        for (key, value) in [
            (PROXY_CPU, "lots"),
            (PROXY_MEMORY, "12 Mi"),
            (PROXY_MEMORY_LIMIT, "1.2.3Gi"),
            (LOG_LEVEL, "loud"),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "*"),
            (EXCLUDE_OUTBOUND_PORTS, "http"),
            (INCLUDE_INBOUND_PORTS, "70000"),
            (EXCLUDE_INBOUND_PORTS, "0"),
            (PROXY_CONFIG, "terminationDrainDuration: soon"),
            (PROXY_CONFIG, "[not, a, map]"),
        ] {
            let e = read(json!({ key: value })).expect_err(value);
            assert!(
                e.to_string().starts_with(&format!("annotation `{key}`: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn quantities_follow_kubernetes() {
        for ok in [
            "100m", "0.5", ".5", "2", "128Mi", "1Gi", "1e3", "1E-2", "+1k",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for no in ["", "m", "1.2.3", "1Qi", "1e", "abc", "1 Mi"] {
            assert!(!is_quantity(no), "{no}");
        }
    }
}
