//! Transparent capture, as a pod runs it: two "pods", each a network namespace this
//! test creates (joined by a veth pair), each with `trellis proxy init` applied and a
//! `trellis proxy --capture` running as uid 1337. The client app knows nothing about
//! the mesh: it connects to the service's cluster IP, a virtual address only the mesh
//! knows, and reaches the server app through both sidecars.
//!
//! Needs root (network namespaces, iptables, setpriv); it skips, saying so, without.
//! The apps are this test binary run again in a namespace (`helper`): a TCP echo
//! server, and HTTP and TCP clients that print one `RESULT:` line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{Running, output_lines_echoed, wait_for_line};

const CLUSTER_IP: &str = "10.96.77.10";
const CLIENT_IP: &str = "10.77.1.1";
const SERVER_IP: &str = "10.77.1.2";
/// A second address of the server pod, in a range the client excludes from capture.
const SERVER_EXCLUDED_IP: &str = "10.77.2.2";
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 7000;
/// Ports the server pod listens on that no service names.
const UNKNOWN_PORT: u16 = 9999;
const EXCLUDED_PORT: u16 = 9998;
const HELPER_ENV: &str = "TRELLIS_CAPTURE_HELPER";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Two network namespaces joined by a veth pair; deleted (with every process in
/// them) when dropped, so also when the test panics.
struct Pods {
    client: String,
    server: String,
    processes: Vec<Running>,
}

impl Pods {
    fn new() -> Pods {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let pods = Pods {
            client: format!("trellis-c{tag}"),
            server: format!("trellis-s{tag}"),
            processes: Vec::new(),
        };
        let (c_if, s_if) = (format!("tc{tag}"), format!("ts{tag}"));
        run("ip", &["netns", "add", &pods.client]);
        run("ip", &["netns", "add", &pods.server]);
        run(
            "ip",
            &["link", "add", &c_if, "type", "veth", "peer", "name", &s_if],
        );
        run("ip", &["link", "set", &c_if, "netns", &pods.client]);
        run("ip", &["link", "set", &s_if, "netns", &pods.server]);
        for (ns, dev, addrs) in [
            (&pods.client, &c_if, vec![format!("{CLIENT_IP}/24")]),
            (
                &pods.server,
                &s_if,
                vec![
                    format!("{SERVER_IP}/24"),
                    format!("{SERVER_EXCLUDED_IP}/24"),
                ],
            ),
        ] {
            for addr in &addrs {
                run("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
            }
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            // Everything off-pod (a cluster IP included) leaves by the veth.
            run("ip", &["-n", ns, "route", "add", "default", "dev", dev]);
        }
        pods
    }

    /// Starts `program args` in namespace `ns` (as uid/gid 1337 when `proxy_user`),
    /// waits for a line containing `ready`, and keeps it until the pods go.
    fn start(
        &mut self,
        ns: &str,
        proxy_user: bool,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
        label: &'static str,
    ) -> std::sync::mpsc::Receiver<String> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        if proxy_user {
            command.args([
                "setpriv",
                "--reuid",
                "1337",
                "--regid",
                "1337",
                "--clear-groups",
            ]);
        }
        let mut child = command
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a pod process");
        let rx = output_lines_echoed(&mut child, Some(label));
        self.processes.push(Running(child));
        wait_for_line(&rx, ready);
        rx
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.processes.clear();
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{program} {args:?}: {status:?}"
    );
}

fn trellis() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

fn test_binary() -> String {
    std::env::current_exe()
        .expect("the test binary")
        .display()
        .to_string()
}

/// Runs a helper in `ns` as root (an app, not the proxy) and returns its RESULT.
fn app(ns: &str, task: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, &test_binary()])
        .args(["helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, task)
        .stdin(Stdio::null())
        .output()
        .expect("run a helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("helper {task:?} printed no result: {stdout}"))
        .to_string()
}

fn mesh_yaml(extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: server, namespace: default}}
spec:
  clusterIP: {CLUSTER_IP}
  selector: {{app: server}}
  ports:
  - {{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}}}
  - {{name: tcp-echo, port: {TCP_PORT}, targetPort: {TCP_PORT}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server-1, namespace: default, labels: {{app: server}}}}
spec:
  containers: [{{name: app, image: echo}}]
status: {{podIP: {SERVER_IP}}}
{extra}"
    )
}

const REGISTRY_ONLY: &str = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

/// The proxy's Prometheus text, read from inside its pod.
fn stats(ns: &str) -> String {
    let text = app(ns, "http-get 127.0.0.1:15020 /stats/prometheus");
    text.replace("\\n", "\n")
}

/// The value of the series named `metric` whose labels contain every `labels` part.
fn series(stats: &str, metric: &str, labels: &[&str]) -> u64 {
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn captured_apps_reach_services_by_cluster_ip_through_both_sidecars() {
    // Needs root: network namespaces, iptables in them, setpriv to uid 1337.
    if !is_root() {
        eprintln!("skipped: capture tests need root (network namespaces and iptables)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, mesh_yaml("")).expect("write mesh");
    // The proxies run as uid 1337 and read the directory.
    for (path, mode) in [(dir.path(), 0o755), (mesh.as_path(), 0o644)] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(mode);
        std::fs::set_permissions(path, mode).expect("chmod");
    }
    let dir_arg = dir.path().display().to_string();

    let mut pods = Pods::new();
    let (client, server) = (pods.client.clone(), pods.server.clone());
    let excluded_range = format!("{}/24", SERVER_EXCLUDED_IP);
    let excluded_port = EXCLUDED_PORT.to_string();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &client,
            trellis(),
            "proxy",
            "init",
            "--proxy-uid",
            "1337",
            "--exclude-outbound-ip-ranges",
            &excluded_range,
            "--exclude-outbound-ports",
            &excluded_port,
        ],
    );
    run(
        "ip",
        &["netns", "exec", &server, trellis(), "proxy", "init"],
    );

    // The server pod's apps: HTTP on 8080, TCP echo on the TCP port and on two ports
    // no service names.
    let http_listen = format!("0.0.0.0:{HTTP_PORT}");
    pods.start(
        &server,
        false,
        trellis(),
        &["echo", "--listen", &http_listen, "--name", "server"],
        &[],
        "listening on",
        "[server app] ",
    );
    let echo_task = format!("tcp-echo {TCP_PORT},{UNKNOWN_PORT},{EXCLUDED_PORT}");
    pods.start(
        &server,
        false,
        &test_binary(),
        &["helper", "--exact", "--nocapture", "--test-threads=1"],
        &[(HELPER_ENV, &echo_task)],
        "RESULT: listening",
        "[server tcp] ",
    );
    let proxy = |name: &'static str| {
        vec![
            "proxy",
            "--standalone",
            &dir_arg,
            "--capture",
            "--name",
            name,
            "--labels",
            if name == "client" {
                "app=client"
            } else {
                "app=server"
            },
            "--admin",
            "127.0.0.1:15000",
            "--stats",
            "0.0.0.0:15020",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<String>>()
    };
    let server_args = proxy("server");
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    pods.start(
        &server,
        true,
        trellis(),
        &server_args,
        &[],
        "admin:",
        "[server proxy] ",
    );
    let client_args = proxy("client");
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let client_proxy = pods.start(
        &client,
        true,
        trellis(),
        &client_args,
        &[],
        "admin:",
        "[client proxy] ",
    );

    // HTTP to the cluster IP, which nothing but the mesh knows.
    let reply = app(
        &client,
        &format!("http-get {CLUSTER_IP}:{HTTP_PORT} /hello"),
    );
    assert!(
        reply.starts_with("200 ") && reply.contains("\"service\":\"server\""),
        "{reply}"
    );
    // Raw TCP (not HTTP: the server's sidecar sniffs) to the cluster IP.
    let reply = app(&client, &format!("tcp-send {CLUSTER_IP}:{TCP_PORT}"));
    assert_eq!(reply, "echoed", "TCP through both sidecars");

    let (c, s) = (stats(&client), stats(&server));
    let to_server = "destination_service=\"server.default.svc.cluster.local\"";
    assert_eq!(
        series(
            &c,
            "istio_requests_total",
            &["reporter=\"source\"", to_server, "response_code=\"200\""]
        ),
        1,
        "one request at the client's sidecar (no loop):\n{c}"
    );
    assert_eq!(
        series(
            &s,
            "istio_requests_total",
            &["reporter=\"destination\"", "response_code=\"200\""]
        ),
        1,
        "one request at the server's sidecar:\n{s}"
    );
    assert_eq!(
        series(
            &c,
            "istio_tcp_connections_opened_total",
            &["reporter=\"source\"", to_server]
        ),
        1,
        "{c}"
    );
    assert_eq!(
        series(
            &s,
            "istio_tcp_connections_opened_total",
            &["reporter=\"destination\"", to_server]
        ),
        1,
        "{s}"
    );
    // The client sidecar's own upstream connections were not captured again: nothing
    // went through its passthrough (destination unknown).
    assert_eq!(
        series(
            &c,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"unknown\""]
        ),
        0,
        "{c}"
    );

    // A destination the mesh does not know: passed through under ALLOW_ANY.
    let unknown = format!("tcp-send {SERVER_IP}:{UNKNOWN_PORT}");
    assert_eq!(app(&client, &unknown), "echoed");
    let c = stats(&client);
    assert_eq!(
        series(
            &c,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"source\"",
                "destination_service=\"unknown\"",
                "response_flags=\"-\""
            ]
        ),
        1,
        "the passthrough is counted:\n{c}"
    );

    // REGISTRY_ONLY for the client: the same destination is refused, while an excluded
    // port and an excluded range never reach the proxy and still work.
    std::fs::write(&mesh, mesh_yaml(REGISTRY_ONLY)).expect("edit mesh");
    wait_for_line(&client_proxy, "reloaded");
    assert!(
        app(&client, &unknown).starts_with("error"),
        "refused under REGISTRY_ONLY"
    );
    let c = stats(&client);
    assert_eq!(
        series(
            &c,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"unknown\"", "response_flags=\"NR\""]
        ),
        1,
        "{c}"
    );
    assert_eq!(
        app(&client, &format!("tcp-send {SERVER_IP}:{EXCLUDED_PORT}")),
        "echoed"
    );
    assert_eq!(
        app(
            &client,
            &format!("tcp-send {SERVER_EXCLUDED_IP}:{UNKNOWN_PORT}")
        ),
        "echoed"
    );
    // Mesh services still work.
    let reply = app(
        &client,
        &format!("http-get {CLUSTER_IP}:{HTTP_PORT} /again"),
    );
    assert!(reply.starts_with("200 "), "{reply}");
}

/// The apps, run by the test in a pod's namespace: only when `HELPER_ENV` says what
/// to do (otherwise a no-op test).
#[test]
fn helper() {
    let Ok(task) = std::env::var(HELPER_ENV) else {
        return;
    };
    let (verb, rest) = task.split_once(' ').unwrap_or((&task, ""));
    match verb {
        "tcp-echo" => tcp_echo(rest),
        "tcp-send" => println!("RESULT: {}", tcp_send(rest.parse().expect("address"))),
        "http-get" => {
            let (addr, path) = rest.split_once(' ').expect("ADDR PATH");
            println!("RESULT: {}", http_get(addr.parse().expect("address"), path));
        }
        other => panic!("unknown helper task {other}"),
    }
}

/// Echoes every connection's bytes back on each of `ports` (comma-separated), until
/// killed.
fn tcp_echo(ports: &str) {
    let listeners: Vec<TcpListener> = ports
        .split(',')
        .map(|p| TcpListener::bind(("0.0.0.0", p.parse::<u16>().expect("port"))).expect("bind"))
        .collect();
    println!("RESULT: listening");
    let mut threads = Vec::new();
    for listener in listeners {
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Sends a line that is not HTTP and says whether it came back.
fn tcp_send(addr: SocketAddr) -> String {
    let message = b"\x00trellis capture ping\n";
    let attempt = || -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(message)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < message.len() && Instant::now() < deadline {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    };
    match attempt() {
        Ok(got) if got == message => "echoed".into(),
        Ok(got) => format!("error: got {got:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// One HTTP/1.1 GET; `STATUS BODY` on one line (newlines escaped), or `error: …`.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) => {
            let status = response.split(' ').nth(1).unwrap_or("none").to_string();
            let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            format!("{status} {}", body.replace('\n', "\\n"))
        }
        Err(e) => format!("error: {e}"),
    }
}
