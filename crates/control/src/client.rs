//! The proxy's side of the config stream, written once for every proxy: connect, say
//! who we are, apply each push and answer ACK or NACK; when the stream breaks, keep
//! running the last good config and reconnect with exponential backoff.
//!
//! The client knows nothing of the data plane: a [`Handler`] applies configs (for
//! `trellis proxy`, `Proxy::start` then `Proxy::update`) and hears what happens.

use std::time::Duration;

use tokio_stream::wrappers::UnboundedReceiverStream;
use trellis_model::ProxyConfig;

use crate::node::ProxySpec;
use crate::proto::mesh_config_client::MeshConfigClient;
use crate::proto::{self, proxy_message::Message};

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a NACK for a push built on a version the proxy does not run begins; the control
/// plane answers it with a full push.
pub const BASE_MISMATCH: &str = "base version mismatch";

/// What the client tells its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The stream is open and the Hello sent.
    Connected,
    /// A push was applied (ACKed).
    Applied(u64),
    /// A push was refused (NACKed); the previous config stays.
    Refused(u64, String),
    /// The stream broke; the client will reconnect after the given wait.
    Disconnected(String, Duration),
}

/// Applies configs for the client.
pub trait Handler: Send {
    /// Puts `config` in force, or says why it cannot (the push is then NACKed).
    fn apply(&mut self, config: ProxyConfig) -> Result<(), String>;
    /// Hears about the stream; by default, logs.
    fn event(&mut self, event: Event) {
        tracing::info!(?event, "control plane");
    }
}

/// `127.0.0.1:15012` or `http://127.0.0.1:15012` → the URI tonic dials.
pub fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Follows the control plane at `address` forever on behalf of the proxy `spec`,
/// over TLS with the workload certificate `identity` keeps current.
pub async fn follow(
    address: &str,
    spec: ProxySpec,
    identity: &crate::security::client::ClientIdentity,
    handler: &mut dyn Handler,
) {
    let uri = endpoint_uri(address);
    let mut version = 0;
    let mut backoff = MIN_BACKOFF;
    let mut assembled = crate::resources::Assembled::default();
    loop {
        let why = match session(
            &uri,
            identity,
            &spec,
            &mut version,
            &mut assembled,
            &mut backoff,
            handler,
        )
        .await
        {
            Ok(()) => "the control plane closed the stream".to_string(),
            Err(e) => e,
        };
        handler.event(Event::Disconnected(why, backoff));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One stream, from connecting until it breaks.
async fn session(
    uri: &str,
    identity: &crate::security::client::ClientIdentity,
    spec: &ProxySpec,
    version: &mut u64,
    assembled: &mut crate::resources::Assembled,
    backoff: &mut Duration,
    handler: &mut dyn Handler,
) -> Result<(), String> {
    // The stream is opened with the workload certificate: wait for the first one.
    if tokio::time::timeout(Duration::from_secs(5), identity.manager.ready())
        .await
        .is_err()
    {
        return Err(format!(
            "no workload certificate yet for {}",
            identity.manager.identity()
        ));
    }
    let channel = crate::security::tls::connect(uri, identity.stream_config()?).await?;
    let mut client = MeshConfigClient::new(channel).max_decoding_message_size(256 << 20);
    // Keys this session was given, by reference (see `crate::keys`).
    let mut keys: std::collections::HashMap<String, String> = Default::default();
    let mut key_client = client.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hello = proto::ProxyMessage {
        message: Some(Message::Hello(spec.to_hello(*version))),
    };
    tx.send(hello).map_err(|e| e.to_string())?;
    let mut pushes = client
        .stream(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|e| format!("{uri}: {}", e.message()))?
        .into_inner();
    handler.event(Event::Connected);
    let mut parts: Option<proto::Push> = None;
    while let Some(part) = pushes
        .message()
        .await
        .map_err(|e| format!("stream broke: {}", e.message()))?
    {
        *backoff = MIN_BACKOFF;
        // Collect a push sent in parts; act on it after the last.
        let push = match parts.take() {
            Some(mut so_far) if so_far.version == part.version => {
                so_far.resources.extend(part.resources);
                so_far.removed.extend(part.removed);
                so_far.more = part.more;
                so_far
            }
            _ => part,
        };
        if push.more {
            parts = Some(push);
            continue;
        }
        let outcome = if push.incremental && push.base_version != *version {
            Err((
                proto::NackReason::BaseMismatch,
                format!(
                    "{BASE_MISMATCH}: running version {}, the push builds on {}",
                    *version, push.base_version
                ),
            ))
        } else {
            // Build the next config aside; it replaces the current one only if applied.
            let mut next = if push.incremental {
                assembled.clone()
            } else {
                crate::resources::Assembled::default()
            };
            let config = next
                .apply(&push)
                .and_then(|()| next.config(push.version))
                .map_err(|e| e.to_string());
            let config = match config {
                Ok(mut config) => unseal(&mut key_client, &mut keys, &mut config)
                    .await
                    .map(|()| config),
                Err(e) => Err(e),
            };
            config
                .and_then(|config: ProxyConfig| handler.apply(config))
                .map(|()| *assembled = next)
                .map_err(|e| (proto::NackReason::Invalid, e))
        };
        let reply = match outcome {
            Ok(()) => {
                *version = push.version;
                handler.event(Event::Applied(push.version));
                Message::Ack(proto::Ack {
                    version: push.version,
                })
            }
            Err((reason, error)) => {
                handler.event(Event::Refused(push.version, error.clone()));
                Message::Nack(proto::Nack {
                    version: push.version,
                    error,
                    reason: reason.into(),
                })
            }
        };
        tx.send(proto::ProxyMessage {
            message: Some(reply),
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Puts the private keys `config` refers to back in, fetching those not known yet
/// over the authenticated `Secrets` call.
async fn unseal(
    client: &mut MeshConfigClient<tonic::transport::Channel>,
    known: &mut std::collections::HashMap<String, String>,
    config: &mut ProxyConfig,
) -> Result<(), String> {
    let wanted = crate::keys::references(config);
    if wanted.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|n| !known.contains_key(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let answer = client
            .secrets(proto::SecretsRequest { names: missing })
            .await
            .map_err(|e| format!("cannot get the config's keys: {}", e.message()))?
            .into_inner();
        known.extend(answer.secrets);
    }
    // Only what this config names is kept.
    known.retain(|n, _| wanted.contains(n));
    crate::keys::unseal(config, known)
}
