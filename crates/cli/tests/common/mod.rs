//! Helpers shared by the CLI's end-to-end tests: running `trellis` as a child process
//! that is always reaped, reading its output lines with bounded waits, and learning
//! where it listens from what it prints (it binds port 0: the OS picks, no test
//! reserves a port ahead). Local meshes get a loopback block of their own. (Each test
//! binary uses a subset.)
#![allow(dead_code)]

pub mod install_pods;
pub mod traffic;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback block B (127.B.0.0/16) for one local mesh (`--address-block B`), kept
/// from every other test's, in this run or a concurrent one on this machine, by a lock
/// file held until this drops. Block 0, the default, is left to meshes users run.
pub struct AddressBlock {
    pub block: u8,
    _lock: std::fs::File,
}

impl AddressBlock {
    /// The block as `--address-block` takes it.
    pub fn arg(&self) -> String {
        self.block.to_string()
    }
}

/// Claims a free [`AddressBlock`].
pub fn address_block() -> AddressBlock {
    // Start where a concurrent run probably does not, and take the first free one.
    let start = std::process::id() as usize;
    for i in 0..255 {
        let block = (1 + (start + i) % 255) as u8;
        let path = std::env::temp_dir().join(format!("trellis-test-address-block-{block}.lock"));
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if file.try_lock().is_ok() {
            return AddressBlock { block, _lock: file };
        }
    }
    panic!("every loopback block 127.1-255.0.0/16 is in use by another test");
}

/// The child's stdout and stderr lines, as they come (the child's pipes are taken).
pub fn output_lines(child: &mut Child) -> mpsc::Receiver<String> {
    output_lines_echoed(child, None)
}

/// As [`output_lines`], also printing each line after `echo` (the test harness shows
/// them when a test fails).
pub fn output_lines_echoed(
    child: &mut Child,
    echo: Option<&'static str>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    for pipe in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(prefix) = echo {
                    println!("{prefix}{line}");
                }
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// Starts `trellis ARGS` and waits (bounded) for a line containing `ready`; returns
/// the process, that line, and a channel of its later output lines.
pub fn spawn(args: &[&str], ready: &str) -> (Running, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis");
    let rx = output_lines(&mut child);
    // Owned from here on, so the child is killed and reaped on every path.
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(ready) => return (running, line, rx),
            Ok(line) => seen.push(line),
            Err(_) => {}
        }
    }
    panic!("trellis {args:?} never printed {ready:?}: {seen:?}");
}

/// Starts `trellis echo` on a free loopback port: the process and its address.
pub fn spawn_echo() -> (Running, std::net::SocketAddr) {
    let (echo, ready, _) = spawn(
        &["echo", "--listen", "127.0.0.1:0", "--name", "echo"],
        "listening on http://",
    );
    let addr = ready
        .rsplit("http://")
        .next()
        .expect("address")
        .trim()
        .parse()
        .expect("echo address");
    (echo, addr)
}

/// Waits (bounded) for an output line containing `text`.
pub fn wait_for_line(rx: &mpsc::Receiver<String>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(text) {
                return line;
            }
            seen.push(line);
        }
    }
    panic!("no line containing {text:?}: {seen:?}");
}

/// Where a `trellis proxy` listens, as it printed after `ready` (ports the OS gave
/// for every port 0 it was asked for).
pub struct ProxyAddrs {
    pub listeners: Vec<(String, std::net::SocketAddr)>,
    pub admin: std::net::SocketAddr,
    pub stats: std::net::SocketAddr,
}

impl ProxyAddrs {
    /// The only (or first) listener's address.
    pub fn listener(&self) -> std::net::SocketAddr {
        self.listeners.first().expect("a listener").1
    }

    /// The address of the listener called `name` (a gateway's are `0.0.0.0_PORT`).
    pub fn listener_named(&self, name: &str) -> std::net::SocketAddr {
        self.listeners
            .iter()
            .find_map(|(n, a)| (n == name).then_some(*a))
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }
}

/// Starts `trellis proxy ARGS` (give it `--admin 127.0.0.1:0 --stats 127.0.0.1:0` and
/// port 0 in `--port-map`) and reads the addresses it bound from its start-up lines.
pub fn spawn_proxy(args: &[&str]) -> (Running, ProxyAddrs, mpsc::Receiver<String>) {
    let (running, _, rx) = spawn(args, "ready");
    let mut listeners = Vec::new();
    loop {
        let line = wait_for_line(&rx, ":");
        if let Some(rest) = line.trim().strip_prefix("listening: ") {
            let (name, addr) = rest.rsplit_once(' ').expect("NAME ADDR");
            listeners.push((name.to_string(), addr.parse().expect("listener address")));
            continue;
        }
        if let Some(rest) = line.trim().strip_prefix("admin: http://") {
            let (admin, rest) = rest.split_once('/').expect("admin address");
            let stats = rest
                .split("http://")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .expect("stats address");
            let addrs = ProxyAddrs {
                listeners,
                admin: admin.parse().expect("admin address"),
                stats: stats.parse().expect("stats address"),
            };
            return (running, addrs, rx);
        }
    }
}

/// A `trellis up` mesh for a test: its own address block, ports the OS picks, and
/// what it printed when ready. Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LocalMesh {
    pub gateway: std::net::SocketAddr,
    /// The control plane's API (`--control-plane` of the CLI commands).
    pub api: String,
    pub block: AddressBlock,
    pub lines: mpsc::Receiver<String>,
    /// Where the apps' output and the mesh's state are (`app logs:` in the summary).
    pub log_dir: Option<std::path::PathBuf>,
    /// What it printed up to the ready summary's last line.
    pub printed: Vec<String>,
    child: Child,
}

impl LocalMesh {
    /// Runs `trellis up DIR EXTRA...` and waits (bounded) until the mesh is ready.
    pub fn up(dir: &std::path::Path, extra: &[&str]) -> LocalMesh {
        let block = address_block();
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .arg("up")
            .arg(dir)
            .args(["--gateway-port", "0", "--control-plane-port", "0"])
            .args(["--address-block", &block.arg()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trellis up");
        let lines = output_lines_echoed(&mut child, Some("trellis up: "));
        let deadline = Instant::now() + Duration::from_secs(40);
        let (mut gateway, mut api, mut log_dir) = (None, None, None);
        let mut seen = Vec::new();
        while Instant::now() < deadline && (gateway.is_none() || api.is_none()) {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                if line.contains("mesh ready") {
                    gateway = Some(address_after(&line, "ingress gateway on http://"));
                }
                if let Some(rest) = line.split("app logs: ").nth(1) {
                    log_dir = rest.split_whitespace().next().map(std::path::PathBuf::from);
                }
                if line.contains("control plane (pid ") {
                    api = Some(address_after(&line, "API http://").to_string());
                }
                seen.push(line);
            }
        }
        LocalMesh {
            gateway: gateway.unwrap_or_else(|| panic!("trellis up never became ready: {seen:?}")),
            api: api.unwrap_or_else(|| panic!("no control plane address printed: {seen:?}")),
            block,
            lines,
            log_dir,
            printed: seen,
            child,
        }
    }

    /// `trellis ARGS --control-plane API`.
    pub fn trellis(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .args(["--control-plane", &self.api])
            .env("NO_COLOR", "1")
            .output()
            .expect("trellis")
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address printed after `prefix` in `line` (up to a space or `/`).
pub fn address_after(line: &str, prefix: &str) -> std::net::SocketAddr {
    line.split(prefix)
        .nth(1)
        .and_then(|rest| rest.split([' ', '/']).next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address after {prefix:?} in {line:?}"))
}

/// One `GET` over a fresh HTTP/1.1 connection: status and body, or why it failed.
pub fn http_get(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The bundled demo's manifests (`trellis demo --print`), written to a new directory.
pub fn demo_manifests() -> tempfile::TempDir {
    demo_manifests_without(&[])
}

/// The bundled demo's manifests without the documents of `kinds`.
pub fn demo_manifests_without(kinds: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--print"])
        .output()
        .expect("demo --print");
    let text = String::from_utf8_lossy(&out.stdout);
    let kept: Vec<&str> = text
        .split("\n---\n")
        .filter(|doc| !kinds.iter().any(|k| doc.contains(&format!("kind: {k}\n"))))
        .collect();
    std::fs::write(dir.path().join("app.yaml"), kept.join("\n---\n")).expect("write");
    dir
}
