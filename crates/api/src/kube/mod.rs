//! The Kubernetes objects the mesh reads: Namespace, Service, EndpointSlice,
//! Deployment, Pod, ServiceAccount and Secret, a module each, plus the pieces they share.
//!
//! Only the fields the mesh uses are typed. Kubernetes objects carry many more
//! (and the API server adds its own), so unknown fields are accepted and dropped
//! here rather than refused; a field that is typed must still have the right type.
//! Each struct is read from the whole object; `apiVersion`, `kind` and `metadata`
//! are ignored here because the loader keeps them on the `Resource`.

mod base64;
mod deployment;
mod endpoint_slice;
mod namespace;
mod pod;
mod secret;
mod service;
mod service_account;

pub use self::base64::*;
pub use deployment::*;
pub use endpoint_slice::*;
pub use namespace::*;
pub use pod::*;
pub use secret::*;
pub use service::*;
pub use service_account::*;

use serde::{Deserialize, Deserializer, Serialize};

/// `null` reads as the type's default (Kubernetes writes `null` for empty lists and maps).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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

#[cfg(test)]
pub(crate) mod test_support {
    use crate::resource::{Spec, load_str};

    /// Loads one document that must type cleanly and returns its spec.
    pub fn load_one(yaml: &str) -> Spec {
        let loaded = load_str("k.yaml", yaml);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.resources.len(), 1);
        loaded.resources[0].spec.clone()
    }
}
