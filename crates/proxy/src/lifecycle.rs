//! The proxy's life around its traffic: readiness (Istio's `/healthz/ready`) and the
//! drain on shutdown. Ready means a first config is in force, its listeners are bound
//! and the workload certificate (when the proxy has a mesh identity) is in; draining
//! turns readiness off for good, closes the listeners and asks every open downstream
//! connection to finish, counted until none is left.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// What a readiness probe is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Serving: a config, its listeners and (with a mesh identity) a certificate.
    Live,
    /// No config yet, or its listeners not bound yet.
    PreInitializing,
    /// A mesh identity without its first workload certificate.
    NoCertificate,
    /// Shutting down: no new connections, the open ones finishing.
    Draining,
}

impl Readiness {
    /// True only for [`Readiness::Live`].
    pub fn is_ready(self) -> bool {
        self == Readiness::Live
    }

    /// The state's name, as the probe's body says it (Envoy's words where it has one).
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Live => "LIVE",
            Readiness::PreInitializing => "PRE_INITIALIZING",
            Readiness::NoCertificate => "NO_CERTIFICATE",
            Readiness::Draining => "DRAINING",
        }
    }
}

/// Readiness, shared by the proxy and whatever serves the probe; it exists before the
/// proxy's first config does (a status port answers 503 until then).
#[derive(Debug, Default)]
pub struct Health {
    listening: AtomicBool,
    draining: AtomicBool,
    identity: OnceLock<trellis_identity::CurrentCredentials>,
}

impl Health {
    /// Not ready: no config yet.
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// What a probe is told now.
    pub fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Acquire) {
            return Readiness::Draining;
        }
        if !self.listening.load(Ordering::Acquire) {
            return Readiness::PreInitializing;
        }
        match self.identity.get() {
            Some(identity) if identity.load().is_none() => Readiness::NoCertificate,
            _ => Readiness::Live,
        }
    }

    /// The first config's listeners are bound; `identity` must hold a certificate too.
    pub(crate) fn set_listening(&self, identity: Option<&trellis_identity::CurrentCredentials>) {
        if let Some(identity) = identity {
            let _ = self.identity.set(identity.clone());
        }
        self.listening.store(true, Ordering::Release);
    }

    /// Not ready again, ever.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// The drain, seen from the data plane: a signal every worker and connection waits
/// on, and the count of downstream connections still open.
#[derive(Debug)]
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    open: AtomicUsize,
    /// Workers whose listening sockets are closed.
    closed: AtomicUsize,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            signal: watch::channel(false).0,
            open: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
        }
    }
}

impl Drain {
    /// Counts a connection as open until the guard drops. Taken in the same poll as
    /// the accept, so a connection accepted before the listener closed is waited for.
    pub(crate) fn track(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Resolves once the drain has begun (at once if it has).
    pub(crate) async fn started(&self) {
        let mut rx = self.signal.subscribe();
        if rx.wait_for(|draining| *draining).await.is_err() {
            // The proxy is gone; nothing will ever drain.
            std::future::pending::<()>().await;
        }
    }

    /// Tells every worker and connection.
    pub(crate) fn start(&self) {
        self.signal.send_replace(true);
    }

    /// A worker has closed its listening sockets.
    pub(crate) fn listeners_closed(&self) {
        self.closed.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn workers_closed(&self) -> usize {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open downstream connection (see [`Drain::track`]).
#[derive(Debug)]
pub(crate) struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One HTTP connection's requests, as far as its drain needs them: how many have
/// started, and how many still await their response.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    started: AtomicU64,
    waiting: AtomicUsize,
    notify: Notify,
}

impl Requests {
    /// A request has started; it awaits its response until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> Waiting {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
        Waiting(self.clone())
    }

    /// Resolves once the drain has begun and the connection can be shut down without
    /// losing a request: at once if one awaits its response (which will then say
    /// `Connection: close`), else when the next request starts or after `grace` of
    /// quiet. Closing an idle HTTP/1.1 connection at once would race a client that is
    /// just reusing it, and lose that request.
    pub(crate) async fn shutdown_point(&self, drain: &Drain, grace: Duration) {
        drain.started().await;
        let seen = self.started.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + grace;
        while self.waiting.load(Ordering::Acquire) == 0
            && self.started.load(Ordering::Acquire) == seen
        {
            // A permit left by an earlier request only costs another look.
            let notified = tokio::time::timeout_at(deadline, self.notify.notified()).await;
            if notified.is_err() {
                return;
            }
        }
    }
}

/// A request awaiting its response (see [`Requests::start`]).
#[derive(Debug)]
pub(crate) struct Waiting(Arc<Requests>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_listeners_and_ends_with_the_drain() {
        let health = Health::new();
        assert_eq!(health.readiness(), Readiness::PreInitializing);
        health.set_listening(None);
        assert_eq!(health.readiness(), Readiness::Live);
        health.set_draining();
        assert_eq!(health.readiness(), Readiness::Draining);
        assert!(!health.readiness().is_ready());
    }

    #[test]
    fn a_mesh_identity_without_a_certificate_is_not_ready() {
        let health = Health::new();
        let identity = trellis_identity::CurrentCredentials::default();
        health.set_listening(Some(&identity));
        assert_eq!(health.readiness(), Readiness::NoCertificate);
    }

    #[test]
    fn open_connections_are_counted_until_their_guard_drops() {
        let drain = Arc::new(Drain::default());
        let (a, b) = (drain.track(), drain.track());
        assert_eq!(drain.open(), 2);
        drop(a);
        assert_eq!(drain.open(), 1);
        drop(b);
        assert_eq!(drain.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_shut_down_at_its_next_request_or_after_the_grace() {
        let grace = Duration::from_millis(500);
        let drain = Arc::new(Drain::default());
        drain.start();
        // A request awaiting its response: at once.
        let requests = Arc::new(Requests::default());
        let waiting = requests.start();
        let at_once = tokio::time::timeout(
            Duration::from_millis(1),
            requests.shutdown_point(&drain, grace),
        );
        assert!(at_once.await.is_ok());
        drop(waiting);
        // Idle (an earlier request answered): when the next one starts.
        let point = tokio::spawn({
            let (requests, drain) = (requests.clone(), drain.clone());
            async move { requests.shutdown_point(&drain, grace).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !point.is_finished(),
            "an earlier request's wake-up is not the next request"
        );
        let _next = requests.start();
        tokio::time::timeout(Duration::from_millis(1), point)
            .await
            .expect("at the next request")
            .expect("joined");
        // Quiet: after the grace.
        let idle = Arc::new(Requests::default());
        let started = tokio::time::Instant::now();
        idle.shutdown_point(&drain, grace).await;
        assert_eq!(started.elapsed(), grace);
    }

    #[tokio::test]
    async fn started_resolves_after_start_and_for_late_waiters() {
        let drain = Arc::new(Drain::default());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.started().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.start();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        // Someone who looks after the start is not left waiting.
        tokio::time::timeout(std::time::Duration::from_secs(5), drain.started())
            .await
            .expect("at once");
    }
}
