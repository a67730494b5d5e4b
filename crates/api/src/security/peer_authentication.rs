//! PeerAuthentication: which mutual-TLS mode a workload's inbound side runs in,
//! for the whole mesh, a namespace, or selected workloads (optionally per port).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate};
use crate::meta::{ObjectMeta, WorkloadSelector};

/// `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// The workloads this policy is for; absent means every workload in the
    /// namespace (or the mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for every port not listed in `port_level_mtls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per-port overrides, keyed by the port number written as text (`"8080"`).
    /// Only meaningful with a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerMtls>>,
}

/// The mutual-TLS setting for a scope or a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerMtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// How a server side treats plaintext and mutual-TLS connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Take the mode from the enclosing scope (namespace, then mesh; PERMISSIVE at the top).
    #[default]
    Unset,
    /// Plaintext only; mutual TLS is not offered.
    Disable,
    /// Accept both plaintext and mutual TLS.
    Permissive,
    /// Mutual TLS required.
    Strict,
}

impl PeerAuthentication {
    /// The mode written for the whole scope (UNSET when absent).
    pub fn mode(&self) -> MtlsMode {
        self.mtls.map_or(MtlsMode::Unset, |m| m.mode)
    }

    /// Per-port modes whose keys are valid port numbers, in port order.
    pub fn port_modes(&self) -> Vec<(u16, MtlsMode)> {
        let mut out: Vec<(u16, MtlsMode)> = self
            .port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(k, v)| parse_port_key(k).ok().map(|p| (p, v.mode)))
            .collect();
        out.sort_by_key(|(p, _)| *p);
        out
    }

    /// The mode this policy sets for `port`: the port-level entry if there is one
    /// (and it is not UNSET), else the policy-wide mode.
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        self.port_modes()
            .into_iter()
            .find(|(p, m)| *p == port && *m != MtlsMode::Unset)
            .map_or_else(|| self.mode(), |(_, m)| m)
    }

    /// True when the selector names at least one label.
    pub fn selects_workloads(&self) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// Why a `portLevelMtls` key is refused; each variant keeps the key as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortKeyError {
    #[error(
        "portLevelMtls key `{0}` is not a port number (write the port as digits, such as \"8080\")"
    )]
    NotDigits(String),
    #[error("portLevelMtls key `{0}`: port must be in range 1..65535")]
    OutOfRange(String),
}

/// A `portLevelMtls` key: a decimal port number 1–65535.
pub fn parse_port_key(key: &str) -> Result<u16, PortKeyError> {
    let digits = key.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortKeyError::NotDigits(key.to_string()));
    }
    match digits.parse::<u64>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(PortKeyError::OutOfRange(key.to_string())),
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        super::refuse_dry_run("PeerAuthentication", meta, c);
        if let Some(selector) = &self.selector {
            c.at("selector", |c| super::check_selector(selector, c));
        }
        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        c.at("portLevelMtls", |c| {
            if ports.is_empty() {
                c.error("port level mTLS, if defined, must have at least one element");
                return;
            }
            if !self.selects_workloads() {
                c.error(
                    "mesh/namespace peer authentication cannot have port level mTLS: portLevelMtls requires a selector with labels",
                );
            }
            for key in ports.keys() {
                if let Err(e) = parse_port_key(key) {
                    c.error_at(key, e.to_string());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_support::{assert_clean, assert_error, warnings};

    fn pa(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n  namespace: shop\nspec:\n{spec}"
        )
    }

    const SELECTOR: &str = "  selector:\n    matchLabels:\n      app: cart\n";

    #[test]
    fn namespace_wide_strict_is_valid() {
        assert_clean(&pa("  mtls:\n    mode: STRICT\n"));
    }

    #[test]
    fn port_level_mtls_requires_a_selector() {
        assert_error(
            &pa("  portLevelMtls:\n    \"8080\":\n      mode: PERMISSIVE\n"),
            "requires a selector",
        );
        let empty_selector = pa(
            "  selector:\n    matchLabels: {}\n  portLevelMtls:\n    \"8080\":\n      mode: PERMISSIVE\n",
        );
        assert_error(&empty_selector, "cannot have port level mTLS");
    }

    #[test]
    fn port_level_mtls_must_not_be_empty() {
        assert_error(
            &pa(&format!("{SELECTOR}  portLevelMtls: {{}}\n")),
            "at least one element",
        );
    }

    #[test]
    fn port_level_keys_are_ports_in_range() {
        for bad in ["\"0\"", "\"65536\"", "\"42949672\"", "acd", "\"-1\""] {
            assert_error(
                &pa(&format!(
                    "{SELECTOR}  portLevelMtls:\n    {bad}:\n      mode: STRICT\n"
                )),
                "portLevelMtls",
            );
        }
        assert_clean(&pa(&format!(
            "{SELECTOR}  portLevelMtls:\n    9090:\n      mode: DISABLE\n    \"8080\":\n      mode: STRICT\n"
        )));
    }

    #[test]
    fn unknown_mode_suggests_the_nearest() {
        assert_error(
            &pa("  mtls:\n    mode: STRCT\n"),
            "unknown value `STRCT` (did you mean `STRICT`?",
        );
    }

    #[test]
    fn selector_keys_may_not_be_empty_or_wildcards() {
        assert_error(
            &pa("  selector:\n    matchLabels:\n      \"\": cart\n"),
            "empty key is not supported",
        );
        assert_error(
            &pa("  selector:\n    matchLabels:\n      \"app*\": cart\n"),
            "wildcard is not supported",
        );
        assert_error(
            &pa("  selector:\n    matchLabels:\n      app: \"ca*\"\n"),
            "wildcard is not supported",
        );
    }

    #[test]
    fn empty_selector_is_only_a_warning() {
        let doc = pa("  selector: {}\n");
        assert_clean(&doc);
        assert_eq!(warnings(&doc).len(), 1);
    }

    #[test]
    fn dry_run_annotation_is_refused() {
        let doc = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: \"true\"\nspec: {}\n";
        assert_error(doc, "only supported on AuthorizationPolicy");
    }

    #[test]
    fn port_mode_lookup_prefers_the_port_entry() {
        let spec: PeerAuthentication = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "cart"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"9090": {"mode": "DISABLE"}, "8080": {"mode": "UNSET"}},
        }))
        .expect("valid");
        assert_eq!(spec.mode_for_port(9090), MtlsMode::Disable);
        assert_eq!(spec.mode_for_port(8080), MtlsMode::Strict);
        assert_eq!(spec.mode_for_port(80), MtlsMode::Strict);
    }
}
