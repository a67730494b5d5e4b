//! Mesh identity: SPIFFE ids, the CA, the checks that say who is asking, the
//! proxy's certificate manager, and rustls configs that verify SPIFFE peers. It
//! knows nothing of the proxy, the control plane, gRPC or YAML. A private key is
//! made where it is used and never leaves: no `Debug`, error or file of ours shows
//! one (the CA's own key file excepted).

pub mod auth;
pub mod ca;
pub mod cert;
pub mod credentials;
pub mod files;
pub mod manager;
mod random;
pub mod spiffe;
pub mod tls;

pub use auth::{
    AuthError, Authenticator, Authenticators, BootstrapToken, BootstrapTokens, Credential,
    PeerCertificates, TokenStoreError, WorkloadIdentity, identity_from_verified_chain,
};
pub use ca::{Ca, CaError, CaSource, DEFAULT_LIFETIME, IssuedCertificate};
pub use cert::CertError;
pub use credentials::{Credentials, CredentialsError, CurrentCredentials, Trust, provider};
pub use files::mode as file_mode;
pub use manager::{CaSigner, CertificateManager, RenewalPolicy, SignError, SignedChain, Signer};
pub use random::token as random_token;
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};
pub use tls::{
    ClientAuth, TlsConfigError, bootstrap_client_config, client_config, peer_spiffe_id,
    server_config,
};
