//! The control plane's own metrics, in Prometheus text on the HTTP port's `/metrics`:
//! pushes sent, push latency (push → ACK or NACK), proxies connected, configuration
//! errors, NACKs, compile failures and compile time. Plain atomics; no registry crate.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the control plane counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub pushes: AtomicU64,
    /// Bytes of resources pushed (JSON), to see how much incremental pushes save.
    pub push_bytes: AtomicU64,
    pub push_latency: Histogram,
    pub compile_latency: Histogram,
    pub connected: AtomicU64,
    pub config_errors_directory: AtomicU64,
    pub config_errors_api: AtomicU64,
    pub nacks: AtomicU64,
    /// Compile steps that failed (panicked); their proxies kept their configuration.
    pub compile_errors: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "trellis_control_pushes_total",
            "Configurations pushed to proxies.",
            &self.pushes,
        );
        counter(
            &mut out,
            "trellis_control_push_bytes_total",
            "Bytes of configuration resources pushed to proxies.",
            &self.push_bytes,
        );
        counter(
            &mut out,
            "trellis_control_nacks_total",
            "Pushes a proxy refused (NACK).",
            &self.nacks,
        );
        counter(
            &mut out,
            "trellis_control_compile_errors_total",
            "Compile steps that failed (a panic); the proxies they concern keep their configuration.",
            &self.compile_errors,
        );
        let _ = writeln!(
            out,
            "# HELP trellis_control_config_errors_total Configurations refused as invalid.\n\
             # TYPE trellis_control_config_errors_total counter\n\
             trellis_control_config_errors_total{{source=\"directory\"}} {}\n\
             trellis_control_config_errors_total{{source=\"api\"}} {}",
            self.config_errors_directory.load(Ordering::Relaxed),
            self.config_errors_api.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP trellis_control_connected_proxies Proxies connected now.\n\
             # TYPE trellis_control_connected_proxies gauge\n\
             trellis_control_connected_proxies {}",
            self.connected.load(Ordering::Relaxed)
        );
        self.push_latency.render(
            "trellis_control_push_seconds",
            "Time from a push to the proxy's ACK or NACK.",
            &mut out,
        );
        self.compile_latency.render(
            "trellis_control_compile_seconds",
            "Time to compile every connected proxy's configuration after a change.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.push_latency.observe(Duration::from_millis(3));
        m.push_latency.observe(Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("trellis_control_push_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("trellis_control_push_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("trellis_control_push_seconds_count 2"));
    }
}
