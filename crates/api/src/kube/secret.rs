//! Secret: its type, `data` (base64, refused on load when it is not) and `stringData`
//! (plain text, winning over `data`). Certificates in it are parsed by their users
//! (`compile`, the analyzers), not here.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::base64::{Base64Error, decode_base64};
use super::null_default;

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

/// A `data` value of a Secret that is not base64 (the loader refuses such Secrets,
/// so only a Secret built in code can have one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data[{key}]: {problem}")]
pub struct SecretDataError {
    pub key: String,
    pub problem: Base64Error,
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
    pub fn decoded(&self) -> Result<BTreeMap<String, Vec<u8>>, SecretDataError> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            let bytes = decode_base64(v).map_err(|problem| SecretDataError {
                key: k.clone(),
                problem,
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::test_support::load_one;
    use crate::resource::{Spec, load_str};

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
}
