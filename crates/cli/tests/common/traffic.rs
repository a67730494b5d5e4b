//! The seed's bookstore in the cluster tests: its examples read from beside the
//! checkout, the route from the seed's Gateway to productpage, and traffic through
//! the ingress gateway to the product API: one request (which reviews version
//! answered), a sample of many, and a bounded background load that records every
//! failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The seed's YAML examples, beside the checkout.
pub const SEED: &str = "../../../shared/seed/examples";

/// One of the seed's examples, when the seed is beside the checkout.
pub fn seed(file: &str) -> Option<String> {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(SEED)
            .join(file),
    )
    .ok()
}

/// The seed's gateway example has no route of its own: this sends its host to
/// productpage, as bookinfo's sample does.
pub const PRODUCTPAGE_ROUTE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage}
spec:
  hosts: [app.example.com]
  gateways: [app-gateway]
  http:
  - route:
    - destination: {host: productpage, port: {number: 9080}}
";

/// `GET /api/v1/products/0` through the gateway: which reviews version answered, or
/// why the request failed.
pub fn product(gateway: SocketAddr, headers: &[(&str, &str)]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&gateway, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "GET /api/v1/products/0 HTTP/1.1\r\nhost: app.example.com\r\n{extra}connection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{}: {body}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    json["versions"]["reviews"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("reviews unavailable: {}", json["reviews"]))
}

/// Counts reviews versions over `n` requests (failures are an error).
pub fn sample(gateway: SocketAddr, n: usize, headers: &[(&str, &str)]) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for i in 0..n {
        match product(gateway, headers).as_deref() {
            Ok("v1") => v1 += 1,
            Ok("v2") => v2 += 1,
            other => panic!("request {i} of {n}: {other:?}"),
        }
    }
    (v1, v2)
}

/// Requests through the gateway in the background (bounded in count and time),
/// counting failures and saying why.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(gateway: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Acquire)
                    && sent.load(Ordering::Relaxed) < 20_000
                    && started.elapsed() < Duration::from_secs(120)
                {
                    if let Err(e) = product(gateway, &[]) {
                        failures.lock().expect("lock").push(e);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load {
            stop,
            sent,
            failures,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}
