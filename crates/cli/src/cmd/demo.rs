//! `trellis demo`: the bundled bookstore (productpage → details, reviews → ratings;
//! reviews v1, v2, v3) run as a local mesh with the seed's traffic rules — the 90/10
//! canary of reviews and `x-user-type: beta` pinned to v2 — under light steady traffic,
//! with a live summary of where requests go. Ctrl-C stops it.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use trellis_analyze::{Level, Options as AnalyzeOptions};
use trellis_api::{Loaded, Severity, load_str};

use crate::local::{LocalMesh, Options};
use crate::output;

const BOOKINFO: &str = include_str!("../../../../demo/bookinfo.yaml");
const TRAFFIC: &str = include_str!("../../../../demo/traffic.yaml");
const SECURITY: &str = include_str!("../../../../demo/security.yaml");

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis demo                         run the demo mesh until Ctrl-C
  trellis demo --duration 30 --rate 50
  trellis demo --print > demo.yaml     the manifests, to edit and run with `trellis up`")]
pub struct Args {
    /// Print the bundled manifests and exit.
    #[arg(long)]
    pub print: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Requests per second the demo sends through the gateway.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Host port of the ingress gateway (0: a free one the OS picks, printed).
    #[arg(long, default_value_t = 8080)]
    pub gateway_port: u16,
    /// Port of the control plane's API on 127.0.0.1 (`trellis apply` talks to it;
    /// proxies connect to this port − 2). 0: the OS picks both (printed).
    #[arg(long, default_value_t = 15014)]
    pub control_plane_port: u16,
    /// Loopback block B of the demo's addresses (pods at 127.B.1.N, as `trellis up`).
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub address_block: u8,
}

/// Where the demo's requests went, by kind of user and reviews version.
#[derive(Default)]
struct Tally {
    by: BTreeMap<(&'static str, String), u64>,
    failed: u64,
}

/// Runs the demo.
pub fn run(args: &Args) -> i32 {
    let mut out = anstream::stdout();
    if args.print {
        let _ = write!(out, "{BOOKINFO}---\n{TRAFFIC}---\n{SECURITY}");
        return 0;
    }
    let stop = crate::signals::stop_flag();
    let mut loaded = Loaded::default();
    loaded.extend(load_str("demo/bookinfo.yaml", BOOKINFO));
    loaded.extend(load_str("demo/traffic.yaml", TRAFFIC));
    loaded.extend(load_str("demo/security.yaml", SECURITY));
    let mut problems = loaded.diagnostics.clone();
    for r in &loaded.resources {
        problems.extend(r.validate());
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let messages =
        crate::cmd::analyze::run_analyzers(&loaded.resources, &AnalyzeOptions::default())
            .unwrap_or_default();
    let h = output::OK;
    let _ = writeln!(
        out,
        "{h}Trellis demo{h:#}: a bookstore (productpage → details, reviews → ratings) with the seed's traffic rules"
    );
    let _ = writeln!(
        out,
        "  {} resources: validate {errors} errors; analyze {} errors, {} warnings",
        loaded.resources.len(),
        messages.iter().filter(|m| m.level == Level::Error).count(),
        messages
            .iter()
            .filter(|m| m.level == Level::Warning)
            .count()
    );
    if errors > 0 {
        for p in &problems {
            let _ = writeln!(out, "    {p}");
        }
        return 1;
    }
    let started = Instant::now();
    // The control plane serves (and watches) the demo's manifests from a directory.
    let log_dir = super::up::fresh_log_dir();
    let config_dir = log_dir.join("manifests");
    let written = std::fs::create_dir_all(&config_dir)
        .and_then(|()| std::fs::write(config_dir.join("bookinfo.yaml"), BOOKINFO))
        .and_then(|()| std::fs::write(config_dir.join("traffic.yaml"), TRAFFIC))
        .and_then(|()| std::fs::write(config_dir.join("security.yaml"), SECURITY));
    if let Err(e) = written {
        let _ = writeln!(
            anstream::stderr(),
            "{s}error{s:#}: {}: {e}",
            config_dir.display(),
            s = output::ERROR
        );
        return 1;
    }
    let options = Options {
        gateway_port: args.gateway_port,
        log_dir,
        config_dir,
        control_plane_port: args.control_plane_port,
        block: args.address_block,
        cert_lifetime: "24h".into(),
    };
    let mesh = match LocalMesh::start(&loaded.resources, options)
        .and_then(|m| m.wait_ready(Duration::from_secs(20)).map(|()| m))
    {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    super::up::print_summary(&mesh, started.elapsed());
    let _ = writeln!(
        out,
        "\n  routing: reviews → 90% v1, 10% v2; requests with `x-user-type: beta` → v2\n  security: mutual TLS between every sidecar (STRICT); only productpage may read reviews, only reviews ratings\n  try: curl -H 'host: app.example.com' http://{}/productpage\n",
        mesh.gateway
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (tally, traffic_stop, gateway, rate) = (
            tally.clone(),
            traffic_stop.clone(),
            mesh.gateway,
            args.rate.max(1),
        );
        std::thread::spawn(move || send_traffic(gateway, rate, &tally, &traffic_stop))
    };
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let live = std::io::stdout().is_terminal();
    let mut mtls = MtlsTally::default();
    let mut printed_lines = 0;
    let mut last_print = Instant::now();
    while !stop.load(Ordering::Acquire) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(200));
        if live {
            mtls.refresh(&mesh);
            let text = summary(
                &tally.lock().unwrap_or_else(|e| e.into_inner()),
                &mesh,
                &mtls,
            );
            if printed_lines > 0 {
                let _ = write!(out, "\x1b[{printed_lines}A\x1b[J");
            }
            printed_lines = text.lines().count();
            let _ = write!(out, "{text}");
        } else if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            mtls.refresh(&mesh);
            let _ = write!(
                out,
                "{}",
                summary(
                    &tally.lock().unwrap_or_else(|e| e.into_inner()),
                    &mesh,
                    &mtls
                )
            );
        }
    }
    traffic_stop.store(true, Ordering::Release);
    let _ = traffic.join();
    if !live {
        mtls.refresh(&mesh);
        let _ = write!(
            out,
            "{}",
            summary(
                &tally.lock().unwrap_or_else(|e| e.into_inner()),
                &mesh,
                &mtls
            )
        );
    }
    let _ = writeln!(out, "stopping {} pods…", mesh.plan.pods.len());
    drop(mesh);
    0
}

/// How many requests the sidecars received over mutual TLS, read from their metrics
/// (`istio_requests_total` as destination, by `connection_security_policy`) every
/// couple of seconds.
#[derive(Default)]
struct MtlsTally {
    mutual_tls: u64,
    plaintext: u64,
    denied: u64,
    read_at: Option<Instant>,
}

impl MtlsTally {
    fn refresh(&mut self, mesh: &LocalMesh) {
        if self
            .read_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.read_at = Some(Instant::now());
        let (mut mutual, mut plain, mut denied) = (0, 0, 0);
        for pod in mesh.plan.pods.iter().filter(|p| p.injection.sidecar) {
            let Some(text) = scrape(SocketAddr::new(pod.pod_ip, 15020)) else {
                continue;
            };
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("istio_requests_total{reporter=\"destination\"")
                else {
                    continue;
                };
                let count: u64 = rest
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if rest.contains("connection_security_policy=\"mutual_tls\"") {
                    mutual += count;
                } else {
                    plain += count;
                }
                if rest.contains("response_flags=\"RBAC\"") {
                    denied += count;
                }
            }
        }
        (self.mutual_tls, self.plaintext, self.denied) = (mutual, plain, denied);
    }
}

/// A proxy's Prometheus text, or `None` (bounded waits).
fn scrape(addr: SocketAddr) -> Option<String> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream
        .write_all(b"GET /stats/prometheus HTTP/1.1\r\nhost: stats\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

fn summary(t: &Tally, mesh: &LocalMesh, mtls: &MtlsTally) -> String {
    let mut s = String::new();
    for user in ["everyone", "beta"] {
        let total: u64 =
            t.by.iter()
                .filter(|((u, _), _)| *u == user)
                .map(|(_, n)| n)
                .sum();
        let parts: Vec<String> = t
            .by
            .iter()
            .filter(|((u, _), _)| *u == user)
            .map(|((_, v), n)| format!("{v} {n} ({:.1}%)", 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        s.push_str(&format!(
            "  reviews for {user:<9} {total:>6} requests: {}\n",
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        ));
    }
    let received = mtls.mutual_tls + mtls.plaintext;
    s.push_str(&format!(
        "  into the sidecars {received:>6} requests: mutual TLS {} ({:.1}%), plaintext {}; denied by policy {}\n",
        mtls.mutual_tls,
        100.0 * mtls.mutual_tls as f64 / received.max(1) as f64,
        mtls.plaintext,
        mtls.denied
    ));
    let restarts: u32 = mesh.restarts().iter().sum();
    s.push_str(&format!(
        "  failed requests: {}   app restarts: {restarts}   metrics: http://{}:15020/stats/prometheus\n",
        t.failed, mesh.gateway_ip
    ));
    s
}

/// Sends `rate` requests a second through the gateway until `stop`; one in ten as a beta user.
fn send_traffic(gateway: SocketAddr, rate: u32, tally: &Mutex<Tally>, stop: &AtomicBool) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let mut n: u64 = 0;
        while !stop.load(Ordering::Acquire) {
            let next = tokio::time::Instant::now() + interval;
            n += 1;
            let beta = n.is_multiple_of(10);
            let version = request(&mut sender, gateway, beta).await;
            if version.is_none() && crate::signals::stopping() {
                // The apps got the same Ctrl-C: not a failure of the mesh.
                break;
            }
            {
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match version {
                    Some(v) => {
                        *t.by
                            .entry((if beta { "beta" } else { "everyone" }, v))
                            .or_insert(0) += 1
                    }
                    None => t.failed += 1,
                }
            }
            tokio::time::sleep_until(next).await;
        }
    });
}

/// One request; the reviews version that answered, or `None` on failure.
async fn request(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    gateway: SocketAddr,
    beta: bool,
) -> Option<String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(gateway).await.ok()?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut()?;
    s.ready().await.ok()?;
    let mut req = http::Request::builder()
        .uri("/api/v1/products/0")
        .header("host", "app.example.com");
    if beta {
        req = req.header("x-user-type", "beta");
    }
    let response = s
        .send_request(req.body(Full::new(Bytes::new())).ok()?)
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json["versions"]["reviews"].as_str().map(str::to_string)
}
