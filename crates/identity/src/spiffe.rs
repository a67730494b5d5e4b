//! SPIFFE ids of mesh workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict: exactly that shape, lowercase DNS-style names, nothing after
//! the service account. Istio's AuthorizationPolicy writes the same id without the
//! scheme (`cluster.local/ns/NS/sa/SA`), its "principal"; both forms read and print.

use std::fmt;
use std::str::FromStr;

/// The trust domain when MeshConfig names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// A workload's identity, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a text is not a mesh SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?} is not a SPIFFE id: it must start with \"spiffe://\"")]
    MissingScheme(String),
    #[error(
        "{0:?} is not a mesh SPIFFE id: expected spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT"
    )]
    WrongShape(String),
    #[error(
        "invalid trust domain {0:?}: lowercase letters, digits, '-', '_' and '.'-separated labels, at most 255 characters"
    )]
    InvalidTrustDomain(String),
    #[error(
        "invalid namespace {0:?}: a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric, at most 63 characters)"
    )]
    InvalidNamespace(String),
    #[error(
        "invalid service account {0:?}: a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
    )]
    InvalidServiceAccount(String),
}

impl SpiffeId {
    /// An id in the default trust domain, `cluster.local`.
    pub fn new(namespace: &str, service_account: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::with_trust_domain(DEFAULT_TRUST_DOMAIN, namespace, service_account)
    }

    /// An id in `trust_domain`; every part is checked.
    pub fn with_trust_domain(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        check_trust_domain(trust_domain)?;
        if !is_dns_label(namespace) {
            return Err(SpiffeIdError::InvalidNamespace(namespace.to_string()));
        }
        if !is_dns_subdomain(service_account) {
            return Err(SpiffeIdError::InvalidServiceAccount(
                service_account.to_string(),
            ));
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// Reads `spiffe://TD/ns/NS/sa/SA`.
    pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeIdError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::MissingScheme(uri.to_string()))?;
        parse_path(rest, uri)
    }

    /// Reads Istio's principal form, `TD/ns/NS/sa/SA` (no scheme).
    pub fn parse_principal(principal: &str) -> Result<SpiffeId, SpiffeIdError> {
        if principal.starts_with(SCHEME) {
            return Err(SpiffeIdError::WrongShape(principal.to_string()));
        }
        parse_path(principal, principal)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Istio's principal form, as AuthorizationPolicy `principals` write it:
    /// `cluster.local/ns/NS/sa/SA`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The URI form (the same as `Display`).
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.principal())
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(s)
    }
}

/// `TD/ns/NS/sa/SA`; `whole` is what the caller gave, for the error.
fn parse_path(path: &str, whole: &str) -> Result<SpiffeId, SpiffeIdError> {
    let shape = || SpiffeIdError::WrongShape(whole.to_string());
    let mut parts = path.split('/');
    let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(shape());
    };
    SpiffeId::with_trust_domain(td, ns, sa)
}

/// Checks a trust domain as SPIFFE allows it, restricted to DNS-like labels.
pub fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    let valid = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::InvalidTrustDomain(trust_domain.to_string()))
    }
}

/// A DNS-1123 label: what Kubernetes allows as a namespace name.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 subdomain: what Kubernetes allows as a service-account name.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_prints_both_forms() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/production/sa/frontend").expect("id");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "production");
        assert_eq!(id.service_account(), "frontend");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/production/sa/frontend"
        );
        assert_eq!(id.principal(), "cluster.local/ns/production/sa/frontend");
        assert_eq!(SpiffeId::parse_principal(&id.principal()), Ok(id.clone()));
        assert_eq!(id.uri().parse::<SpiffeId>(), Ok(id));
    }

    #[test]
    fn default_trust_domain_is_cluster_local() {
        let id = SpiffeId::new("shop", "reviews.v2").expect("id");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/reviews.v2"
        );
    }

    #[test]
    fn anything_but_the_exact_shape_is_refused() {
        for bad in [
            "",
            "cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local//ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster..local/ns/a/sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/-a/sa/b",
            "spiffe://cluster.local/ns/a.b/sa/b",
            "spiffe://cluster.local/ns/a/sa/b_c",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#f",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "SPIFFE://cluster.local/ns/a/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = "a".repeat(64);
        assert!(SpiffeId::new(&long, "sa").is_err());
        assert!(SpiffeId::parse_principal("spiffe://cluster.local/ns/a/sa/b").is_err());
    }

    #[test]
    fn errors_say_which_part_is_wrong() {
        assert!(matches!(
            SpiffeId::parse("spiffe://cluster.local/ns/Bad/sa/b"),
            Err(SpiffeIdError::InvalidNamespace(ns)) if ns == "Bad"
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://cluster.local/ns/a/sa/B"),
            Err(SpiffeIdError::InvalidServiceAccount(_))
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://a b/ns/a/sa/b"),
            Err(SpiffeIdError::InvalidTrustDomain(_))
        ));
        assert!(matches!(
            SpiffeId::parse("https://cluster.local/ns/a/sa/b"),
            Err(SpiffeIdError::MissingScheme(_))
        ));
    }
}
