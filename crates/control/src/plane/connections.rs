//! Proxy connections: each proxy's stream (its Hello, read into a [`ProxySpec`]), what
//! it was last sent, its ACKs and NACKs, and the sync status `trellis proxy-status`
//! shows; push versions and the budget of full pushes in flight. It does not decide
//! what a proxy gets: `push.rs` compiles, diffs and sends through `Connected::tx`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use trellis_model::{ProxyConfig, Role};

use super::ControlPlane;
use super::guard::CompileError;
use crate::node::ProxySpec;
use crate::proto;
use crate::resources::Units;

/// At most this many full pushes are in flight at once: when a thousand proxies
/// connect together, their (large) first configurations go out a few at a time rather
/// than all being encoded into memory at once.
pub const MAX_FULL_IN_FLIGHT: usize = 16;

/// What the push stream of one proxy carries.
pub type PushSender = mpsc::UnboundedSender<Result<proto::Push, tonic::Status>>;

/// The connected proxies and the counters their pushes share.
#[derive(Default)]
pub(super) struct Connections {
    proxies: Mutex<BTreeMap<String, Connected>>,
    /// The last version handed out; every push takes a new one.
    generation: AtomicU64,
    next_connection: AtomicU64,
    /// Full pushes sent and not yet answered, and whether some proxy waits for one.
    full_in_flight: AtomicUsize,
    full_deferred: AtomicBool,
}

/// What was last sent to a proxy: the outbound resources it shares with the
/// sidecars of its group, and its own.
#[derive(Clone, Default)]
pub(super) struct Sent {
    pub(super) group: Option<Arc<Units>>,
    pub(super) own: Arc<Units>,
}

/// One connected proxy.
pub(super) struct Connected {
    pub(super) connection: u64,
    pub(super) spec: Arc<ProxySpec>,
    pub(super) tx: PushSender,
    /// The resources of the last push (what the next incremental push diffs from).
    pub(super) state: Sent,
    /// The next push must be full: nothing sent yet, or the proxy refused one.
    pub(super) needs_full: bool,
    pub(super) sent: u64,
    acked: u64,
    pub(super) last_push: Option<SystemTime>,
    pub(super) pushed_at: Option<Instant>,
    nack: Option<(u64, String)>,
    /// Why the last recompute could not compile this proxy's config (nothing was
    /// pushed: it keeps what it runs).
    pub(super) compile_error: Option<Arc<CompileError>>,
    /// The version of a full push not yet answered (it counts against the limit).
    pub(super) full_in_flight: Option<u64>,
}

/// Where a proxy stands, as `trellis proxy-status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub id: String,
    pub role: Role,
    pub namespace: String,
    pub workload: String,
    pub pod_ip: String,
    /// `SYNCED` (the last push is ACKed), `STALE` (sent, not ACKed, NACKed, or the
    /// config now due could not be compiled), `NOT SENT` (nothing pushed yet).
    pub state: String,
    /// The version last pushed.
    pub version: u64,
    pub acked_version: u64,
    /// Milliseconds since the Unix epoch of the last push.
    pub last_push_ms: Option<u64>,
    /// Milliseconds between the last push and now, at the time of asking.
    pub last_push_age_ms: Option<u64>,
    pub nack_version: Option<u64>,
    pub nack_error: Option<String>,
    /// Why the config now due could not be compiled (the proxy keeps what it runs).
    pub compile_error: Option<String>,
}

impl Connections {
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Connected>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new version, for the next push.
    pub(super) fn next_version(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Takes a place for one more full push, or (when [`MAX_FULL_IN_FLIGHT`] are out)
    /// notes that a proxy waits for one and says no.
    pub(super) fn start_full(&self) -> bool {
        if self.full_in_flight.load(Ordering::Acquire) >= MAX_FULL_IN_FLIGHT {
            // Sent when one in flight is answered.
            self.full_deferred.store(true, Ordering::Release);
            return false;
        }
        self.full_in_flight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// A full push was answered (or its proxy left); true when a proxy waits for one.
    fn full_answered(&self) -> bool {
        self.full_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.full_deferred.swap(false, Ordering::AcqRel)
    }
}

impl ControlPlane {
    pub(super) fn proxies(&self) -> MutexGuard<'_, BTreeMap<String, Connected>> {
        self.inner.connections.lock()
    }

    /// Records why proxy `id` could not be compiled for (`None`: it could again).
    pub(super) fn set_compile_error(
        &self,
        id: &str,
        connection: u64,
        error: Option<Arc<CompileError>>,
    ) {
        if let Some(p) = self
            .proxies()
            .get_mut(id)
            .filter(|p| p.connection == connection)
        {
            p.compile_error = error;
        }
    }

    /// Registers a proxy's stream; returns its connection number.
    pub fn connect(&self, spec: ProxySpec, running_version: u64, tx: PushSender) -> u64 {
        let connections = &self.inner.connections;
        // Versions keep increasing for a proxy across a control-plane restart.
        connections
            .generation
            .fetch_max(running_version, Ordering::AcqRel);
        let connection = connections.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        let id = spec.id.clone();
        let mut proxies = self.proxies();
        proxies.insert(
            id.clone(),
            Connected {
                connection,
                spec: Arc::new(spec),
                tx,
                state: Sent::default(),
                needs_full: true,
                full_in_flight: None,
                sent: 0,
                acked: 0,
                last_push: None,
                pushed_at: None,
                nack: None,
                compile_error: None,
            },
        );
        self.inner
            .metrics
            .connected
            .store(proxies.len() as u64, Ordering::Relaxed);
        drop(proxies);
        tracing::info!(proxy = %id, "proxy connected");
        self.inner.changed.notify_one();
        connection
    }

    /// Forgets a proxy whose stream ended (unless it has reconnected since).
    pub fn disconnect(&self, id: &str, connection: u64) {
        let mut proxies = self.proxies();
        let Some(entry) = proxies.get(id) else { return };
        if entry.connection != connection {
            return;
        }
        let announced = entry.spec.workload().is_some();
        if entry.full_in_flight.is_some() {
            self.full_answered();
        }
        proxies.remove(id);
        self.inner
            .metrics
            .connected
            .store(proxies.len() as u64, Ordering::Relaxed);
        drop(proxies);
        tracing::info!(proxy = %id, "proxy disconnected");
        if announced {
            self.inner.changed.notify_one();
        }
    }

    /// The proxy applied `version`.
    pub fn ack(&self, id: &str, connection: u64, version: u64) {
        let mut proxies = self.proxies();
        let Some(p) = proxies.get_mut(id).filter(|p| p.connection == connection) else {
            return;
        };
        let finished_full = p.full_in_flight.is_some_and(|v| v <= version);
        if finished_full {
            p.full_in_flight = None;
            self.full_answered();
        }
        if version != p.sent {
            return;
        }
        p.acked = version;
        p.nack = None;
        if let Some(at) = p.pushed_at.take() {
            self.inner.metrics.push_latency.observe(at.elapsed());
        }
    }

    /// A full push was answered (or its proxy left): let a waiting one go.
    fn full_answered(&self) {
        if self.inner.connections.full_answered() {
            self.inner.changed.notify_one();
        }
    }

    /// The proxy refused `version` and keeps running its previous config.
    /// `mismatch`: the push built on a version the proxy does not run (a full push
    /// follows at once).
    pub fn nack(&self, id: &str, connection: u64, version: u64, error: String, mismatch: bool) {
        self.inner.metrics.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            proxy = %id,
            version,
            %error,
            "a proxy refused a push (NACK) and keeps its previous configuration"
        );
        let mut proxies = self.proxies();
        let Some(p) = proxies.get_mut(id).filter(|p| p.connection == connection) else {
            return;
        };
        if version == p.sent
            && let Some(at) = p.pushed_at.take()
        {
            self.inner.metrics.push_latency.observe(at.elapsed());
        }
        // What the proxy runs is no longer what we last sent: the next push is whole.
        p.needs_full = true;
        if mismatch {
            // The proxy missed a push it was meant to build on: resend at once.
            drop(proxies);
            self.inner.changed.notify_one();
            return;
        }
        p.nack = Some((version, error));
    }

    /// Every connected proxy's sync status.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let now = SystemTime::now();
        self.proxies()
            .values()
            .map(|p| {
                let state = if p.sent == 0 {
                    "NOT SENT"
                } else if p.acked == p.sent && p.nack.is_none() && p.compile_error.is_none() {
                    "SYNCED"
                } else {
                    "STALE"
                };
                let ms = |t: SystemTime, from: SystemTime| {
                    t.duration_since(from).map_or(0, |d| d.as_millis() as u64)
                };
                ProxyStatus {
                    id: p.spec.id.clone(),
                    role: p.spec.role,
                    namespace: p.spec.identity.namespace.clone(),
                    workload: p.spec.identity.name.clone(),
                    pod_ip: p.spec.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
                    state: state.into(),
                    version: p.sent,
                    acked_version: p.acked,
                    last_push_ms: p.last_push.map(|t| ms(t, SystemTime::UNIX_EPOCH)),
                    last_push_age_ms: p.last_push.map(|t| ms(now, t)),
                    nack_version: p.nack.as_ref().map(|n| n.0),
                    nack_error: p.nack.as_ref().map(|n| n.1.clone()),
                    compile_error: p.compile_error.as_ref().map(ToString::to_string),
                }
            })
            .collect()
    }

    /// True when a connected proxy of workload `namespace`/`service_account` was sent
    /// a config naming `reference` (a kept key): only such a proxy may fetch it.
    pub fn sent_reference(&self, namespace: &str, service_account: &str, reference: &str) -> bool {
        let needle = reference.as_bytes();
        let holds = |units: &crate::resources::Units| {
            units
                .values()
                .any(|u| u.json.windows(needle.len()).any(|w| w == needle))
        };
        self.proxies().values().any(|p| {
            p.spec.identity.namespace == namespace
                && p.spec.identity.service_account == service_account
                && (holds(&p.state.own) || p.state.group.as_deref().is_some_and(holds))
        })
    }

    /// Where connected proxy `id` serves its admin endpoint, if it said.
    pub fn proxy_admin(&self, id: &str) -> Option<std::net::SocketAddr> {
        self.proxies().get(id)?.spec.admin
    }

    /// The config last pushed to proxy `id`, reassembled from its resources.
    pub fn proxy_config(&self, id: &str) -> Option<ProxyConfig> {
        let (state, version) = {
            let proxies = self.proxies();
            let p = proxies.get(id)?;
            if p.sent == 0 {
                return None;
            }
            (p.state.clone(), p.sent)
        };
        let mut all: Units = state.group.as_deref().cloned().unwrap_or_default();
        all.extend(state.own.iter().map(|(k, u)| (k.clone(), u.clone())));
        let (resources, _) = crate::resources::diff(None, &all);
        let mut assembled = crate::resources::Assembled::default();
        assembled
            .apply(&proto::Push {
                version,
                incremental: false,
                base_version: 0,
                resources,
                removed: vec![],
                more: false,
            })
            .ok()?;
        assembled.config(version).ok()
    }
}
