//! The admission webhooks: the API server asks the validating one about every create
//! and update of an Istio kind Trellis validates, and it answers as `trellis validate`
//! would (`admit.rs`); it asks the injecting one about pod creations that opted in, and
//! it answers with the sidecar as a JSONPatch (`inject.rs`, over `crate::inject`). Both
//! over HTTPS with a certificate from the mesh CA (`server.rs`). `configuration.rs` and
//! `injection.rs` build their configurations; `ca_bundle.rs` keeps each caBundle equal
//! to the mesh roots. Analysis results are `status`'s.
//!
//! Starting it: [`WebhookServer::start`] (every replica), then, on the leader,
//! `tokio::spawn(keep_ca_bundle(client, name, server.certificates()))`.

mod admit;
mod ca_bundle;
mod configuration;
mod inject;
mod injection;
mod server;

pub use admit::{Verdict, decide, describe, judge, review};
pub use ca_bundle::{
    BundleUpdate, WebhookConfiguration, keep_ca_bundle, keep_ca_bundle_of, set_ca_bundle,
};
pub use configuration::{
    ConfigurationOptions, FailurePolicy, PATH, WEBHOOK_NAME, WebhookClient, configuration_name,
    validated_resources, validating_webhook_configuration,
};
pub use inject::{INJECT_PATH, Injector, answer as inject_answer};
pub use injection::{INJECTOR_CONFIGURATION, mutating_webhook_configuration};
pub use server::{WebhookError, WebhookOptions, WebhookServer};
