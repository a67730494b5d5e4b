//! Persistence: the API layer kept in the state file, and the workloads proxies
//! announced, saved beside it so that a restarted control plane still serves them for
//! [`REMEMBER_FOR`]. Both files are replaced atomically. It decides nothing about what
//! is in force (the store does) or when to recompute (the push loop does).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use trellis_api::Diagnostic;
use trellis_compile::Workload;

use super::ControlPlane;

/// How long after a restart the workloads proxies had announced are still served as
/// endpoints while their proxies reconnect.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30);

/// The state file holds resources that are not valid (any more): the control plane
/// does not start rather than drop them.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .file.display(), problems_line(.problems))]
pub struct StateFileError {
    pub file: PathBuf,
    pub problems: Vec<Diagnostic>,
}

fn problems_line(problems: &[Diagnostic]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// Where the API layer is saved, and the announced workloads remembered.
#[derive(Default)]
pub(super) struct Persisted {
    /// Where the API layer is saved, so applied resources survive a restart.
    file: Option<PathBuf>,
    /// Workloads that proxies announced before a restart (see [`Remembered`]).
    remembered: Remembered,
}

/// The workloads connected sidecars announced, saved beside the state file so that a
/// restarted control plane does not push configs without them: the first proxy to
/// reconnect would otherwise learn that every service whose pods have not reconnected
/// yet has no endpoints, and fail requests with 503 (UH) until they do. A remembered
/// workload counts until its proxy reconnects (its Hello then speaks for it) or until
/// [`REMEMBER_FOR`] has passed since the restart.
#[derive(Default)]
struct Remembered {
    until: Option<Instant>,
    workloads: Vec<(String, Workload)>,
    /// Fingerprint of the announced set last saved.
    saved: u64,
}

/// One announced workload as saved in the workloads file.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedWorkload {
    proxy: String,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    address: IpAddr,
    ports: BTreeMap<String, u16>,
    service_account: String,
}

/// Replaces `file` with `text` all at once: a temporary file renamed over it.
fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, file))
}

/// Where announced workloads are saved, beside the state file.
fn workloads_file(state_file: &Path) -> PathBuf {
    state_file.with_extension("workloads.json")
}

impl ControlPlane {
    fn persisted(&self) -> MutexGuard<'_, Persisted> {
        self.inner
            .persisted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the API layer in `file` from now on, first loading what it holds.
    pub fn persist_to(&self, file: PathBuf) -> Result<usize, StateFileError> {
        let mut restored = 0;
        if let Ok(text) = std::fs::read_to_string(&file) {
            let loaded = trellis_api::load_str(&file.display().to_string(), &text);
            let resources = match crate::source::validated(loaded) {
                Ok(resources) => resources,
                Err(problems) => return Err(StateFileError { file, problems }),
            };
            restored = resources.len();
            self.store().apply(resources);
            self.config_changed();
        }
        if let Ok(text) = std::fs::read_to_string(workloads_file(&file)) {
            match serde_json::from_str::<Vec<SavedWorkload>>(&text) {
                Ok(saved) => {
                    let mut persisted = self.persisted();
                    let r = &mut persisted.remembered;
                    r.until = Some(Instant::now() + REMEMBER_FOR);
                    r.workloads = saved
                        .into_iter()
                        .map(|w| {
                            let workload = Workload {
                                name: w.name,
                                namespace: w.namespace,
                                labels: w.labels,
                                address: Some(w.address),
                                ports: w.ports,
                                service_account: w.service_account,
                                // Only sidecars announce themselves.
                                sidecar: true,
                            };
                            (w.proxy, workload)
                        })
                        .collect();
                }
                Err(e) => tracing::warn!(error = %e, "ignoring the saved workloads"),
            }
        }
        self.persisted().file = Some(file);
        Ok(restored)
    }

    /// When remembered workloads stop counting, if some are remembered.
    pub(super) fn remembered_until(&self) -> Option<Instant> {
        self.persisted().remembered.until
    }

    /// The remembered workloads that still count: their proxy is not connected and the
    /// grace period has not ended.
    pub(super) fn remembered_workloads(
        &self,
        connected: &HashSet<&str>,
    ) -> Vec<(String, Workload)> {
        let mut persisted = self.persisted();
        let r = &mut persisted.remembered;
        if r.until.is_some_and(|until| Instant::now() >= until) {
            r.until = None;
            r.workloads.clear();
        }
        r.workloads
            .iter()
            .filter(|(proxy, _)| !connected.contains(proxy.as_str()))
            .cloned()
            .collect()
    }

    /// Saves the announced (and still remembered) workloads when they changed.
    pub(super) fn save_workloads(&self, workloads: &[(String, Workload)]) {
        let fingerprint = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(workloads, &mut h);
            std::hash::Hasher::finish(&h)
        };
        let file = {
            let persisted = self.persisted();
            if persisted.remembered.saved == fingerprint {
                return;
            }
            let Some(file) = &persisted.file else {
                return;
            };
            workloads_file(file)
        };
        let saved: Vec<SavedWorkload> = workloads
            .iter()
            .filter_map(|(proxy, w)| {
                Some(SavedWorkload {
                    proxy: proxy.clone(),
                    name: w.name.clone(),
                    namespace: w.namespace.clone(),
                    labels: w.labels.clone(),
                    address: w.address?,
                    ports: w.ports.clone(),
                    service_account: w.service_account.clone(),
                })
            })
            .collect();
        match write_atomically(&file, &serde_json::to_string(&saved).unwrap_or_default()) {
            Ok(()) => self.persisted().remembered.saved = fingerprint,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot save the announced workloads");
            }
        }
    }

    /// Writes the API layer to the state file (a YAML stream of JSON documents),
    /// atomically: a temporary file renamed over the old one.
    pub(super) fn save_state(&self) {
        let Some(file) = self.persisted().file.clone() else {
            return;
        };
        let docs: Vec<String> = self
            .store()
            .api_resources()
            .iter()
            .map(|r| r.raw.to_string())
            .collect();
        if let Err(e) = write_atomically(&file, &docs.join("\n---\n")) {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the applied resources");
        }
    }
}
