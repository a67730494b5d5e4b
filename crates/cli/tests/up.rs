//! `trellis up` as a user runs it: the demo manifests as a local mesh of real
//! processes, traffic through the ingress gateway, and canary steps applied by editing
//! the directory while traffic flows.

mod common;
use common::{address_block, output_lines, output_lines_echoed};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Each mesh here has loopback addresses of its own (an address block) and ports the
/// OS picks, but a mesh is a dozen processes and these tests time how fast edits take
/// effect: they run one mesh at a time.
static ONE_MESH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The address printed after `prefix` in `line` (up to a space or `/`).
fn addr_after(line: &str, prefix: &str) -> SocketAddr {
    line.split(prefix)
        .nth(1)
        .and_then(|rest| rest.split([' ', '/']).next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address after {prefix:?} in {line:?}"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM lets `trellis up` stop its apps; fall back to SIGKILL.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn within(count: u64, n: u64, p: f64, k: f64) -> bool {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - n as f64 * p).abs() <= k * sd
}

const CANARY: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-user-type: {exact: beta}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: V1
    - destination: {host: reviews, subset: v2}
      weight: V2
";

struct Client {
    gateway: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    /// The reviews version behind one product page, or `None` when the request failed.
    async fn version(&mut self, beta: bool) -> Option<String> {
        self.try_version(beta).await.ok()
    }

    /// The reviews version behind one product page, or why the request failed.
    async fn try_version(&mut self, beta: bool) -> Result<String, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.gateway)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.sender = Some(s);
        }
        let s = self.sender.as_mut().ok_or("no connection")?;
        s.ready().await.map_err(|e| format!("ready: {e}"))?;
        let mut req = http::Request::builder()
            .uri("/api/v1/products/0")
            .header("host", "app.example.com");
        if beta {
            req = req.header("x-user-type", "beta");
        }
        let response = s
            .send_request(
                req.body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| format!("send: {e:?}"))?;
        let status = response.status();
        let flags = response
            .headers()
            .get("x-response-flags")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!(
                "status {status}, flags {flags}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))?;
        json["versions"]["reviews"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no reviews version in {json}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard serialises whole tests; nothing else in this test takes the lock.
#[allow(clippy::await_holding_lock)]
async fn canary_split_holds_and_moves_while_traffic_flows() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--print"])
        .output()
        .expect("demo --print");
    std::fs::write(dir.path().join("app.yaml"), &manifests.stdout).expect("write");
    let block = address_block();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "up",
            dir.path().to_str().expect("path"),
            "--gateway-port",
            "0",
            "--control-plane-port",
            "0",
            "--address-block",
            &block.arg(),
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis up");
    let rx = output_lines(&mut child);
    let _up = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut ready_line = None;
    while Instant::now() < deadline && ready_line.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("mesh ready") {
                ready_line = Some(line);
            } else {
                seen.push(line);
            }
        }
    }
    let ready_line =
        ready_line.unwrap_or_else(|| panic!("trellis up never became ready: {seen:?}"));
    println!("{ready_line}");
    let gateway = addr_after(&ready_line, "ingress gateway on http://");

    // 2,000 requests: 90/10 within binomial tolerance; beta always reaches v2.
    let mut client = Client {
        gateway,
        sender: None,
    };
    let n = 2000;
    let mut v2 = 0;
    for _ in 0..n {
        let v = client
            .version(false)
            .await
            .expect("request through the gateway");
        v2 += u64::from(v == "v2");
    }
    assert!(within(v2, n, 0.10, 4.5), "v2 got {v2} of {n}");
    for _ in 0..50 {
        assert_eq!(client.version(true).await.as_deref(), Some("v2"));
    }

    // Canary steps while traffic flows: 95/5, then 50/50; nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let background = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut c = Client {
                gateway,
                sender: None,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if c.version(false).await.is_none() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for (w1, w2) in [(95, 5), (50, 50)] {
        let text = String::from_utf8_lossy(&manifests.stdout).into_owned();
        let canary = CANARY
            .replace("V1", &w1.to_string())
            .replace("V2", &w2.to_string());
        // Replace the reviews VirtualService of the bundled traffic file with this step.
        let start = text
            .find("kind: VirtualService\nmetadata:\n  name: reviews")
            .expect("reviews VirtualService");
        let doc_start = text[..start].rfind("---").map_or(0, |i| i + 4);
        let doc_end = text[start..].find("---").map_or(text.len(), |i| start + i);
        let edited = format!("{}{}{}", &text[..doc_start], canary, &text[doc_end..]);
        let changed_at = Instant::now();
        std::fs::write(dir.path().join("app.yaml"), edited).expect("write");
        // The split must move within a second (plus the directory poll interval).
        let mut moved = false;
        while changed_at.elapsed() < Duration::from_millis(1500) && !moved {
            let mut hits = 0;
            for _ in 0..200 {
                hits += u64::from(client.version(false).await.as_deref() == Some("v2"));
            }
            moved = within(hits, 200, f64::from(w2) / 100.0, 4.5);
        }
        assert!(moved, "split did not move to {w1}/{w2} in time");
        let mut v2 = 0;
        let n = 1000;
        for _ in 0..n {
            v2 += u64::from(client.version(false).await.as_deref() == Some("v2"));
        }
        assert!(
            within(v2, n, f64::from(w2) / 100.0, 4.5),
            "{w1}/{w2}: v2 got {v2} of {n}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    background.await.expect("background traffic");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the canary steps"
    );
}

#[test]
fn crashed_apps_are_restarted_and_down_stops_the_mesh() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("crasher.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: crasher}
spec:
  selector: {matchLabels: {app: crasher}}
  template:
    metadata: {labels: {app: crasher}}
    spec:
      containers:
      - name: crasher
        command: [sh, -c, 'sleep 0.1; exit 3']
",
    )
    .expect("write");
    let block = address_block();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "up",
            dir.path().to_str().expect("path"),
            "--gateway-port",
            "0",
            "--control-plane-port",
            "0",
            "--address-block",
            &block.arg(),
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis up");
    let rx = output_lines(&mut child);
    let mut up = Running(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut restarts, mut port) = (0, None);
    while Instant::now() < deadline && (restarts < 2 || port.is_none()) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if restarts < 2 && line.contains("pod crasher-0: app exited") {
            restarts += 1;
        }
        // The port the OS gave the gateway, which `trellis down` names the mesh by.
        if let Some(rest) = line.split("trellis down --gateway-port ").nth(1) {
            port = rest.split('`').next().map(str::to_string);
        }
    }
    assert_eq!(restarts, 2, "the crashing app is restarted like a pod");
    let port = port.expect("trellis up printed how to stop it");

    // A Deployment added to the directory is not started by a running `trellis up`,
    // and it says so.
    std::fs::write(
        dir.path().join("extra.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper}
spec:
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      containers:
      - name: sleeper
        command: [sleep, '60']
",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warned = None;
    while Instant::now() < deadline && warned.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && line.contains("the Deployments changed")
        {
            warned = Some(line);
        }
    }
    let warned = warned.expect("a warning about the new Deployment");
    assert!(
        warned.contains("new: sleeper-0") && warned.contains("restart"),
        "{warned}"
    );
    let down = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["down", "--gateway-port", &port])
        .output()
        .expect("trellis down");
    assert_eq!(
        down.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exited = None;
    while Instant::now() < deadline && exited.is_none() {
        exited = up.0.try_wait().expect("wait");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "trellis up stops cleanly after trellis down"
    );
}

fn trellis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run trellis")
}

/// Waits until every proxy reports SYNCED; returns the status list.
fn wait_synced(api: &str, proxies: usize, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        let out = trellis(&["proxy-status", "-o", "json", "--control-plane", api]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.len() == proxies && list.iter().all(|p| p["state"] == "SYNCED") {
                assert_eq!(out.status.code(), Some(0), "all synced exits 0");
                return v;
            }
            last = v;
        } else {
            last = serde_json::Value::String(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("proxies did not all become SYNCED within {limit:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn killing_the_control_plane_fails_no_request_and_proxies_resync() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = trellis(&["demo", "--print"]);
    std::fs::write(dir.path().join("app.yaml"), &manifests.stdout).expect("write");
    let block = address_block();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "up",
            dir.path().to_str().expect("path"),
            "--gateway-port",
            "0",
            "--control-plane-port",
            "0",
            "--address-block",
            &block.arg(),
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis up");
    // Lines are echoed: shown when the test fails.
    let rx = output_lines_echoed(&mut child, Some("trellis up: "));
    let _up = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut pid, mut api, mut gateway) = (None, None, None);
    let mut seen = Vec::new();
    while Instant::now() < deadline && pid.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            // Where the OS put the gateway's and the control plane's ports.
            if line.contains("mesh ready") {
                gateway = Some(addr_after(&line, "ingress gateway on http://"));
            }
            if let Some(rest) = line.split("control plane (pid ").nth(1) {
                pid = rest.split(')').next().and_then(|p| p.parse::<u32>().ok());
                api = Some(addr_after(&line, "API http://").to_string());
            }
            seen.push(line);
        }
    }
    let pid = pid.unwrap_or_else(|| panic!("no control plane pid printed: {seen:?}"));
    let api = api.expect("the control plane's API address");
    let gateway = gateway.unwrap_or_else(|| panic!("no gateway address printed: {seen:?}"));
    let port = gateway.port();
    // The demo: 6 pods with sidecars and the ingress gateway.
    let before = wait_synced(&api, 7, Duration::from_secs(10));

    // What a proxy was sent, as a table and as data.
    let page = before
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .find(|id| id.starts_with("productpage"))
        .expect("productpage's proxy")
        .to_string();
    let table = trellis(&["proxy-config", "clusters", &page, "--control-plane", &api]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("CLUSTER") && text.contains("TLS") && text.contains("reviews"),
        "{text}"
    );
    let listeners = trellis(&[
        "proxy-config",
        "listeners",
        "istio-ingressgateway",
        "--control-plane",
        &api,
    ]);
    let text = String::from_utf8_lossy(&listeners.stdout);
    assert!(
        text.starts_with("LISTENER")
            && text.lines().next().is_some_and(|h| h.ends_with("TLS"))
            && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    let json = trellis(&[
        "proxy-config",
        "endpoints",
        &page,
        "-o",
        "json",
        "--control-plane",
        &api,
    ]);
    let endpoints: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(
        endpoints
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["workload"] == "reviews-v2")),
        "{endpoints}"
    );
    let missing = trellis(&["proxy-config", "all", "nobody-0", "--control-plane", &api]);
    assert_eq!(missing.status.code(), Some(1));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let background = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        tokio::spawn(async move {
            let mut c = Client {
                gateway,
                sender: None,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match c.try_version(false).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(why) => {
                        eprintln!("background request failed: {why}");
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    // Kill the control plane under traffic: the proxies keep their last good config.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let during = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::Relaxed) > during + 50,
        "traffic keeps flowing while the control plane is down"
    );
    // `trellis up` restarts it (0.5 s back-off); the proxies reconnect and resync.
    let after = wait_synced(&api, 7, Duration::from_secs(15));
    let version = |v: &serde_json::Value| -> u64 {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["version"].as_u64())
            .max()
            .unwrap_or(0)
    };
    assert!(
        version(&after) > version(&before),
        "versions keep increasing across a control-plane restart: {before} then {after}"
    );

    // `trellis apply` goes through the new control plane: all traffic to v3.
    // (Files to apply live outside the watched directory.)
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let all_v3 = elsewhere.path().join("v3.yaml");
    std::fs::write(
        &all_v3,
        CANARY
            .replace(
                "subset: v1}\n      weight: V1",
                "subset: v3}\n      weight: 100",
            )
            .replace(
                "    - destination: {host: reviews, subset: v2}\n      weight: V2\n",
                "",
            ),
    )
    .expect("write");
    let applied = trellis(&[
        "apply",
        "-f",
        all_v3.to_str().expect("path"),
        "--control-plane",
        &api,
    ]);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(
        String::from_utf8_lossy(&applied.stdout)
            .contains("virtualservice/reviews (default) configured")
    );
    let mut client = Client {
        gateway,
        sender: None,
    };
    let changed_at = Instant::now();
    let mut moved = false;
    while changed_at.elapsed() < Duration::from_secs(1) && !moved {
        let mut v3 = 0;
        for _ in 0..20 {
            v3 += u32::from(client.version(false).await.as_deref() == Some("v3"));
        }
        moved = v3 == 20;
    }
    assert!(moved, "the applied route took effect within a second");

    // `trellis get` shows what the control plane holds: the applied version.
    let got = trellis(&[
        "get",
        "vs",
        "reviews",
        "-o",
        "json",
        "--control-plane",
        &api,
    ]);
    assert_eq!(got.status.code(), Some(0));
    let vs: serde_json::Value = serde_json::from_slice(&got.stdout).expect("json");
    assert_eq!(vs["kind"], "VirtualService");
    assert_eq!(
        vs["spec"]["http"][1]["route"][0]["destination"]["subset"], "v3",
        "{vs}"
    );
    let listed = trellis(&["get", "all", "-A", "--control-plane", &api]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.starts_with("KIND") && text.contains("VirtualService") && text.contains("reviews"),
        "{text}"
    );
    let missing = trellis(&["get", "dr", "nope", "--control-plane", &api]);
    assert_eq!(missing.status.code(), Some(1));

    // An invalid apply is refused with validate's message and changes nothing.
    let bad = elsewhere.path().join("bad.yaml");
    std::fs::write(
        &bad,
        CANARY
            .replace("weight: V1", "wieght: 50")
            .replace("V2", "50"),
    )
    .expect("write");
    let refused = trellis(&[
        "apply",
        "-f",
        bad.to_str().expect("path"),
        "--control-plane",
        &api,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("bad.yaml:")
            && text.contains("unknown field `wieght`")
            && text.contains("nothing was changed"),
        "{text}"
    );

    // A security policy is accepted (and enforced: no "not enforced" note).
    let pa = elsewhere.path().join("pa.yaml");
    std::fs::write(
        &pa,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n",
    )
    .expect("write");
    let applied = trellis(&[
        "apply",
        "-f",
        pa.to_str().expect("path"),
        "--control-plane",
        &api,
    ]);
    assert_eq!(applied.status.code(), Some(0));
    let text = String::from_utf8_lossy(&applied.stdout);
    assert!(
        text.contains("peerauthentication/default (default)") && !text.contains("not enforced"),
        "{text}"
    );

    // A config that passes validation but the gateway cannot apply (its port is
    // taken) is NACKed: proxy-status says so, the gateway keeps serving the old one.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let gw = elsewhere.path().join("gw.yaml");
    std::fs::write(
        &gw,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: extra}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {taken_port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
        ),
    )
    .expect("write");
    let applied = trellis(&[
        "apply",
        "-f",
        gw.to_str().expect("path"),
        "--control-plane",
        &api,
    ]);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "it is valid, so the apply is accepted"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut nacked = None;
    while Instant::now() < deadline && nacked.is_none() {
        let out = trellis(&["proxy-status", "--control-plane", &api]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("NACK") {
            assert_eq!(
                out.status.code(),
                Some(1),
                "a stale proxy makes proxy-status exit 1"
            );
            nacked = Some(text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let nacked = nacked.expect("proxy-status reports the NACK");
    let line = nacked
        .lines()
        .find(|l| l.contains("istio-ingressgateway"))
        .expect("gateway line");
    assert!(
        line.contains("STALE")
            && line.contains(&format!("127.0.0.1:{taken_port}"))
            && line.contains("in use"),
        "{nacked}"
    );
    for _ in 0..20 {
        assert_eq!(
            client.version(false).await.as_deref(),
            Some("v3"),
            "the old config still serves"
        );
    }
    let deleted = trellis(&[
        "delete",
        "-f",
        gw.to_str().expect("path"),
        "--control-plane",
        &api,
    ]);
    assert_eq!(deleted.status.code(), Some(0));
    wait_synced(&api, 7, Duration::from_secs(5));
    drop(taken);

    // The applied resource survives another control-plane restart.
    let pid2 = {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            let out = Command::new("pgrep")
                .args(["-f", &format!("control-plane .*--http {api}")])
                .output()
                .expect("pgrep");
            found = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .find(|p| *p != pid);
        }
        found.expect("the restarted control plane")
    };
    Command::new("kill")
        .args(["-KILL", &pid2.to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_synced(&api, 7, Duration::from_secs(15));
    for _ in 0..50 {
        assert_eq!(client.version(false).await.as_deref(), Some("v3"));
    }

    stop.store(true, Ordering::Relaxed);
    background.await.expect("background traffic");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed while the control plane was down or restarting ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
}
