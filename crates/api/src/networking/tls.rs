//! TLS settings: what a Gateway server or Sidecar ingress listener presents to
//! clients (`ServerTlsSettings`), and what a proxy presents to an upstream
//! (`ClientTlsSettings`, in DestinationRules), with Istio's consistency rules.

use serde::{Deserialize, Serialize};

use super::common::is_default;
use crate::check::Checker;

/// How a server terminates (or passes through) TLS. Unset means PASSTHROUGH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

impl ServerTlsMode {
    fn name(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// TLS protocol versions a server may be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// One server certificate and key (and optionally a CA bundle), as files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}

/// `tls:` of a Gateway server or a Sidecar ingress listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP with a redirect to HTTPS.
    #[serde(default, skip_serializing_if = "is_default")]
    pub https_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// A Kubernetes Secret holding the certificate (and CA for MUTUAL).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Up to two Secrets (for example one RSA and one ECDSA certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Cipher suite names Envoy (BoringSSL) understands.
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "PSK-AES128-CBC-SHA",
    "AES256-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
    "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
    "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]",
];

impl ServerTlsSettings {
    /// The effective mode (PASSTHROUGH when unset).
    pub fn mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or_default()
    }

    /// True for PASSTHROUGH and AUTO_PASSTHROUGH, where the proxy does not terminate TLS.
    pub fn is_passthrough(&self) -> bool {
        matches!(
            self.mode(),
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        )
    }

    /// Certificates match the mode, and only one certificate source is given.
    pub(crate) fn check(&self, c: &mut Checker) {
        if matches!(
            self.min_protocol_version,
            Some(TlsProtocol::V1_0 | TlsProtocol::V1_1)
        ) && self.cipher_suites.is_empty()
        {
            c.warn("TLS versions below TLSV1_2 need compatible cipherSuites; the defaults no longer include them");
        }
        let mut seen: Vec<&str> = Vec::new();
        for suite in &self.cipher_suites {
            if !CIPHER_SUITES.contains(&suite.as_str()) {
                c.warn(format!("ignoring invalid cipher suite {suite}"));
            } else if seen.contains(&suite.as_str()) {
                c.warn(format!("ignoring duplicate cipher suite {suite}"));
            } else {
                seen.push(suite);
            }
        }
        let mode = self.mode();
        if mode == ServerTlsMode::IstioMutual {
            let user_certs = [
                (!self.server_certificate.is_empty(), "serverCertificate"),
                (!self.private_key.is_empty(), "privateKey"),
                (!self.ca_certificates.is_empty(), "caCertificates"),
                (!self.tls_certificates.is_empty(), "tlsCertificates"),
                (!self.credential_name.is_empty(), "credentialName"),
                (!self.credential_names.is_empty(), "credentialNames"),
            ];
            for (set, field) in user_certs {
                if set {
                    c.error_at(
                        field,
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}; it uses the mesh certificates"),
                    );
                }
            }
            return;
        }
        let has_certs = !self.ca_crl.is_empty()
            || !self.server_certificate.is_empty()
            || !self.private_key.is_empty()
            || !self.ca_certificates.is_empty()
            || !self.tls_certificates.is_empty()
            || !self.credential_name.is_empty()
            || !self.credential_names.is_empty();
        if self.is_passthrough() && has_certs {
            c.warn(format!(
                "{} mode does not use certificates, they will be ignored",
                mode.name()
            ));
        }
        let sources = [
            !self.server_certificate.is_empty() && !self.private_key.is_empty(),
            !self.credential_name.is_empty(),
            !self.credential_names.is_empty(),
            !self.tls_certificates.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            c.error("only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified");
        }
        if self.credential_names.len() > 2 || self.tls_certificates.len() > 2 {
            c.error("at most 2 credentialNames or tlsCertificates may be given");
        }
        let terminating = matches!(
            mode,
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        );
        if terminating && (!self.credential_name.is_empty() || !self.credential_names.is_empty()) {
            // Certificates come from the named Secrets.
            return;
        }
        if terminating {
            let what = if mode == ServerTlsMode::Simple {
                "SIMPLE TLS"
            } else {
                if self.ca_certificates.is_empty() {
                    c.error_at(
                        "caCertificates",
                        "MUTUAL TLS requires a client CA bundle (caCertificates), or use credentialName",
                    );
                }
                "MUTUAL TLS"
            };
            if self.tls_certificates.is_empty() {
                self.require_pair(c, what, &self.server_certificate, &self.private_key, "");
            } else {
                for (i, cert) in self.tls_certificates.iter().enumerate() {
                    let at = format!("tlsCertificates[{i}].");
                    self.require_pair(c, what, &cert.server_certificate, &cert.private_key, &at);
                }
            }
        }
        if !self.ca_crl.is_empty() {
            if !self.credential_name.is_empty() {
                c.error_at("caCrl", "CRL is not supported with credentialName. CRL has to be specified in the credential");
            }
            if mode == ServerTlsMode::Simple {
                c.error_at("caCrl", "CRL is not supported with SIMPLE TLS");
            }
        }
    }

    fn require_pair(&self, c: &mut Checker, what: &str, cert: &str, key: &str, at: &str) {
        if cert.is_empty() {
            c.error_at(
                &format!("{at}serverCertificate"),
                format!("{what} requires a server certificate (serverCertificate), or use credentialName"),
            );
        }
        if key.is_empty() {
            c.error_at(
                &format!("{at}privateKey"),
                format!("{what} requires a private key (privateKey), or use credentialName"),
            );
        }
    }
}

/// How a proxy talks TLS to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

/// `tls:` of a DestinationRule traffic policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

impl ClientTlsSettings {
    /// The effective mode (DISABLE when unset).
    pub fn mode(&self) -> ClientTlsMode {
        self.mode.unwrap_or_default()
    }

    /// Client certificates for MUTUAL, no verification settings with insecureSkipVerify,
    /// and `configmap://` credentials only from the resource's own namespace.
    pub(crate) fn check(&self, c: &mut Checker, namespace: &str) {
        if let Some(rest) = self.credential_name.strip_prefix("configmap://") {
            let (ns, name) = rest.split_once('/').unwrap_or((namespace, rest));
            if name.is_empty() || ns.is_empty() {
                c.error_at(
                    "credentialName",
                    "invalid configmap:// credentialName: expected configmap://[namespace/]name",
                );
            } else if ns != namespace {
                c.error_at(
                    "credentialName",
                    format!("invalid configmap:// credentialName: namespace must match the configuration namespace \"{namespace}\""),
                );
            }
        }
        let mode = self.mode();
        if self.insecure_skip_verify == Some(true) {
            let sans = !self.subject_alt_names.is_empty();
            if mode == ClientTlsMode::Simple
                && (!self.ca_certificates.is_empty() || !self.credential_name.is_empty() || sans)
            {
                c.error("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
            }
            if mode == ClientTlsMode::Mutual && (!self.ca_certificates.is_empty() || sans) {
                c.error("cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
            }
        }
        let uses_secret = !self.credential_name.is_empty();
        if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && uses_secret {
            if !self.client_certificate.is_empty()
                || !self.ca_certificates.is_empty()
                || !self.private_key.is_empty()
                || !self.ca_crl.is_empty()
            {
                c.error("cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
            }
            return;
        }
        if mode == ClientTlsMode::Mutual {
            if self.client_certificate.is_empty() {
                c.error_at(
                    "clientCertificate",
                    "client certificate required for mutual tls",
                );
            }
            if self.private_key.is_empty() {
                c.error_at("privateKey", "private key required for mutual tls");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::error_messages as errors;

    #[test]
    fn simple_tls_needs_certificate_or_credential() {
        let mut tls = ServerTlsSettings {
            mode: Some(ServerTlsMode::Simple),
            ..Default::default()
        };
        let e = errors(|c| tls.check(c));
        assert!(
            e.iter()
                .any(|m| m.contains("SIMPLE TLS requires a server certificate")),
            "{e:?}"
        );
        tls.credential_name = "cert".into();
        assert!(errors(|c| tls.check(c)).is_empty());
    }

    #[test]
    fn one_certificate_source_only() {
        let tls = ServerTlsSettings {
            mode: Some(ServerTlsMode::Simple),
            credential_name: "a".into(),
            credential_names: vec!["b".into()],
            ..Default::default()
        };
        assert!(errors(|c| tls.check(c))[0].contains("only one of credential_name"));
    }

    #[test]
    fn istio_mutual_rejects_user_certificates() {
        let tls = ServerTlsSettings {
            mode: Some(ServerTlsMode::IstioMutual),
            credential_name: "a".into(),
            ..Default::default()
        };
        assert!(
            errors(|c| tls.check(c))[0]
                .contains("ISTIO_MUTUAL TLS cannot have associated credentialName")
        );
    }

    #[test]
    fn mutual_client_tls_needs_client_certificate() {
        let tls = ClientTlsSettings {
            mode: Some(ClientTlsMode::Mutual),
            private_key: "/k".into(),
            ..Default::default()
        };
        let e = errors(|c| tls.check(c, "shop"));
        assert_eq!(
            e,
            vec!["client certificate required for mutual tls".to_string()]
        );
    }
}
