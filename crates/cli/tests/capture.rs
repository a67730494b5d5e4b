//! Transparent capture, as a pod runs it: two "pods", each a network namespace this
//! test creates (joined by a bridge, `capture/pods.rs`), each with `trellis proxy init` applied and a
//! `trellis proxy --capture` running as uid 1337. The client app knows nothing about
//! the mesh: it connects to the service's cluster IP, a virtual address only the mesh
//! knows, and reaches the server app through both sidecars.
//!
//! Needs root (network namespaces, iptables, setpriv); it skips, saying so, without.
//! The apps are this test binary run again in a namespace (`helper`, `capture/apps.rs`):
//! a TCP echo server, and HTTP and TCP clients that print one `RESULT:` line.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::wait_for_line;
#[path = "capture/apps.rs"]
mod apps;
#[path = "capture/pods.rs"]
mod pods;
use pods::{Pods, is_root, run, strings};

const CLUSTER_IP: &str = "10.96.77.10";
const CLIENT_IP: &str = "10.77.1.1";
const SERVER_IP: &str = "10.77.1.2";
/// The pods' IPv6 addresses, and the service's IPv6 cluster IP.
const CLIENT_IP6: &str = "fd00:77::1";
const SERVER_IP6: &str = "fd00:77::2";
const CLUSTER_IP6: &str = "fd00:96::10";
/// The bridge's own address, where a control plane listens.
const INFRA_IP: &str = "10.77.1.254";
/// A second address of the server pod, in a range the client excludes from capture.
const SERVER_EXCLUDED_IP: &str = "10.77.2.2";
const HTTP_PORT: u16 = 8080;
/// A ServiceEntry host no DNS server but the proxy's knows, and its virtual IP.
const SERVICE_ENTRY_HOST: &str = "api.mesh-only.test";
const SERVICE_ENTRY_IP: &str = "240.240.0.1";
const TCP_PORT: u16 = 7000;
/// Ports the server pod listens on that no service names.
const UNKNOWN_PORT: u16 = 9999;
const EXCLUDED_PORT: u16 = 9998;
const HELPER_ENV: &str = "TRELLIS_CAPTURE_HELPER";

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

/// The server's Service (a cluster IP, an HTTP and a TCP port); `pod` adds its Pod
/// (standalone proxies learn endpoints from Pods; with a control plane the server's
/// sidecar announces it).
fn mesh_yaml(pod: bool, extra: &str) -> String {
    let pod = if pod {
        format!(
            "---
apiVersion: v1
kind: Pod
metadata: {{name: server-1, namespace: default, labels: {{app: server}}}}
spec:
  containers: [{{name: app, image: echo}}]
status: {{podIP: {SERVER_IP}}}
"
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: server, namespace: default}}
spec:
  clusterIP: {CLUSTER_IP}
  clusterIPs: [{CLUSTER_IP}, \"{CLUSTER_IP6}\"]
  selector: {{app: server}}
  ports:
  - {{name: http, port: {HTTP_PORT}, targetPort: {HTTP_PORT}}}
  - {{name: tcp-echo, port: {TCP_PORT}, targetPort: {TCP_PORT}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{SERVICE_ENTRY_HOST}]
  addresses: [{SERVICE_ENTRY_IP}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {HTTP_PORT}, name: http, protocol: HTTP}}]
  endpoints: [{{address: {SERVER_IP}}}]
{pod}{extra}"
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

const STRICT: &str = "---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
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

/// A directory the proxies (uid 1337) can read, holding `mesh.yaml`.
fn mesh_dir(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, yaml).expect("write mesh");
    for (path, mode) in [(dir.path(), 0o755), (mesh.as_path(), 0o644)] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(mode);
        std::fs::set_permissions(path, mode).expect("chmod");
    }
    (dir, mesh)
}

/// Two pods with capture programmed (the client excluding [`EXCLUDED_PORT`] and
/// [`SERVER_EXCLUDED_IP`]'s range) and the server's apps running: HTTP on
/// [`HTTP_PORT`], TCP echo on [`TCP_PORT`] and on two ports no service names.
fn pods_with_apps() -> Pods {
    let mut pods = Pods::new();
    let (client, server) = (pods.client.clone(), pods.server.clone());
    let excluded_range = format!("{SERVER_EXCLUDED_IP}/24");
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
            "--redirect-dns",
        ],
    );
    run(
        "ip",
        &["netns", "exec", &server, trellis(), "proxy", "init"],
    );
    let http_listen = format!("0.0.0.0:{HTTP_PORT}");
    pods.start(
        &server,
        false,
        trellis(),
        &strings(&["echo", "--listen", &http_listen, "--name", "server"]),
        &[],
        "listening on",
        "[server app] ",
    );
    let echo_task = format!("tcp-echo {TCP_PORT},{UNKNOWN_PORT},{EXCLUDED_PORT}");
    pods.start(
        &server,
        false,
        &test_binary(),
        &strings(&["helper", "--exact", "--nocapture", "--test-threads=1"]),
        &[(HELPER_ENV, &echo_task)],
        "RESULT: listening",
        "[server tcp] ",
    );
    pods
}

/// The flags every capturing proxy of these tests takes.
fn proxy_args(app: &str, source: &[&str]) -> Vec<String> {
    let labels = format!("app={app}");
    let mut args = strings(&["proxy"]);
    args.extend(strings(source));
    args.extend(strings(&[
        "--capture",
        "--name",
        app,
        "--labels",
        &labels,
        "--service-account",
        app,
        "--admin",
        "127.0.0.1:15000",
        "--stats",
        "0.0.0.0:15020",
    ]));
    args
}

const TO_SERVER: &str = "destination_service=\"server.default.svc.cluster.local\"";

/// HTTP and raw TCP from the client app to the cluster IP, through both sidecars:
/// one request and one connection on each side (a recaptured upstream connection
/// of the proxy would loop and show more, or fail).
fn assert_meshed(pods: &Pods, server_side: &[&str]) {
    let (client, server) = (&pods.client, &pods.server);
    let reply = app(client, &format!("http-get {CLUSTER_IP}:{HTTP_PORT} /hello"));
    assert!(
        reply.starts_with("200 ") && reply.contains("\"service\":\"server\""),
        "{reply}"
    );
    // Not HTTP, so the server's sidecar (which sniffs) sees TCP too.
    let reply = app(client, &format!("tcp-send {CLUSTER_IP}:{TCP_PORT}"));
    assert_eq!(reply, "echoed", "TCP through both sidecars");
    let (c, s) = (stats(client), stats(server));
    let source = ["reporter=\"source\"", TO_SERVER];
    let mut destination = vec!["reporter=\"destination\"", TO_SERVER];
    destination.extend(server_side);
    let ok = "response_code=\"200\"";
    assert_eq!(
        series(&c, "istio_requests_total", &[&source[..], &[ok]].concat()),
        1,
        "one request at the client's sidecar:\n{c}"
    );
    assert_eq!(
        series(
            &s,
            "istio_requests_total",
            &[&destination[..], &[ok]].concat()
        ),
        1,
        "one request at the server's sidecar:\n{s}"
    );
    let opened = "istio_tcp_connections_opened_total";
    assert_eq!(series(&c, opened, &source), 1, "{c}");
    assert_eq!(series(&s, opened, &destination), 1, "{s}");
    // Nothing went through the client's passthrough: its own upstream connections
    // were not captured again.
    let unknown = "destination_service=\"unknown\"";
    assert_eq!(series(&c, opened, &[unknown]), 0, "{c}");
}

#[test]
fn captured_apps_reach_services_by_cluster_ip_through_both_sidecars() {
    // Needs root: network namespaces, iptables in them, setpriv to uid 1337.
    if !is_root() {
        eprintln!("skipped: capture tests need root (network namespaces and iptables)");
        return;
    }
    let (dir, mesh) = mesh_dir(&mesh_yaml(true, ""));
    let dir_arg = dir.path().display().to_string();
    let mut pods = pods_with_apps();
    let (client, server) = (pods.client.clone(), pods.server.clone());
    let standalone = ["--standalone", dir_arg.as_str()];
    pods.start(
        &server,
        true,
        trellis(),
        &proxy_args("server", &standalone),
        &[],
        "admin:",
        "[server proxy] ",
    );
    let client_proxy = pods.start(
        &client,
        true,
        trellis(),
        &proxy_args("client", &standalone),
        &[],
        "admin:",
        "[client proxy] ",
    );

    assert_meshed(&pods, &[]);

    // IPv6: the service's IPv6 cluster IP, captured by the IPv6 rules and listener.
    let reply = app(
        &client,
        &format!("http-get [{CLUSTER_IP6}]:{HTTP_PORT} /v6"),
    );
    assert!(
        reply.starts_with("200 ") && reply.contains("\"service\":\"server\""),
        "{reply}"
    );

    // By name: the app's resolver is answered by the client's sidecar, for a
    // Service (through the search list) and a ServiceEntry host.
    let reply = app(&client, &format!("resolve-get server:{HTTP_PORT} /by-name"));
    assert!(reply.starts_with(&format!("{CLUSTER_IP} 200 ")), "{reply}");
    let reply = app(
        &client,
        &format!("resolve-get {SERVICE_ENTRY_HOST}:{HTTP_PORT} /by-name"),
    );
    assert!(
        reply.starts_with(&format!("{SERVICE_ENTRY_IP} 200 "))
            && reply.contains("\"service\":\"server\""),
        "{reply}"
    );

    // A destination the mesh does not know: passed through under ALLOW_ANY.
    let unknown = format!("tcp-send {SERVER_IP}:{UNKNOWN_PORT}");
    assert_eq!(app(&client, &unknown), "echoed");
    let opened = "istio_tcp_connections_opened_total";
    let passthrough = ["reporter=\"source\"", "destination_service=\"unknown\""];
    let c = stats(&client);
    assert_eq!(
        series(
            &c,
            opened,
            &[&passthrough[..], &["response_flags=\"-\""]].concat()
        ),
        1,
        "the passthrough is counted:\n{c}"
    );

    // REGISTRY_ONLY for the client: the same destination is refused, while an excluded
    // port and an excluded range never reach the proxy and still work.
    std::fs::write(&mesh, mesh_yaml(true, REGISTRY_ONLY)).expect("edit mesh");
    wait_for_line(&client_proxy, "reloaded");
    let refused = app(&client, &unknown);
    assert!(
        refused.starts_with("error"),
        "refused under REGISTRY_ONLY: {refused}"
    );
    let c = stats(&client);
    assert_eq!(
        series(
            &c,
            opened,
            &[&passthrough[..], &["response_flags=\"NR\""]].concat()
        ),
        1,
        "{c}"
    );
    let excluded_port = format!("tcp-send {SERVER_IP}:{EXCLUDED_PORT}");
    assert_eq!(app(&client, &excluded_port), "echoed");
    let excluded_range = format!("tcp-send {SERVER_EXCLUDED_IP}:{UNKNOWN_PORT}");
    assert_eq!(app(&client, &excluded_range), "echoed");
    let c = stats(&client);
    assert_eq!(
        series(&c, opened, &passthrough),
        2,
        "excluded traffic bypassed the proxy:\n{c}"
    );
    let reply = app(
        &client,
        &format!("http-get {CLUSTER_IP}:{HTTP_PORT} /again"),
    );
    assert!(
        reply.starts_with("200 "),
        "mesh services still work: {reply}"
    );
}

#[test]
fn captured_sidecars_following_a_control_plane_speak_mutual_tls() {
    // Needs root: network namespaces, iptables in them, setpriv to uid 1337.
    if !is_root() {
        eprintln!("skipped: capture tests need root (network namespaces and iptables)");
        return;
    }
    let (dir, _) = mesh_dir(&mesh_yaml(false, STRICT));
    let state = tempfile::tempdir().expect("state dir");
    let mut pods = pods_with_apps();
    let (client, server, infra) = (pods.client.clone(), pods.server.clone(), pods.infra.clone());
    let grpc = format!("{INFRA_IP}:15012");
    let config = dir.path().display().to_string();
    let state_dir = state.path().display().to_string();
    pods.start(
        &infra,
        false,
        trellis(),
        &strings(&[
            "control-plane",
            "--config",
            &config,
            "--grpc",
            &grpc,
            "--http",
            "127.0.0.1:0",
            "--state-dir",
            &state_dir,
        ]),
        &[],
        "ready",
        "[control plane] ",
    );
    // What a pod is given: the mesh root and a one-time token, readable by the proxy.
    let root = dir.path().join("root-cert.pem");
    std::fs::copy(state.path().join("ca/ca-cert.pem"), &root).expect("the mesh root");
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&root, readable).expect("chmod");
    let tokens =
        trellis_identity::BootstrapTokens::open(&state.path().join("tokens")).expect("tokens");
    let root_arg = root.display().to_string();
    for (ns, name, pod_ip) in [
        (&server, "server", SERVER_IP),
        (&client, "client", CLIENT_IP),
    ] {
        let who = trellis_identity::WorkloadIdentity::new("default", name).expect("identity");
        let token = tokens
            .mint(&who, Duration::from_secs(300))
            .expect("a token");
        let file = dir.path().join(format!("{name}.token"));
        std::fs::write(&file, token.secret()).expect("write token");
        std::os::unix::fs::chown(&file, Some(1337), Some(1337)).expect("chown");
        let file = file.display().to_string();
        let source = [
            "--control-plane",
            grpc.as_str(),
            "--pod-ip",
            pod_ip,
            "--ca-root",
            root_arg.as_str(),
            "--bootstrap-token-file",
            file.as_str(),
        ];
        let label = if name == "server" {
            "[server proxy] "
        } else {
            "[client proxy] "
        };
        pods.start(
            ns,
            true,
            trellis(),
            &proxy_args(name, &source),
            &[],
            "following",
            label,
        );
    }
    // The proxies start once their first configuration arrives: wait (bounded) for
    // the client's to route to the server's announced pod.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app(
            &client,
            &format!("http-get {CLUSTER_IP}:{HTTP_PORT} /warmup"),
        );
        if reply.starts_with("200 ") {
            break;
        }
        assert!(Instant::now() < deadline, "never served: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = stats(&server);
    let mtls = [
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
    ];
    assert_eq!(
        series(
            &s,
            "istio_requests_total",
            &[
                &["reporter=\"destination\"", "response_code=\"200\""][..],
                &mtls
            ]
            .concat()
        ),
        1,
        "the warm-up request came over mutual TLS:\n{s}"
    );
    // Counted afresh from here: a second run of the same checks.
    let before_c = stats(&client);
    let before_s = stats(&server);
    let reply = app(&client, &format!("tcp-send {CLUSTER_IP}:{TCP_PORT}"));
    assert_eq!(reply, "echoed", "TCP through both sidecars");
    let (c, s) = (stats(&client), stats(&server));
    let opened = "istio_tcp_connections_opened_total";
    let diff = |after: &str, before: &str, labels: &[&str]| {
        series(after, opened, labels) - series(before, opened, labels)
    };
    assert_eq!(
        diff(&c, &before_c, &["reporter=\"source\"", TO_SERVER]),
        1,
        "{c}"
    );
    assert_eq!(
        diff(
            &s,
            &before_s,
            &[&["reporter=\"destination\"", TO_SERVER][..], &mtls].concat()
        ),
        1,
        "{s}"
    );
    // STRICT holds on ports no service declares too: the client's passthrough is
    // plaintext, so the server's sidecar refuses it.
    let unknown = format!("tcp-send {SERVER_IP}:{UNKNOWN_PORT}");
    let refused = app(&client, &unknown);
    assert!(
        refused.starts_with("error"),
        "plaintext under STRICT: {refused}"
    );
}

/// The apps, run by the test in a pod's namespace: only when `HELPER_ENV` says what
/// to do (otherwise a no-op test).
#[test]
fn helper() {
    if let Ok(task) = std::env::var(HELPER_ENV) {
        apps::run(&task);
    }
}
