//! The validating admission webhook: the API server asks it about every create and
//! update of an Istio kind Trellis validates, and it answers as `trellis validate`
//! would (`admit.rs`), over HTTPS with a certificate from the mesh CA (`server.rs`).
//! `configuration.rs` builds the `ValidatingWebhookConfiguration`; `ca_bundle.rs`
//! keeps its caBundle equal to the mesh roots. Analysis results are `status`'s.
//!
//! Starting it: [`WebhookServer::start`] (every replica), then, on the leader,
//! `tokio::spawn(keep_ca_bundle(client, name, server.certificates()))`.

mod admit;
mod ca_bundle;
mod configuration;
mod server;

pub use admit::{Verdict, decide, describe, judge, review};
pub use ca_bundle::{BundleUpdate, keep_ca_bundle, set_ca_bundle};
pub use configuration::{
    ConfigurationOptions, FailurePolicy, PATH, WEBHOOK_NAME, WebhookClient, configuration_name,
    validated_resources, validating_webhook_configuration,
};
pub use server::{WebhookError, WebhookOptions, WebhookServer};
