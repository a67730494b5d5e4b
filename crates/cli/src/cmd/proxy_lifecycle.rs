//! `trellis proxy`'s life around its traffic: the status port it answers readiness
//! probes on (Istio's 15021), how long a drain may take (`--drain-duration`, Istio's
//! `terminationDrainDuration` from PROXY_CONFIG), and the drain itself after SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use trellis_proxy::{Health, Proxy, StatusServer};

use super::proxy::Args;

/// `--status-port`: a port, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPort(Option<u16>);

pub(super) fn parse_status_port(text: &str) -> Result<StatusPort, String> {
    if text == "off" {
        return Ok(StatusPort(None));
    }
    text.parse()
        .map(|p| StatusPort(Some(p)))
        .map_err(|_| format!("`{text}` is neither a port nor `off`"))
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    trellis_api::values::Duration::parse(text)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// Istio's status port, where a sidecar's readiness probe goes.
const STATUS_PORT: u16 = 15021;

/// Istio's default `terminationDrainDuration`.
const DRAIN_DURATION: Duration = Duration::from_secs(5);

/// `terminationDrainDuration` from Istio's proxy config (YAML or JSON), if set.
fn proxy_config_drain(text: &str) -> Result<Option<Duration>, String> {
    let docs =
        trellis_api::yaml::parse(text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    let Some(doc) = docs.first() else {
        return Ok(None);
    };
    match doc.root.to_json().get("terminationDrainDuration") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(d)) => parse_duration(d)
            .map(Some)
            .map_err(|e| format!("terminationDrainDuration: {e}")),
        Some(other) => Err(format!(
            "terminationDrainDuration: expected a duration such as \"5s\", found {other}"
        )),
    }
}

impl Args {
    /// How long a drain may take: the flag, else PROXY_CONFIG, else Istio's 5 s. A
    /// PROXY_CONFIG the proxy cannot read is warned about, not fatal: it comes from
    /// the pod's annotations, and a sidecar that never starts is worse.
    pub(super) fn drain_duration(&self) -> Duration {
        if let Some(d) = self.drain_duration {
            return d;
        }
        let Ok(text) = std::env::var("PROXY_CONFIG") else {
            return DRAIN_DURATION;
        };
        match proxy_config_drain(&text) {
            Ok(d) => d.unwrap_or(DRAIN_DURATION),
            Err(e) => {
                let _ = writeln!(
                    anstream::stderr(),
                    "{s}warning{s:#}: PROXY_CONFIG: {e}; draining for {DRAIN_DURATION:?}",
                    s = crate::output::WARNING
                );
                DRAIN_DURATION
            }
        }
    }

    /// Where the status port listens, if anywhere. By default, under a control plane,
    /// unless `--stats` is already there (it answers `/healthz/ready` the same way).
    fn status_addr(&self) -> Option<SocketAddr> {
        let port = match self.status_port {
            Some(StatusPort(port)) => port,
            None => (self.control_plane.is_some() && self.stats.port() != STATUS_PORT)
                .then_some(STATUS_PORT),
        }?;
        Some(SocketAddr::new(self.pod_ip.unwrap_or(self.bind), port))
    }
}

/// Starts the status port (if any) before the proxy, so probes see 503 until it is
/// ready; returns where it listens.
pub(super) fn start_status(
    args: &Args,
    health: &std::sync::Arc<Health>,
) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = args.status_addr() else {
        return Ok(None);
    };
    let server = StatusServer::start(addr, health.clone())
        .map_err(|e| format!("the status port (--status-port): {e}"))?;
    Ok(Some(server.addr()))
}

pub(super) fn print_status(addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        let _ = writeln!(anstream::stdout(), "  status: http://{addr}/healthz/ready");
    }
}

/// Drains `proxy` after `signal` and says how it went; the process then exits 0.
pub(super) fn drain(proxy: &Proxy, signal: crate::signals::Stop, within: Duration) -> i32 {
    let mut out = anstream::stdout();
    let _ = writeln!(
        out,
        "{}: draining (new connections refused; up to {within:?} for open ones)",
        signal.name()
    );
    let started = std::time::Instant::now();
    match proxy.drain(within) {
        0 => {
            let _ = writeln!(out, "drained in {:?}", started.elapsed());
        }
        open => {
            let _ = writeln!(
                out,
                "drain time is up: {open} connections still open are closed"
            );
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_duration_comes_from_istios_proxy_config() {
        let json = r#"{"terminationDrainDuration":"12s","concurrency":2}"#;
        assert_eq!(proxy_config_drain(json), Ok(Some(Duration::from_secs(12))));
        let yaml = "concurrency: 2\nterminationDrainDuration: 1m30s\n";
        assert_eq!(proxy_config_drain(yaml), Ok(Some(Duration::from_secs(90))));
        assert_eq!(proxy_config_drain("concurrency: 2\n"), Ok(None));
        assert!(proxy_config_drain("terminationDrainDuration: 5\n").is_err());
        assert!(proxy_config_drain("terminationDrainDuration: soon\n").is_err());
    }

    #[test]
    fn the_status_port_is_a_port_or_off() {
        assert_eq!(parse_status_port("15021"), Ok(StatusPort(Some(15021))));
        assert_eq!(parse_status_port("0"), Ok(StatusPort(Some(0))));
        assert_eq!(parse_status_port("off"), Ok(StatusPort(None)));
        assert!(parse_status_port("on").is_err());
    }
}
