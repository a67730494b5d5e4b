//! Private keys kept out of config pushes. Before a listener or cluster is encoded
//! for a push, its keys (a gateway certificate's, a DestinationRule client
//! certificate's) are replaced by `secret:sha256:HEX` references and kept here; the
//! proxy fetches what its config names over the authenticated `Secrets` call and puts
//! them back before it applies the config. So no push, dump or log holds a key.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use trellis_model::{Cluster, Listener};

/// How a reference to a kept key begins.
pub const PREFIX: &str = "secret:sha256:";

/// Keys by reference.
static KEPT: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

/// Keeps `pem` and returns its reference.
fn keep(pem: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{PREFIX}{hex}");
    KEPT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_insert_with(|| pem.to_string());
    name
}

/// `listener` with its certificate keys replaced by references.
pub fn seal_listener(listener: &Listener) -> Listener {
    let mut out = listener.clone();
    for cert in out.tls.iter_mut().flat_map(|t| t.certificates.iter_mut()) {
        if !cert.private_key_pem.is_empty() && !cert.private_key_pem.starts_with(PREFIX) {
            cert.private_key_pem = keep(&cert.private_key_pem);
        }
    }
    out
}

/// True when `cluster` carries a key (most do not: nothing to copy).
pub fn has_key(cluster: &Cluster) -> bool {
    cluster.tls.as_ref().is_some_and(|t| {
        t.client_key_pem
            .as_deref()
            .is_some_and(|k| !k.starts_with(PREFIX))
    })
}

/// `cluster` with its client key replaced by a reference.
pub fn seal_cluster(cluster: &Cluster) -> Cluster {
    let mut out = cluster.clone();
    if let Some(key) = out.tls.as_mut().and_then(|t| t.client_key_pem.as_mut())
        && !key.starts_with(PREFIX)
    {
        *key = keep(key);
    }
    out
}

/// The kept key `name`, if any.
pub fn get(name: &str) -> Option<String> {
    KEPT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}

/// The references a config names, and each place to put the key back.
pub fn references(config: &trellis_model::ProxyConfig) -> Vec<String> {
    let mut names = Vec::new();
    for l in &config.listeners {
        for c in l.tls.iter().flat_map(|t| t.certificates.iter()) {
            if c.private_key_pem.starts_with(PREFIX) {
                names.push(c.private_key_pem.clone());
            }
        }
    }
    for c in &config.clusters {
        if let Some(k) = c.tls.as_ref().and_then(|t| t.client_key_pem.as_ref())
            && k.starts_with(PREFIX)
        {
            names.push(k.clone());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Puts keys back into `config` from `found` (by reference); a reference with no key
/// is an error naming it.
pub fn unseal(
    config: &mut trellis_model::ProxyConfig,
    found: &HashMap<String, String>,
) -> Result<(), String> {
    let take = |slot: &mut String| -> Result<(), String> {
        if slot.starts_with(PREFIX) {
            *slot = found
                .get(slot.as_str())
                .cloned()
                .ok_or_else(|| format!("the control plane did not give the key {slot}"))?;
        }
        Ok(())
    };
    for l in &mut config.listeners {
        for c in l.tls.iter_mut().flat_map(|t| t.certificates.iter_mut()) {
            take(&mut c.private_key_pem)?;
        }
    }
    for c in &mut config.clusters {
        if let Some(k) = c.tls.as_mut().and_then(|t| t.client_key_pem.as_mut()) {
            take(k)?;
        }
    }
    Ok(())
}
