//! security.istio.io: PeerAuthentication, AuthorizationPolicy and RequestAuthentication
//! (served as v1beta1 and v1, one schema).

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;
