//! The Kubernetes objects the mesh reads: Namespace, Service, Deployment, Pod,
//! ServiceAccount and Secret.
//!
//! Only the fields the mesh uses are typed. Kubernetes objects carry many more
//! (and the API server adds its own), so unknown fields are accepted and dropped
//! here rather than refused; a field that is typed must still have the right type.
//! Each struct is read from the whole object; `apiVersion`, `kind` and `metadata`
//! are ignored here because the loader keeps them on the `Resource`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::values::IntOrString;

/// `null` reads as the type's default (Kubernetes writes `null` for empty lists and maps).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Namespace. Its labels (on the resource's metadata) are what the mesh reads,
/// such as `istio-injection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default, deserialize_with = "null_default")]
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec` of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Pods with all these labels are the Service's endpoints; empty selects none
    /// (endpoints are then managed by hand).
    #[serde(default, deserialize_with = "null_default")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<ServicePort>,
    /// `None` (the text) makes the Service headless.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(
        default,
        rename = "clusterIPs",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster_ips: Vec<String>,
    /// The DNS name an ExternalName Service aliases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

/// How a Service is exposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// A transport protocol of a port. Kubernetes knows TCP, UDP and SCTP; other
/// text (some manifests write `HTTP`) is kept as written rather than refused,
/// since Istio's tools read such files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
    /// Anything else, as written.
    Other(String),
}

impl Protocol {
    /// The protocol as Kubernetes writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => Protocol::Other(text),
        })
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the Service has several ports; Istio also reads the protocol
    /// from a `http-`/`grpc-`/... prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    /// The Pod port (number or container port name); defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The application protocol (`http`, `grpc`, `kubernetes.io/h2c`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

impl ServiceSpec {
    /// The type, ClusterIP when not written.
    pub fn service_type(&self) -> ServiceType {
        self.service_type.unwrap_or_default()
    }

    /// True for a headless Service (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

impl Service {
    /// The port named `name`.
    pub fn port_by_name(&self, name: &str) -> Option<&ServicePort> {
        self.spec
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
    }

    /// The port with service port number `number`.
    pub fn port_by_number(&self, number: i32) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == number)
    }

    /// The port a reference designates: a number, or a name.
    pub fn find_port(&self, port: &IntOrString) -> Option<&ServicePort> {
        match port {
            IntOrString::Int(n) => i32::try_from(*n).ok().and_then(|n| self.port_by_number(n)),
            IntOrString::String(s) => match s.parse::<i32>() {
                Ok(n) => self.port_by_number(n),
                Err(_) => self.port_by_name(s),
            },
        }
    }
}

impl ServicePort {
    /// The protocol, TCP when not written.
    pub fn protocol(&self) -> Protocol {
        self.protocol.clone().unwrap_or_default()
    }

    /// The Pod-side port: `targetPort` if written, else the service port.
    pub fn target(&self) -> IntOrString {
        self.target_port
            .clone()
            .unwrap_or(IntOrString::Int(i64::from(self.port)))
    }
}

/// A Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default, deserialize_with = "null_default")]
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec` of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Desired Pod count (1 when not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub selector: LabelSelector,
    #[serde(default, deserialize_with = "null_default")]
    pub template: PodTemplate,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, deserialize_with = "null_default")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<String>,
}

/// How a `matchExpressions` entry compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    #[default]
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// True when `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::meta::selector_matches(&self.match_labels, labels)
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// The Pod template of a workload controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: TemplateMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
}

/// The part of a template's metadata the mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMeta {
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

/// A Pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// `spec` of a Pod (or of a Pod template).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<Container>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub init_containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The deprecated spelling of `serviceAccountName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

impl PodSpec {
    /// The service account the Pod runs as (`default` when none is named).
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .or(self.service_account.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    /// Init containers then containers.
    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.init_containers.iter().chain(&self.containers)
    }

    /// The container with this name.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.all_containers().find(|c| c.name == name)
    }

    /// The container port number a named `targetPort` refers to.
    pub fn named_port(&self, name: &str) -> Option<i32> {
        self.containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }
}

/// Pod-wide security settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
}

/// One container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<EnvVar>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<ContainerSecurityContext>,
}

/// One environment variable: a literal `value`, or a `valueFrom` reference kept as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<serde_json::Value>,
}

/// A port a container listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// Per-container security settings (the mesh reads the user a container runs as).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

impl Container {
    /// The value of a literal environment variable.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }
}

/// What the kubelet reports about a Pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(
        default,
        rename = "podIPs",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub container_statuses: Vec<ContainerStatus>,
}

/// One address of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    #[serde(default)]
    pub ip: String,
}

/// What the kubelet reports about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub ready: bool,
}

/// A ServiceAccount (its name is the workload identity; the rest is rarely used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<ObjectName>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub image_pull_secrets: Vec<ObjectName>,
}

/// A reference to an object by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectName {
    #[serde(default)]
    pub name: String,
}

/// A Secret. `data` values are base64 (checked on load); `stringData` values are
/// plain text and win over `data` for the same key, as the API server merges them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<SecretType>,
    #[serde(default, deserialize_with = "base64_map")]
    pub data: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// The kind of a Secret. Kubernetes accepts any text; the well-known types are named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum SecretType {
    #[default]
    Opaque,
    /// `kubernetes.io/tls`: `tls.crt` and `tls.key` (and optionally `ca.crt`).
    Tls,
    ServiceAccountToken,
    Dockercfg,
    DockerConfigJson,
    BasicAuth,
    SshAuth,
    BootstrapToken,
    /// Any other type, as written.
    Other(String),
}

const SECRET_TYPES: &[(&str, SecretType)] = &[
    ("Opaque", SecretType::Opaque),
    ("kubernetes.io/tls", SecretType::Tls),
    (
        "kubernetes.io/service-account-token",
        SecretType::ServiceAccountToken,
    ),
    ("kubernetes.io/dockercfg", SecretType::Dockercfg),
    (
        "kubernetes.io/dockerconfigjson",
        SecretType::DockerConfigJson,
    ),
    ("kubernetes.io/basic-auth", SecretType::BasicAuth),
    ("kubernetes.io/ssh-auth", SecretType::SshAuth),
    ("bootstrap.kubernetes.io/token", SecretType::BootstrapToken),
];

impl SecretType {
    /// The type as Kubernetes writes it.
    pub fn as_str(&self) -> &str {
        match self {
            SecretType::Other(s) => s,
            known => SECRET_TYPES
                .iter()
                .find(|(_, t)| t == known)
                .map_or("Opaque", |(s, _)| s),
        }
    }
}

impl<'de> Deserialize<'de> for SecretType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(SECRET_TYPES
            .iter()
            .find(|(s, _)| *s == text)
            .map_or(SecretType::Other(text), |(_, t)| t.clone()))
    }
}

impl Serialize for SecretType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads `data:`, refusing values that are not base64 (as the API server would).
fn base64_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map: BTreeMap<String, String> = null_default(d)?;
    for (key, value) in &map {
        if let Err(e) = decode_base64(value) {
            return Err(serde::de::Error::custom(format!(
                "data[{key}] is not base64: {e}"
            )));
        }
    }
    Ok(map)
}

impl Secret {
    /// The type, Opaque when not written.
    pub fn secret_type(&self) -> SecretType {
        self.secret_type.clone().unwrap_or_default()
    }

    /// The bytes stored under `key`: `stringData` first, else `data` decoded.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(text) = self.string_data.get(key) {
            return Some(text.as_bytes().to_vec());
        }
        self.data.get(key).and_then(|v| decode_base64(v).ok())
    }

    /// Every key with its bytes (`stringData` overriding `data`).
    pub fn decoded(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            let bytes = decode_base64(v).map_err(|e| format!("data[{k}]: {e}"))?;
            out.insert(k.clone(), bytes);
        }
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.as_bytes().to_vec());
        }
        Ok(out)
    }

    /// The keys present (from either map).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let mut keys: Vec<&str> = self
            .data
            .keys()
            .chain(self.string_data.keys())
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }
}

/// Decodes standard base64 (RFC 4648, `+/` alphabet, `=` padding required), as
/// Kubernetes stores Secret data. Line breaks are skipped, as Go's decoder does.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "length {} is not a multiple of 4 (is padding `=` missing?)",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.chunks(4).count();
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(format!(
                "misplaced padding `=` near byte {}",
                i * 4 + 4 - pad
            ));
        }
        let mut acc: u32 = 0;
        for (j, &b) in chunk[..4 - pad].iter().enumerate() {
            let Some(v) = sextet(b) else {
                return Err(format!(
                    "invalid character {:?} at byte {}",
                    char::from(b),
                    i * 4 + j
                ));
            };
            acc |= u32::from(v) << (18 - 6 * j);
        }
        let [_, b0, b1, b2] = acc.to_be_bytes();
        out.push(b0);
        if pad < 2 {
            out.push(b1);
        }
        if pad < 1 {
            out.push(b2);
        }
    }
    Ok(out)
}

/// Encodes bytes as standard, padded base64 (the inverse of [`decode_base64`]).
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * j)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Spec, load_str};

    fn load_one(yaml: &str) -> Spec {
        let loaded = load_str("k.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.resources.len(), 1);
        loaded.resources[0].spec.clone()
    }

    #[test]
    fn base64_round_trips() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "\u{0}\u{ff}",
        ] {
            let encoded = encode_base64(text.as_bytes());
            assert_eq!(decode_base64(&encoded).expect("valid"), text.as_bytes());
        }
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(decode_base64("Zm9v\nYmE=").expect("valid"), b"fooba");
    }

    #[test]
    fn bad_base64_is_refused() {
        for bad in ["Zm9", "Zm9v!mFy", "Z===", "Zg==Zg==", "Zm9v YmFy"] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_ports_are_found_by_name_or_number() {
        let Spec::Service(svc) = load_one(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http-web\n    nodePort: 30080\n  - name: grpc\n    port: 9090\n    protocol: TCP\n    appProtocol: grpc\n  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.1]\nstatus:\n  loadBalancer: {}\n",
        ) else {
            panic!("not a Service")
        };
        assert_eq!(svc.spec.service_type(), ServiceType::NodePort);
        assert_eq!(svc.port_by_name("grpc").map(|p| p.port), Some(9090));
        assert_eq!(
            svc.find_port(&IntOrString::Int(80))
                .and_then(|p| p.name.as_deref()),
            Some("http")
        );
        assert_eq!(
            svc.find_port(&IntOrString::String("9090".into()))
                .map(|p| p.port),
            Some(9090)
        );
        assert_eq!(
            svc.port_by_number(9090).map(ServicePort::target),
            Some(IntOrString::Int(9090))
        );
        assert!(svc.port_by_name("nope").is_none());
    }

    #[test]
    fn unknown_kubernetes_fields_are_accepted_but_typed_fields_are_checked() {
        load_one(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  sessionAffinity: None\n  ports:\n  - port: 80\n",
        );
        let loaded = load_str(
            "k.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: eighty\n",
        );
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        assert_eq!(
            loaded.diagnostics[0].path.as_deref(),
            Some("spec.ports[0].port")
        );
        let loaded = load_str(
            "k.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: ClusterIp\n",
        );
        assert!(
            loaded.diagnostics[0]
                .message
                .contains("did you mean `ClusterIP`?"),
            "{:?}",
            loaded.diagnostics
        );
    }

    #[test]
    fn deployment_template_and_pod_spec_are_read() {
        let Spec::Deployment(d) = load_one(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n    matchExpressions:\n    - key: tier\n      operator: NotIn\n      values: [db]\n  template:\n    metadata:\n      labels:\n        app: web\n      annotations:\n        sidecar.istio.io/inject: \"true\"\n    spec:\n      serviceAccountName: web-sa\n      securityContext:\n        runAsUser: 1000\n      initContainers:\n      - name: init\n        image: busybox\n      containers:\n      - name: web\n        image: nginx\n        command: [nginx]\n        args: [-g, daemon off;]\n        env:\n        - name: MODE\n          value: prod\n        - name: POD_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.podIP\n        ports:\n        - containerPort: 8080\n          name: http-web\n        securityContext:\n          runAsUser: 1337\n        resources: {}\n",
        ) else {
            panic!("not a Deployment")
        };
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(2));
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        assert!(spec.selector.matches(&labels));
        labels.insert("tier".to_string(), "db".to_string());
        assert!(!spec.selector.matches(&labels));
        let pod = &spec.template.spec;
        assert_eq!(pod.service_account(), "web-sa");
        assert_eq!(pod.named_port("http-web"), Some(8080));
        assert_eq!(pod.all_containers().count(), 2);
        let web = pod.container("web").expect("container");
        assert_eq!(web.env_value("MODE"), Some("prod"));
        assert!(web.env[1].value_from.is_some());
        assert_eq!(
            web.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(1337)
        );
        assert_eq!(
            spec.template
                .metadata
                .annotations
                .get("sidecar.istio.io/inject")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn pod_status_is_optional() {
        let Spec::Pod(p) = load_one(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: app\nstatus:\n  phase: Running\n  podIP: 10.1.0.5\n  podIPs:\n  - ip: 10.1.0.5\n  containerStatuses:\n  - name: app\n    ready: true\n    restartCount: 0\n",
        ) else {
            panic!("not a Pod")
        };
        let status = p.status.clone().expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.5"));
        assert!(status.container_statuses[0].ready);
        assert_eq!(p.spec.service_account(), "default");
    }

    #[test]
    fn secret_data_is_decoded_and_string_data_wins() {
        let Spec::Secret(s) = load_one(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cert\ntype: kubernetes.io/tls\ndata:\n  tls.crt: Y2VydA==\n  tls.key: a2V5\nstringData:\n  tls.key: plain\n",
        ) else {
            panic!("not a Secret")
        };
        assert_eq!(s.secret_type(), SecretType::Tls);
        assert_eq!(s.get("tls.crt").as_deref(), Some(&b"cert"[..]));
        assert_eq!(s.get("tls.key").as_deref(), Some(&b"plain"[..]));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["tls.crt", "tls.key"]);
        assert_eq!(s.decoded().expect("valid").len(), 2);
    }

    #[test]
    fn secret_types_are_open_ended_and_bad_base64_is_refused() {
        let Spec::Secret(s) = load_one(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: example.com/custom\n",
        ) else {
            panic!("not a Secret")
        };
        assert_eq!(
            s.secret_type(),
            SecretType::Other("example.com/custom".into())
        );
        let loaded = load_str(
            "k.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  key: \"not base64!\"\n",
        );
        assert!(
            loaded.diagnostics[0].message.contains("not base64"),
            "{:?}",
            loaded.diagnostics
        );
    }

    #[test]
    fn namespace_and_service_account_load() {
        load_one(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: enabled\nspec:\n  finalizers: [kubernetes]\nstatus:\n  phase: Active\n",
        );
        let Spec::ServiceAccount(sa) = load_one(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\nautomountServiceAccountToken: false\nimagePullSecrets:\n- name: reg\n",
        ) else {
            panic!("not a ServiceAccount")
        };
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert_eq!(sa.image_pull_secrets[0].name, "reg");
    }
}
