//! The control plane over real gRPC on loopback: what a proxy assembles from full and
//! incremental pushes is exactly what compiling from scratch gives, changes send only
//! what changed, a refused push is reported and followed by a full one, a compile that
//! panics leaves what the proxies run in place and is reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_compile::{Inbound, Mesh, ProxyIdentity};
use trellis_control::client::{Event, Handler};
use trellis_control::plane::Compiling;
use trellis_control::security::SecurityOptions;
use trellis_control::{Options, ProxySpec};
use trellis_model::{ProxyConfig, Role};

const MESH: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec: {address: 10.1.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-2, namespace: shop}
spec: {address: 10.1.0.2, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-1, namespace: shop}
spec: {address: 10.2.0.1, labels: {app: ratings, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

fn canary(v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
",
        100 - v2
    )
}

/// One change the test makes.
type Step = Box<dyn Fn() -> Result<(), String>>;

/// Records what it applied; refuses configs while `refuse` is set.
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Option<ProxyConfig>>>,
    refuse: Arc<Mutex<bool>>,
}

impl Handler for Recorder {
    fn apply(&mut self, config: ProxyConfig) -> Result<(), String> {
        if *self.refuse.lock().expect("lock") {
            return Err("refused by the test".into());
        }
        *self.applied.lock().expect("lock") = Some(config);
        Ok(())
    }
    fn event(&mut self, _: Event) {}
}

fn spec() -> ProxySpec {
    ProxySpec {
        id: "productpage-0".into(),
        role: Role::Sidecar,
        identity: ProxyIdentity {
            name: "productpage".into(),
            namespace: "shop".into(),
            labels: BTreeMap::from([("app".into(), "productpage".into())]),
            service_account: "bookinfo".into(),
            bind_ip: Some("127.0.0.1".parse().expect("ip")),
        },
        pod_ip: None,
        outbound: "127.0.0.1:15001".parse().expect("addr"),
        inbound: vec![Inbound {
            listen: "127.0.0.1:19080".parse().expect("addr"),
            app: "127.0.0.1:29080".parse().expect("addr"),
            port: 9080,
        }],
        port_map: BTreeMap::new(),
        named_ports: BTreeMap::new(),
        admin: None,
        capture: false,
        capture_ipv6: false,
    }
}

/// Listeners, route tables and clusters are looked up by name, so their order is not
/// part of a config's meaning (virtual hosts' order within a table is, and is kept).
fn normal(mut c: ProxyConfig) -> ProxyConfig {
    c.version = 0;
    c.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    c.route_tables.sort_by(|a, b| a.name.cmp(&b.name));
    c.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    c
}

/// The config compiled from scratch from what the control plane holds now.
fn from_scratch(control: &trellis_control::ControlPlane) -> ProxyConfig {
    let s = spec();
    let mesh = Mesh::new(&control.resources(), vec![]);
    let (mut config, _) = trellis_compile::sidecar(&mesh, &s.identity, s.outbound, &s.inbound, 0);
    config.node.id = s.id.clone();
    normal(config)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn load(name: &str, text: &str) -> (String, String) {
    (name.to_string(), text.to_string())
}

fn push_bytes(control: &trellis_control::ControlPlane) -> u64 {
    counter(control, "trellis_control_push_bytes_total")
}

/// A counter's value in the control plane's `/metrics` text.
fn counter(control: &trellis_control::ControlPlane, name: &str) -> u64 {
    control
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn incremental_pushes_assemble_exactly_the_config_compiled_from_scratch() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("write");
    std::fs::write(dir.path().join("canary.yaml"), canary(10)).expect("write");
    let running = trellis_control::spawn(Options {
        config_dir: Some(dir.path().to_path_buf()),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        state_file: None,
        security: SecurityOptions::new(dir.path().join("security")),
    })
    .expect("control plane");
    let control = running.control.clone();
    let grpc: SocketAddr = running.grpc;
    let security = running.security.clone();

    let recorder = Recorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = {
        let mut handler = recorder.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let address = grpc.to_string();
                let identity = security
                    .client_identity(&address, "shop", "bookinfo")
                    .expect("identity");
                let follow =
                    trellis_control::client::follow(&address, spec(), &identity, &mut handler);
                // Ends when the test is done (or after a minute at most).
                tokio::select! {
                    () = follow => {}
                    _ = stopped => {}
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            });
        })
    };
    let version = || {
        recorder
            .applied
            .lock()
            .expect("lock")
            .as_ref()
            .map_or(0, |c| c.version)
    };
    let applied = || {
        normal(
            recorder
                .applied
                .lock()
                .expect("lock")
                .clone()
                .expect("a config"),
        )
    };
    wait_for("the first push", Duration::from_secs(10), || version() > 0);
    assert_eq!(applied(), from_scratch(&control), "full push");
    let full_size = push_bytes(&control);
    assert!(full_size > 0);

    // A route change, an endpoint move, a new service, a removed DestinationRule:
    // each arrives as a small incremental push and assembles to the scratch result.
    let steps: Vec<(&str, Step)> = vec![
        ("route change", {
            let c = control.clone();
            Box::new(move || {
                c.apply(&[load("canary.yaml", &canary(50))])
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            })
        }),
        ("endpoint move", {
            let c = control.clone();
            Box::new(move || {
                c.apply(&[load(
                    "we.yaml",
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ratings-1, namespace: shop}\nspec: {address: 10.2.0.9, labels: {app: ratings, version: v1}}\n",
                )])
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
            })
        }),
        ("new service", {
            let c = control.clone();
            Box::new(move || {
                c.apply(&[load(
                    "details.yaml",
                    "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: shop}\nspec:\n  selector: {app: details}\n  ports: [{name: http, port: 9080}]\n",
                )])
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
            })
        }),
        ("removed DestinationRule", {
            let c = control.clone();
            Box::new(move || {
                c.delete(&[load(
                    "dr.yaml",
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec: {host: reviews}\n",
                )])
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
            })
        }),
    ];
    for (what, step) in steps {
        let before = version();
        let bytes_before = push_bytes(&control);
        step().expect(what);
        wait_for(what, Duration::from_secs(5), || version() > before);
        assert_eq!(applied(), from_scratch(&control), "after the {what}");
        let sent = push_bytes(&control) - bytes_before;
        assert!(
            sent < full_size / 2,
            "the {what} sent {sent} bytes; the whole config is {full_size}"
        );
    }

    // A refused push: STALE with the error; the next push is whole and applies.
    *recorder.refuse.lock().expect("lock") = true;
    let before = version();
    control
        .apply(&[load("canary.yaml", &canary(20))])
        .expect("apply");
    wait_for("the NACK to be reported", Duration::from_secs(5), || {
        control
            .status()
            .iter()
            .any(|p| p.state == "STALE" && p.nack_error.as_deref() == Some("refused by the test"))
    });
    assert_eq!(version(), before, "the refused config is not in force");
    *recorder.refuse.lock().expect("lock") = false;
    let bytes_before = push_bytes(&control);
    control
        .apply(&[load("canary.yaml", &canary(30))])
        .expect("apply");
    wait_for("the full push after a NACK", Duration::from_secs(5), || {
        version() > before
    });
    assert_eq!(applied(), from_scratch(&control), "after the NACK");
    assert!(
        push_bytes(&control) - bytes_before >= full_size / 2,
        "a full push follows a NACK"
    );
    wait_for("SYNCED", Duration::from_secs(5), || {
        control.status().iter().all(|p| p.state == "SYNCED")
    });

    let _ = stop.send(());
    let _ = client.join();
    drop(running);
}

/// Follows the control plane at `grpc` as `spec` on its own thread until `stop` fires.
fn follower(
    grpc: SocketAddr,
    security: Arc<trellis_control::security::Security>,
    spec: ProxySpec,
) -> (
    Recorder,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let recorder = Recorder::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut handler = recorder.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let address = grpc.to_string();
            let identity = security
                .client_identity(
                    &address,
                    &spec.identity.namespace,
                    &spec.identity.service_account,
                )
                .expect("identity");
            let follow = trellis_control::client::follow(&address, spec, &identity, &mut handler);
            tokio::select! {
                () = follow => {}
                _ = stopped => {}
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        });
    });
    (recorder, stop, thread)
}

/// The endpoints `recorder`'s last config has for the ratings service.
fn ratings_endpoints(recorder: &Recorder) -> Option<Vec<SocketAddr>> {
    let applied = recorder.applied.lock().expect("lock");
    let cluster = applied
        .as_ref()?
        .clusters
        .iter()
        .find(|c| c.name.contains("ratings"))?
        .clone();
    Some(cluster.endpoints.iter().filter_map(|e| e.address).collect())
}

#[test]
fn a_restarted_control_plane_serves_announced_endpoints_before_their_proxies_return() {
    // ratings has no WorkloadEntry here: its only endpoint is the pod its sidecar
    // announces in its Hello.
    let mesh = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: shop}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), mesh).expect("write");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let options = |state_file: std::path::PathBuf| Options {
        config_dir: Some(dir.path().join("mesh.yaml")),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        state_file: Some(state_file),
        security: SecurityOptions::new(state.join("security")),
    };
    let ratings_pod = "127.0.9.1:9080".parse::<SocketAddr>().expect("addr");
    let ratings = ProxySpec {
        id: "ratings-0".into(),
        identity: ProxyIdentity {
            name: "ratings".into(),
            labels: BTreeMap::from([("app".into(), "ratings".into())]),
            ..spec().identity
        },
        pod_ip: Some(ratings_pod.ip()),
        named_ports: BTreeMap::from([("http".into(), 9080)]),
        inbound: vec![],
        ..spec()
    };

    let first = trellis_control::spawn(options(state.join("applied.yaml"))).expect("control plane");
    let (_r, stop_r, ratings_thread) =
        follower(first.grpc, first.security.clone(), ratings.clone());
    let (page, stop_p, page_thread) = follower(first.grpc, first.security.clone(), spec());
    wait_for("the announced endpoint", Duration::from_secs(10), || {
        ratings_endpoints(&page) == Some(vec![ratings_pod])
    });
    // The control plane goes away while its proxies are connected (killed).
    drop(first);
    let _ = (stop_r.send(()), stop_p.send(()));
    let _ = (ratings_thread.join(), page_thread.join());

    // Restarted on the same state: the first proxy back (productpage) already gets
    // ratings' endpoint, though ratings' sidecar has not reconnected.
    let second =
        trellis_control::spawn(options(state.join("applied.yaml"))).expect("control plane");
    let (page, stop_p, page_thread) = follower(second.grpc, second.security.clone(), spec());
    wait_for("the first push", Duration::from_secs(10), || {
        ratings_endpoints(&page).is_some()
    });
    assert_eq!(ratings_endpoints(&page), Some(vec![ratings_pod]));
    // Its proxy reconnecting changes nothing.
    let (_r, stop_r, ratings_thread) = follower(second.grpc, second.security.clone(), ratings);
    wait_for("ratings to connect", Duration::from_secs(10), || {
        second.control.status().len() == 2
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ratings_endpoints(&page), Some(vec![ratings_pod]));
    let _ = (stop_r.send(()), stop_p.send(()));
    let _ = (ratings_thread.join(), page_thread.join());
    drop(second);

    // Without that state (a new state file), nothing is remembered: the same first
    // push has no endpoint for ratings.
    let fresh = trellis_control::spawn(options(state.join("other.yaml"))).expect("control plane");
    let (page, stop_p, page_thread) = follower(fresh.grpc, fresh.security.clone(), spec());
    wait_for("the first push", Duration::from_secs(10), || {
        ratings_endpoints(&page).is_some()
    });
    assert_eq!(ratings_endpoints(&page), Some(vec![]));
    let _ = stop_p.send(());
    let _ = page_thread.join();
}

#[test]
fn a_panicking_compile_keeps_what_proxies_run_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("write");
    std::fs::write(dir.path().join("canary.yaml"), canary(10)).expect("write");
    // While `fail` is set, compiling a sidecar group's outbound config panics.
    let fail = Arc::new(AtomicBool::new(false));
    let control = trellis_control::ControlPlane::with_compile_hook({
        let fail = fail.clone();
        move |step| {
            if fail.load(Ordering::Acquire) && matches!(step, Compiling::Group(_)) {
                panic!("compile broken by the test");
            }
        }
    });
    let running = trellis_control::spawn_with(
        control,
        Options {
            config_dir: Some(dir.path().to_path_buf()),
            grpc: "127.0.0.1:0".parse().expect("addr"),
            http: "127.0.0.1:0".parse().expect("addr"),
            state_file: None,
            security: SecurityOptions::new(dir.path().join("security")),
        },
    )
    .expect("control plane");
    let control = running.control.clone();
    let (recorder, stop, thread) = follower(running.grpc, running.security.clone(), spec());
    let applied = || recorder.applied.lock().expect("lock").clone();
    wait_for("SYNCED", Duration::from_secs(10), || {
        control.status().iter().any(|p| p.state == "SYNCED")
    });
    let running_config = applied().expect("a config");
    assert_eq!(normal(running_config.clone()), from_scratch(&control));
    let sent = control.status()[0].version;

    // The canary moves while compiling is broken: nothing is pushed (not a config
    // without the group's routes and clusters), and the failure is reported.
    fail.store(true, Ordering::Release);
    // (Idle now: the next recompute to finish is the one that compiles the change.)
    let recomputes = counter(&control, "trellis_control_compile_seconds_count");
    control
        .apply(&[load("canary.yaml", &canary(50))])
        .expect("apply");
    wait_for(
        "the compile failure to be reported",
        Duration::from_secs(5),
        || {
            control.status()[0].compile_error.is_some()
                && counter(&control, "trellis_control_compile_seconds_count") > recomputes
        },
    );
    let status = control.status()[0].clone();
    assert_eq!(status.state, "STALE", "{status:?}");
    let error = status.compile_error.expect("a compile error");
    assert!(
        error.contains("sidecar group shop") && error.contains("compile broken by the test"),
        "{error}"
    );
    assert_eq!(status.version, sent, "nothing was pushed");
    assert!(counter(&control, "trellis_control_compile_errors_total") >= 1);
    assert_eq!(
        applied(),
        Some(running_config),
        "the proxy runs what it ran before"
    );

    // Fixed: the next change reaches the proxy whole and correct, and it is synced.
    fail.store(false, Ordering::Release);
    control
        .apply(&[load("canary.yaml", &canary(60))])
        .expect("apply");
    wait_for("SYNCED after the fix", Duration::from_secs(5), || {
        let status = &control.status()[0];
        status.state == "SYNCED" && status.compile_error.is_none()
    });
    assert_eq!(normal(applied().expect("a config")), from_scratch(&control));

    let _ = stop.send(());
    let _ = thread.join();
}
