//! Simulated proxies for the scale benchmarks (feature `testing`; `bench/`): real
//! config streams over gRPC and TLS that say Hello and ACK every push at once, without
//! building a data plane, recording when each proxy's newest push arrived. Also the
//! figures the benchmarks read from /proc (resident memory, CPU) and percentiles.
//! How a proxy gets its certificate is the caller's: the local benchmark signs with
//! the CA's files, the cluster one proves a pod's service-account token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::proto::mesh_config_client::MeshConfigClient;
use crate::proto::{self, proxy_message::Message};

/// What one simulated proxy has seen: the newest version, when it arrived, and how
/// many pushes it was sent.
#[derive(Default)]
struct Seen {
    version: AtomicU64,
    at: Mutex<Option<Instant>>,
    pushes: AtomicU64,
}

/// A set of simulated proxies, numbered from 0.
pub struct Fleet {
    seen: Vec<Seen>,
    bytes: AtomicU64,
}

impl Fleet {
    pub fn new(proxies: usize) -> Arc<Fleet> {
        Arc::new(Fleet {
            seen: (0..proxies).map(|_| Seen::default()).collect(),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Connects proxy `i` to the control plane at `grpc` with `config` (its workload
    /// certificate, the control plane's identity pinned) and says `hello`; it then
    /// ACKs every push until the stream ends. Retries the connection until it opens.
    pub fn connect(
        self: &Arc<Fleet>,
        i: usize,
        grpc: String,
        config: Arc<rustls::ClientConfig>,
        hello: proto::Hello,
    ) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let channel = loop {
                match crate::security::tls::connect(&grpc, config.clone()).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let mut client = MeshConfigClient::new(channel).max_decoding_message_size(512 << 20);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _ = tx.send(proto::ProxyMessage {
                message: Some(Message::Hello(hello)),
            });
            let mut pushes = match client.stream(UnboundedReceiverStream::new(rx)).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    eprintln!("proxy {i}: stream refused: {}", status.message());
                    return;
                }
            };
            let seen = &fleet.seen[i];
            while let Ok(Some(push)) = pushes.message().await {
                let at = Instant::now();
                let n: usize = push.resources.iter().map(|r| r.json.len()).sum();
                fleet.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if push.more {
                    // More parts of this push follow; answer after the last.
                    continue;
                }
                *seen.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
                seen.pushes.fetch_add(1, Ordering::Relaxed);
                seen.version.store(push.version, Ordering::Release);
                let _ = tx.send(proto::ProxyMessage {
                    message: Some(Message::Ack(proto::Ack {
                        version: push.version,
                    })),
                });
            }
        })
    }

    /// Proxies that have a configuration.
    pub fn configured(&self) -> usize {
        self.seen
            .iter()
            .filter(|s| s.version.load(Ordering::Acquire) > 0)
            .count()
    }

    /// The newest version any proxy has.
    pub fn newest(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.version.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
    }

    /// Waits (polling, at most `limit`) until every proxy runs a version newer than
    /// `version`; false when the time ran out.
    pub async fn wait_all_past(&self, version: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self
            .seen
            .iter()
            .any(|s| s.version.load(Ordering::Acquire) <= version)
        {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Milliseconds from `since` to each proxy's newest push, sorted.
    pub fn latencies_ms(&self, since: Instant) -> Vec<f64> {
        let mut lat: Vec<f64> = self
            .seen
            .iter()
            .filter_map(|s| *s.at.lock().unwrap_or_else(|e| e.into_inner()))
            .map(|at| at.saturating_duration_since(since).as_secs_f64() * 1000.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        lat
    }

    /// Pushes received by all proxies so far (a push in parts counts once).
    pub fn pushes(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.pushes.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes of resources received since the last call.
    pub fn take_bytes(&self) -> u64 {
        self.bytes.swap(0, Ordering::AcqRel)
    }
}

/// A process's figures from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Resident memory now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub peak_mib: f64,
    /// CPU used so far, user + system, milliseconds.
    pub cpu_ms: f64,
}

/// Reads `pid`'s figures (zeros for a process that is gone).
pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the `)`;
    // in clock ticks, 100 a second on Linux.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ProcStats {
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_mib: kib("VmHWM:") / 1024.0,
        cpu_ms: ticks * 10.0,
    }
}

/// The `p` quantile (0..=1) of sorted figures, nearest rank; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn own_process_has_memory_and_cpu() {
        let s = proc_stats(std::process::id());
        assert!(s.rss_mib > 0.0 && s.peak_mib >= s.rss_mib);
    }
}
