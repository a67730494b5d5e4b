//! TLS origination to upstreams (DestinationRule `tls` SIMPLE and MUTUAL).
//!
//! Each cluster with TLS gets its rustls client configs (one per ALPN: `h2` or
//! `http/1.1`) and server name when the config is compiled, so a broken CA or key is
//! refused with the config. The settings' fingerprint is part of the endpoint key in
//! the cluster's state: connections made under one set of settings (roots, client
//! certificate, expected names) are never reused under another.

use std::hash::{Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use trellis_model::UpstreamTls;

/// What an upstream connection will carry, which decides the ALPN offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    /// Opaque TCP: no ALPN.
    None,
}

/// A cluster's compiled TLS settings.
pub struct OriginTls {
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    opaque: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// Why connections cannot be made (the settings named a missing file or Secret).
    problem: Option<String>,
    /// Fingerprint of the settings, part of the endpoint key.
    pub key: u64,
}

impl OriginTls {
    /// Compiles `tls`; an error refuses the whole config.
    pub fn compile(tls: &UpstreamTls) -> Result<OriginTls, String> {
        let key = {
            let mut h = std::hash::DefaultHasher::new();
            tls.hash(&mut h);
            h.finish().max(1)
        };
        let name = ServerName::try_from(tls.sni.clone())
            .map_err(|e| format!("invalid TLS server name {:?}: {e}", tls.sni))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let base = if tls.problem.is_some() {
            // Never used: connecting fails with the problem first.
            client_config(&provider, Arc::new(AcceptAny(provider.clone())), None)?
        } else {
            let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
                Arc::new(AcceptAny(provider.clone()))
            } else {
                let roots = match &tls.ca_pem {
                    Some(pem) => roots_from_pem(pem).map_err(|e| format!("caCertificates: {e}"))?,
                    None => system_roots()?,
                };
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("caCertificates: {e}"))?;
                if tls.subject_alt_names.is_empty() {
                    webpki
                } else {
                    Arc::new(AnyOfNames {
                        inner: webpki,
                        names: tls
                            .subject_alt_names
                            .iter()
                            .map(|n| {
                                ServerName::try_from(n.clone())
                                    .map_err(|e| format!("subjectAltNames {n:?}: {e}"))
                            })
                            .collect::<Result<_, _>>()?,
                    })
                }
            };
            let client = match (&tls.client_cert_pem, &tls.client_key_pem) {
                (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
                _ => None,
            };
            client_config(&provider, verifier, client)?
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(OriginTls {
            http1: with_alpn(b"http/1.1"),
            http2: with_alpn(b"h2"),
            opaque: Arc::new(base),
            name,
            problem: tls.problem.clone(),
            key,
        })
    }

    /// Why connections cannot be made with these settings, if they cannot.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// TLS over `tcp`, offering the ALPN `alpn` asks for.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        alpn: Alpn,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::Http2 => &self.http2,
            Alpn::None => &self.opaque,
        };
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(self.name.clone(), tcp)
            .await
    }
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    client: Option<(&str, &str)>,
) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("clientCertificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| format!("privateKey: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("clientCertificate/privateKey: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn roots_from_pem(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(roots)
}

/// The system's CA bundle, read once (Debian/Ubuntu, then Fedora/RHEL paths).
fn system_roots() -> Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            const BUNDLES: [&str; 3] = [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ];
            let path = BUNDLES
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .ok_or("no system CA bundle found; set caCertificates")?;
            let pem = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            roots_from_pem(&pem).map_err(|e| format!("{path}: {e}"))
        })
        .clone()
}

/// Verifies the chain, then accepts the certificate if it is valid for any of `names`
/// (DestinationRule `subjectAltNames`).
#[derive(Debug)]
struct AnyOfNames {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AnyOfNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subjectAltNames".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecureSkipVerify`: any certificate, though the handshake's signatures are still
/// checked (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An upstream connection's bytes: plain TCP or TLS over it.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
