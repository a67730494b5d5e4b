//! The measured process: a release `trellis control-plane --kubeconfig` run against
//! the cluster, its ready line waited for (it says ready once every watch has listed),
//! its Prometheus metrics read over its HTTP port. Killed when dropped.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ControlPlane {
    child: Child,
    pub pid: u32,
    pub grpc: String,
    pub http: SocketAddr,
    pub state_dir: PathBuf,
    /// From start to its ready line.
    pub ready_after: Duration,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts it and waits (at most `limit`) for its ready line.
    pub fn start(
        trellis: &Path,
        kubeconfig: &Path,
        dir: &Path,
        limit: Duration,
    ) -> Result<ControlPlane, String> {
        let state_dir = dir.join("control-plane");
        let addresses = dir.join("control-plane.addresses");
        let log = dir.join("control-plane.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut child = Command::new(trellis)
            .args(["control-plane", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--grpc",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--webhook",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--addresses-file")
            .arg(&addresses)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{}: {e}", trellis.display()))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let ready_after = loop {
            let left = limit.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(" ready") => break started.elapsed(),
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the control plane did not say ready within {limit:?}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    ));
                }
            }
        };
        let text = std::fs::read_to_string(&addresses).map_err(|e| e.to_string())?;
        let address = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_string)
                .ok_or_else(|| format!("no `{prefix}` line in {}", addresses.display()))
        };
        let grpc = address("grpc ")?;
        let http = address("http ")?
            .parse()
            .map_err(|e| format!("the HTTP address: {e}"))?;
        Ok(ControlPlane {
            child,
            pid,
            grpc,
            http,
            state_dir,
            ready_after,
            log,
        })
    }

    /// Its log's line saying how many resources it read and how long that took.
    pub fn read_line(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .find(|l| l.contains("from the Kubernetes API server in"))
            .map(|l| {
                l.split_once("read ")
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_string()
            })
    }

    /// Lines of its log with `needle` (warnings and errors, for the report).
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// `GET path` on its HTTP port, with its API token; the body.
    pub fn get(&self, path: &str) -> Result<String, String> {
        let token = std::fs::read_to_string(self.state_dir.join("api-token"))
            .map_err(|e| format!("its API token: {e}"))?;
        let mut s = std::net::TcpStream::connect_timeout(&self.http, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // HTTP/1.0: the body ends with the connection, never in chunks.
        write!(
            s,
            "GET {path} HTTP/1.0\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
            token.trim()
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("GET {path}: no response"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("GET {path}: {head}"));
        }
        Ok(body.to_string())
    }

    /// The sum of every series of the metric `name` on its /metrics.
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        Ok(self
            .get("/metrics")?
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The mesh root its proxies trust.
    pub fn root_pem(&self) -> Result<String, String> {
        let file = self.state_dir.join("ca/ca-cert.pem");
        std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
