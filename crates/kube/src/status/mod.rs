//! Analysis written back into the cluster: after the mesh's resources change (and
//! settle), the analyzers `trellis analyze` runs are run over the snapshot and each
//! Istio resource's `status.validationMessages` is made to say what they found, in
//! Istio's shape (`messages.rs`), through the status subresource, only where it
//! differs, and cleared when the problem goes (`writer.rs`).
//!
//! The snapshots come through a `watch` channel, so the writer does not care who
//! feeds it; [`poll_snapshots`] makes one from any `Fn() -> Arc<Vec<Resource>>`
//! (such as `ControlPlane::resources`). Writing status is a leader's duty.

mod messages;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use trellis_api::Resource;

pub use messages::{
    MessageTypeRef, ObjectRef, ValidationMessage, Wanted, observed_generation, wanted, written,
};

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// What the analyzers assume (the cluster's: real Pods, no stand-in gateway).
    pub analysis: trellis_analyze::Options,
    /// A pass starts once changes have paused this long...
    pub quiet: Duration,
    /// ...or this long after the first change, if they keep coming.
    pub max_delay: Duration,
    /// The first retry after a failed write (doubling, up to a minute).
    pub retry: Duration,
}

impl StatusOptions {
    /// For a control plane in `namespace`.
    pub fn new(namespace: &str) -> StatusOptions {
        StatusOptions {
            analysis: trellis_analyze::Options {
                istio_namespace: namespace.into(),
                // A cluster has its Pods and its gateways: nothing to stand in for.
                add_ingress_gateway: false,
                pods_from_deployments: trellis_analyze::TemplatePods::Never,
                ..trellis_analyze::Options::default()
            },
            quiet: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            retry: Duration::from_secs(1),
        }
    }
}

/// What the writer has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct StatusStats {
    /// Analysis passes finished (their writes done).
    pub passes: AtomicU64,
    /// Status patches sent.
    pub patches: AtomicU64,
    /// Writes that failed (retried).
    pub failures: AtomicU64,
}

/// The running writer; dropping it stops it.
pub struct StatusWriter {
    task: JoinHandle<()>,
    stats: Arc<StatusStats>,
}

impl StatusWriter {
    /// Starts writing analysis for each snapshot `snapshots` sees (the current one
    /// first). Stops when the sender is dropped. Needs a tokio runtime.
    pub fn start(
        client: Client,
        snapshots: watch::Receiver<Arc<Vec<Resource>>>,
        options: StatusOptions,
    ) -> StatusWriter {
        let stats = Arc::new(StatusStats::default());
        let task = tokio::spawn(run(client, snapshots, options, stats.clone()));
        StatusWriter { task, stats }
    }

    pub fn stats(&self) -> &StatusStats {
        &self.stats
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A snapshot channel fed by calling `read` every `every`; a new snapshot is sent
/// when `read` returns another `Arc` than before. Polling stops when every receiver
/// is gone.
pub fn poll_snapshots<F>(every: Duration, read: F) -> watch::Receiver<Arc<Vec<Resource>>>
where
    F: Fn() -> Arc<Vec<Resource>> + Send + 'static,
{
    let (sender, receiver) = watch::channel(read());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
            let next = read();
            sender.send_if_modified(|current| {
                let modified = !Arc::ptr_eq(current, &next);
                if modified {
                    *current = next;
                }
                modified
            });
        }
    });
    receiver
}

async fn run(
    client: Client,
    mut snapshots: watch::Receiver<Arc<Vec<Resource>>>,
    options: StatusOptions,
    stats: Arc<StatusStats>,
) {
    let mut cluster = writer::Cluster::new(client);
    let mut retry: Option<Duration> = None;
    let mut first = true;
    loop {
        if !first && !settle(&mut snapshots, &options, retry).await {
            return;
        }
        first = false;
        let snapshot = snapshots.borrow_and_update().clone();
        let failed = pass(&mut cluster, snapshot, &options, &stats).await;
        stats.passes.fetch_add(1, Ordering::Relaxed);
        retry = failed.then(|| {
            let next = retry.map_or(options.retry, |r| r.saturating_mul(2));
            next.min(Duration::from_secs(60))
        });
    }
}

/// Waits for a change (or the retry time), then for the changes to pause.
/// False when the sender is gone.
async fn settle(
    snapshots: &mut watch::Receiver<Arc<Vec<Resource>>>,
    options: &StatusOptions,
    retry: Option<Duration>,
) -> bool {
    tokio::select! {
        changed = snapshots.changed() => {
            if changed.is_err() {
                return false;
            }
        }
        () = tokio::time::sleep(retry.unwrap_or(Duration::MAX)), if retry.is_some() => return true,
    }
    let deadline = Instant::now() + options.max_delay;
    loop {
        let quiet_end = (Instant::now() + options.quiet).min(deadline);
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            () = tokio::time::sleep_until(quiet_end) => return true,
        }
    }
}

/// One pass: analyse, then write what differs. True when a write failed.
async fn pass(
    cluster: &mut writer::Cluster,
    snapshot: Arc<Vec<Resource>>,
    options: &StatusOptions,
    stats: &StatusStats,
) -> bool {
    let listed = cluster.list_written().await;
    let analysis = options.analysis.clone();
    let kinds = cluster.istio_kinds();
    let is_istio = move |g: &str, k: &str| kinds.contains(&(g.to_string(), k.to_string()));
    let analysed = tokio::task::spawn_blocking(move || {
        let messages = trellis_analyze::analyze(&snapshot, &analysis);
        messages.map(|m| wanted(&snapshot, &m, is_istio))
    })
    .await;
    let wanted = match analysed {
        Ok(Ok(w)) => w,
        Ok(Err(error)) => {
            tracing::error!(%error, "analysis for status cannot run");
            return false;
        }
        Err(error) => {
            tracing::error!(%error, "analysis for status panicked");
            return false;
        }
    };
    let mut failed = !listed;
    for (object, want) in &wanted {
        if !cluster.differs(object, want) {
            continue;
        }
        match cluster.write(object, want).await {
            Ok(writer::Outcome::Patched) => {
                stats.patches.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%object, messages = want.messages.len(), "analysis status written");
            }
            Ok(writer::Outcome::Same | writer::Outcome::Gone) => {}
            Err(error) => {
                failed = true;
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%object, %error, "cannot write the analysis status");
            }
        }
    }
    // What is no longer in the snapshot and said nothing need not be remembered.
    cluster
        .known
        .retain(|object, known| wanted.contains_key(object) || !known.messages.is_empty());
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_sends_a_snapshot_only_when_the_arc_changes() {
        let current = Arc::new(std::sync::Mutex::new(Arc::new(Vec::new())));
        let source = current.clone();
        let mut snapshots = poll_snapshots(Duration::from_millis(5), move || {
            source.lock().expect("not poisoned").clone()
        });
        let quiet = tokio::time::timeout(Duration::from_millis(50), snapshots.changed()).await;
        assert!(quiet.is_err(), "the same Arc is no new snapshot");
        let next = Arc::new(
            trellis_api::load_str(
                "x.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            )
            .resources,
        );
        *current.lock().expect("not poisoned") = next.clone();
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .expect("a new snapshot is sent")
            .expect("the poller runs");
        assert!(Arc::ptr_eq(&snapshots.borrow_and_update(), &next));
    }
}
