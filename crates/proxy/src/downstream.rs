//! What an accepted downstream connection knows about itself: the listener it came
//! in on, both addresses, whether TLS was terminated and what the client's verified
//! certificate says. Shared by every request on the connection and by the TCP path.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::HeaderValue;

use crate::Shared;
use crate::snapshot::{ListenerRt, Snapshot};

/// One downstream connection.
pub struct Connection {
    pub shared: Arc<Shared>,
    /// The listener as it was when the connection was accepted.
    pub listener: Arc<ListenerRt>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// TLS was terminated on this connection (the request scheme is https).
    pub tls: bool,
    /// Request framing seen on the raw HTTP/1 stream (see [`crate::framing`]).
    pub framing: Arc<crate::framing::Framing>,
    /// The peer's IP as a header value (for X-Forwarded-For), made when first needed.
    pub peer_ip: OnceLock<HeaderValue>,
    /// The verified client certificate (mutual TLS), and its X-Forwarded-Client-Cert value.
    pub peer_cert: OnceLock<(crate::peer::PeerCert, HeaderValue)>,
    /// The mesh peer, when the connection came in over the mesh's mutual TLS.
    pub peer_identity: OnceLock<crate::inbound::PeerIdentity>,
    /// The last metric label block made for this peer (cluster, endpoint, labels).
    labels: std::sync::Mutex<Option<(usize, usize, Arc<str>)>>,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        listener: Arc<ListenerRt>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Connection {
        Connection {
            tls: listener.tls.is_some(),
            shared,
            listener,
            peer,
            local,
            framing: Arc::default(),
            peer_ip: OnceLock::new(),
            peer_cert: OnceLock::new(),
            peer_identity: OnceLock::new(),
            labels: std::sync::Mutex::new(None),
        }
    }

    /// The metric labels of a request on this connection to `cluster`'s endpoint
    /// `index`: the config's block, or, for an inbound cluster reached over mutual TLS,
    /// one naming the peer's principal and `mutual_tls` (made once per connection).
    pub fn labels_for(&self, cluster: &crate::snapshot::ClusterRt, index: usize) -> Arc<str> {
        let (Some(peer), true) = (self.peer_identity.get(), cluster.inbound) else {
            return cluster.labels[index].clone();
        };
        let key = (cluster as *const _ as usize, index);
        let mut cached = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, i, labels)) = cached.as_ref()
            && (*c, *i) == key
        {
            return labels.clone();
        }
        let labels = cluster.mtls_labels(index, peer);
        *cached = Some((key.0, key.1, labels.clone()));
        labels
    }

    /// The scheme requests arrived with, when the request line does not say.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// This connection's listener in `snapshot` (the config in force now, so a swap
    /// applies to open connections), found by its position; the listener the
    /// connection was accepted on if the new config no longer has it.
    pub fn current_listener(&self, snapshot: &Snapshot) -> Arc<ListenerRt> {
        let name = &self.listener.model.name;
        let at = self.listener.slot;
        match snapshot.listeners.get(at) {
            Some(l) if l.model.name == *name => l.clone(),
            _ => snapshot
                .listeners
                .iter()
                .find(|l| l.model.name == *name)
                .cloned()
                .unwrap_or_else(|| self.listener.clone()),
        }
    }
}
