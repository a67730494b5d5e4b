//! The mesh-wide settings in Istio's ConfigMap (`istio` in the control plane's
//! namespace, key `mesh`, MeshConfig as YAML): the parts cluster mode reads — the
//! trust domain, the root namespace, `discoverySelectors` (which namespaces the
//! control plane sees at all) and `outboundTrafficPolicy` (capture mode). Other
//! MeshConfig fields are accepted and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use trellis_api::kube::LabelSelector;

/// Istio's ConfigMap name and key.
pub const CONFIG_MAP: &str = "istio";
pub const MESH_KEY: &str = "mesh";

/// What cluster mode reads from MeshConfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub root_namespace: Option<String>,
    /// OR'd: a namespace is seen when it matches any; none seen means all are.
    #[serde(default)]
    pub discovery_selectors: Vec<LabelSelector>,
    /// What capturing sidecars do with destinations the mesh does not know.
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// MeshConfig `outboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (Istio's default mesh config) or `REGISTRY_ONLY`.
    #[serde(default)]
    pub mode: Option<String>,
}

impl MeshConfig {
    /// The outbound policy: `REGISTRY_ONLY` when it says so, else Istio's default,
    /// `ALLOW_ANY`.
    pub fn outbound_policy(&self) -> trellis_control::OutboundPolicy {
        match self
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
        {
            Some("REGISTRY_ONLY") => trellis_control::OutboundPolicy::RegistryOnly,
            _ => trellis_control::OutboundPolicy::AllowAny,
        }
    }
}

/// Why the `mesh` key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    #[error("ConfigMap {namespace}/{CONFIG_MAP} key `{MESH_KEY}`: YAML line {line}: {message}")]
    Syntax {
        namespace: String,
        line: u32,
        message: String,
    },
    #[error("ConfigMap {namespace}/{CONFIG_MAP} key `{MESH_KEY}`: {path}: {message}")]
    Field {
        namespace: String,
        path: String,
        message: String,
    },
}

impl MeshConfig {
    /// Reads the `mesh` key's text (`namespace` names the ConfigMap in errors).
    pub fn parse(namespace: &str, text: &str) -> Result<MeshConfig, MeshConfigError> {
        let docs = trellis_api::yaml::parse(text).map_err(|e| MeshConfigError::Syntax {
            namespace: namespace.into(),
            line: e.line,
            message: e.message.clone(),
        })?;
        let Some(doc) = docs.into_iter().next() else {
            return Ok(MeshConfig::default());
        };
        let json = doc.root.to_json();
        if json.is_null() {
            return Ok(MeshConfig::default());
        }
        serde_path_to_error::deserialize(&json).map_err(|e| MeshConfigError::Field {
            namespace: namespace.into(),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Whether the control plane sees a namespace with these labels.
    pub fn discovers(&self, labels: &BTreeMap<String, String>) -> bool {
        self.discovery_selectors.is_empty()
            || self.discovery_selectors.iter().any(|s| s.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_cluster_mode_uses_and_ignores_the_rest() {
        let m = MeshConfig::parse(
            "istio-system",
            "trustDomain: example.org\nenableTracing: true\ndiscoverySelectors:\n- matchLabels: {env: prod}\n- matchExpressions:\n  - {key: team, operator: In, values: [a, b]}\n",
        )
        .expect("valid");
        assert_eq!(m.trust_domain.as_deref(), Some("example.org"));
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(m.discovers(&labels(&[("env", "prod")])));
        assert!(m.discovers(&labels(&[("team", "b")])));
        assert!(!m.discovers(&labels(&[("team", "c")])));
        assert!(!m.discovers(&labels(&[])));
        assert!(MeshConfig::default().discovers(&labels(&[])));
    }

    #[test]
    fn outbound_traffic_policy_defaults_to_allow_any() {
        use trellis_control::OutboundPolicy;
        let policy = |text: &str| {
            MeshConfig::parse("istio-system", text)
                .expect("valid")
                .outbound_policy()
        };
        assert_eq!(
            policy("trustDomain: cluster.local\n"),
            OutboundPolicy::AllowAny
        );
        assert_eq!(
            policy("outboundTrafficPolicy: {mode: ALLOW_ANY}\n"),
            OutboundPolicy::AllowAny
        );
        assert_eq!(
            policy("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"),
            OutboundPolicy::RegistryOnly
        );
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let e = MeshConfig::parse("istio-system", "discoverySelectors: yes\n")
            .expect_err("a bool is no list of selectors");
        assert!(e.to_string().contains("discoverySelectors"), "{e}");
        assert!(e.to_string().contains("istio-system/istio"), "{e}");
    }
}
