//! Verifying mesh peers: the chain against the mesh roots (no DNS names: a workload
//! is named by its SPIFFE id), then the leaf's SPIFFE id against who may answer.
//! Roots are read from the current credentials on every handshake, so a root change
//! needs no rebuild; handshake signatures are checked by the aws-lc-rs provider.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::cert::{self, CertError};
use crate::credentials::{CurrentCredentials, Trust, provider};
use crate::spiffe::SpiffeId;

/// Where a verifier takes its roots from.
#[derive(Clone)]
enum TrustSource {
    /// The roots of the credentials in force (a workload's own configs).
    Current(CurrentCredentials),
    /// Fixed roots (a proxy bootstrapping, before it has a certificate).
    Fixed(Arc<Trust>),
}

impl TrustSource {
    fn trust(&self) -> Result<Arc<Trust>, rustls::Error> {
        match self {
            TrustSource::Current(current) => current
                .load()
                .map(|c| c.trust().clone())
                .ok_or_else(|| rustls::Error::General("no mesh credentials yet".into())),
            TrustSource::Fixed(trust) => Ok(trust.clone()),
        }
    }
}

/// A refusal rustls carries to both ends' logs, with our reason.
fn refuse(error: CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// Why a peer's SPIFFE id was refused.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {found} is not one of the expected identities ({expected})")]
pub struct UnexpectedPeer {
    pub found: SpiffeId,
    pub expected: String,
}

/// rustls prints the error it carries with `Debug`: say it as a sentence.
impl fmt::Debug for UnexpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The client side: the server must chain to the mesh roots and present one of
/// `allowed` (or, when `allowed` is empty, any identity of the trust domain).
pub struct SpiffeServerVerifier {
    trust: TrustSource,
    allowed: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Verifies against the roots of the credentials in force at each handshake.
    pub fn new(current: &CurrentCredentials, allowed: Vec<SpiffeId>) -> SpiffeServerVerifier {
        SpiffeServerVerifier::from_source(TrustSource::Current(current.clone()), allowed)
    }

    /// Verifies against fixed roots (before the first certificate is in).
    pub fn with_trust(trust: Arc<Trust>, allowed: Vec<SpiffeId>) -> SpiffeServerVerifier {
        SpiffeServerVerifier::from_source(TrustSource::Fixed(trust), allowed)
    }

    fn from_source(trust: TrustSource, allowed: Vec<SpiffeId>) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            trust,
            allowed,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let trust = self.trust.trust()?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            trust.root_store(),
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = cert::spiffe_id_in(end_entity, trust.trust_domain()).map_err(refuse)?;
        if !self.allowed.is_empty() && !self.allowed.contains(&id) {
            let expected = self
                .allowed
                .iter()
                .map(SpiffeId::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            tracing::debug!(peer = %id, expected, "server identity refused");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(UnexpectedPeer {
                    found: id,
                    expected,
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// The server side: a client certificate must chain to the mesh roots (webpki's
/// client verifier, built once per root set) and carry a SPIFFE id of the trust
/// domain. Whether one is required is the listener's choice.
pub struct MeshClientVerifier {
    current: CurrentCredentials,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshClientVerifier {
    /// `mandatory`: refuse a client that sends no certificate.
    pub fn new(current: &CurrentCredentials, mandatory: bool) -> MeshClientVerifier {
        MeshClientVerifier {
            current: current.clone(),
            mandatory,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the roots can change under a running config, and mesh clients
    /// send the one certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let trust = TrustSource::Current(self.current.clone()).trust()?;
        let verified =
            trust
                .client_verifier()
                .verify_client_cert(end_entity, intermediates, now)?;
        cert::spiffe_id_in(end_entity, trust.trust_domain()).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl fmt::Debug for MeshClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshClientVerifier")
            .field("mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

/// The SPIFFE id of a connection's verified peer (`None` when it sent no
/// certificate). Both verifiers above refuse a peer without a valid id, so on
/// connections made with this crate's configs a present certificate always has one.
pub fn peer_spiffe_id(connection: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = connection.peer_certificates()?.first()?;
    cert::spiffe_id_of(leaf).ok()
}
