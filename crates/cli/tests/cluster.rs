//! Cluster mode end to end, against a real kube-apiserver, controller-manager and
//! etcd: a `trellis control-plane --kubeconfig` reads the mesh from the API server;
//! bookinfo-like Deployments become pods that the test's kubelet runs (the app and a
//! `trellis proxy` sidecar proving its identity with the pod's projected `istio-ca`
//! token); the seed's YAML applied with kubectl routes traffic through the ingress
//! gateway — the 90/10 canary, then the 95/5 step and header routing, each in force
//! within a second with no failed request — over mutual TLS between the sidecars with
//! the SPIFFE ids TokenReview gave. Two control-plane replicas share one CA through its
//! Secret; killing the one holding the Lease under traffic fails no request, the other
//! takes the Lease, every proxy reconnects to it, and kubectl changes (through its
//! webhook) still reach them.

mod common;
use common::traffic::{Load, PRODUCTPAGE_ROUTE, SEED, product, sample, seed};

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_kube::testing::{Cluster, Kubelet, PodInfo, PodRunner, isolate};

/// The workloads, as a user writes them (images are what the test's kubelet runs
/// through `command`).
const BOOKINFO: &str = "apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: istio-ingressgateway-service-account, namespace: istio-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway, app: istio-ingressgateway}}
    spec:
      serviceAccountName: istio-ingressgateway-service-account
      containers: [{name: istio-proxy, image: trellis, args: [proxy, --role, gateway]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-productpage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-details}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-reviews}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, labels: {app: productpage}}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, labels: {app: details}}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: productpage-v1}
spec:
  selector: {matchLabels: {app: productpage, version: v1}}
  template:
    metadata: {labels: {app: productpage, version: v1}}
    spec:
      serviceAccountName: bookinfo-productpage
      containers:
      - {name: productpage, image: trellis, command: [trellis, bookinfo, productpage], ports: [{containerPort: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1}
spec:
  selector: {matchLabels: {app: details, version: v1}}
  template:
    metadata: {labels: {app: details, version: v1}}
    spec:
      serviceAccountName: bookinfo-details
      containers:
      - {name: details, image: trellis, command: [trellis, bookinfo, details], ports: [{containerPort: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - {name: reviews, image: trellis, command: [trellis, bookinfo, reviews], ports: [{containerPort: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - {name: reviews, image: trellis, command: [trellis, bookinfo, reviews], ports: [{containerPort: 9080}]}
";

/// The seed's canary step 2 (95/5), written for reviews.
const REVIEWS_95_5: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 95
    - destination: {host: reviews, subset: v2}
      weight: 5
";

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
";

#[test]
fn the_seeds_canary_runs_in_a_cluster_over_mutual_tls() {
    if !isolate("the_seeds_canary_runs_in_a_cluster_over_mutual_tls") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario());
}

fn trellis() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

/// Installs the Istio CRDs the way a user's `trellis manifest generate | kubectl
/// apply` does.
fn install_crds(cluster: &Cluster) {
    let crds = Command::new(trellis())
        .args(["manifest", "generate", "--crds-only"])
        .output()
        .expect("trellis manifest generate");
    assert!(crds.status.success(), "{crds:?}");
    let text = String::from_utf8(crds.stdout).expect("utf-8");
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(&text));
    assert!(ok, "kubectl apply of the CRDs: {err}");
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd",
            "--all",
        ],
        None,
    );
    assert!(ok, "CRDs established: {err}");
}

fn apply(cluster: &Cluster, yaml: &str) {
    let (ok, out, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply: {err}\n{out}");
}

/// Where the app of a pod listens: a loopback address of its own (the pod IP is the
/// sidecar's, as in local mode: there is no capture here).
fn app_ip(pod: Ipv4Addr) -> Ipv4Addr {
    let [_, _, c, d] = pod.octets();
    Ipv4Addr::new(127, 244, c, d)
}

fn log(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let file = std::fs::File::create(dir.join(format!("{name}.log"))).expect("a log file");
    let err = file.try_clone().expect("a log file");
    (file.into(), err.into())
}

/// What the test's kubelet starts for a pod: the gateway proxy, or the app from its
/// container's command and its sidecar.
fn runner(grpc: String, root: PathBuf) -> PodRunner {
    Arc::new(move |info: PodInfo| {
        let (root, grpc) = (root.clone(), grpc.clone());
        Box::pin(async move {
            let spec = info.pod.spec.clone().unwrap_or_default();
            let labels = info.pod.metadata.labels.clone().unwrap_or_default();
            let label_arg = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let id = format!("{}.{}", info.name, info.namespace);
            let ip = info.ip.to_string();
            let common = [
                "proxy".to_string(),
                "--control-plane".into(),
                grpc,
                "--id".into(),
                id,
                "--namespace".into(),
                info.namespace.clone(),
                "--service-account".into(),
                info.service_account.clone(),
                "--labels".into(),
                label_arg,
                "--pod-ip".into(),
                ip.clone(),
                "--ca-root".into(),
                root.display().to_string(),
                "--token-file".into(),
                info.istio_token.display().to_string(),
                "--admin".into(),
                format!("{ip}:15000"),
                "--stats".into(),
                format!("{ip}:15020"),
            ];
            let mut children: Vec<Child> = Vec::new();
            let gateway = labels.get("istio").map(String::as_str) == Some("ingressgateway");
            let (out, err) = log(&info.dir, "proxy");
            let mut proxy = Command::new(trellis());
            proxy.args(&common).stdout(out).stderr(err);
            if gateway {
                proxy.args(["--role", "gateway", "--name", "istio-ingressgateway"]);
            } else {
                let app = app_ip(info.ip);
                let container = &spec.containers[0];
                let command = container.command.clone().unwrap_or_default();
                let (out, err) = log(&info.dir, "app");
                let child = Command::new(trellis())
                    .args(&command[1..])
                    .env("LISTEN", format!("{app}:9080"))
                    .env("HTTP_PROXY", format!("http://{ip}:15001"))
                    .env(
                        "SERVICE_VERSION",
                        labels.get("version").map_or("v1", String::as_str),
                    )
                    .env("POD_NAME", &info.name)
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .expect("the app starts");
                children.push(child);
                proxy.args([
                    "--role",
                    "sidecar",
                    "--name",
                    labels.get("app").map_or(info.name.as_str(), String::as_str),
                    "--listen",
                    &format!("{ip}:15001"),
                    "--inbound",
                    &format!("{ip}:9080={app}:9080"),
                ]);
            }
            children.push(proxy.spawn().expect("the proxy starts"));
            // Ready when the proxy has its config (as a readiness probe on 15021 would).
            let admin: SocketAddr = format!("{ip}:15000").parse().expect("an address");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if tokio::task::spawn_blocking(move || common::http_get(admin, "admin", "/ready"))
                    .await
                    .is_ok_and(|r| r.is_ok_and(|(status, _)| status == 200))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            children
        })
    })
}

/// Polls until `check` holds, returning how long that took after `since`.
fn until(since: Instant, limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    loop {
        if check() {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn scenario() {
    let name = "the_seeds_canary_runs_in_a_cluster_over_mutual_tls";
    let (Some(gateway_yaml), Some(canary), Some(header), Some(rule)) = (
        seed("01-gateway.yaml"),
        seed("02-virtualservice-canary.yaml"),
        seed("03-virtualservice-header.yaml"),
        seed("05-destinationrule.yaml"),
    ) else {
        eprintln!("skipped {name}: the seed's examples are not beside the checkout ({SEED})");
        return;
    };
    let Some(cluster) = Cluster::start(name).await else {
        return;
    };
    install_crds(&cluster);
    apply(
        &cluster,
        BOOKINFO
            .split("---\napiVersion: apps/v1")
            .next()
            .unwrap_or_default(),
    );

    // Two control-plane replicas reading the cluster; the second shares the first's
    // CA through its Secret. Proxies know both.
    let a = Replica::start(&cluster, "cp-a");
    let b = Replica::start(&cluster, "cp-b");
    let addresses = format!("{},{}", a.grpc, b.grpc);
    let root = cluster.dir().join("cp-a/ca/ca-cert.pem");
    assert_eq!(
        std::fs::read(&root).expect("a's root"),
        std::fs::read(cluster.dir().join("cp-b/ca/ca-cert.pem")).expect("b's root"),
        "both replicas sign with one root"
    );
    // The leader publishes the root where pods mount it, in every namespace.
    let root_pem = std::fs::read_to_string(&root).expect("the root");
    for namespace in ["default", "istio-system"] {
        until(
            Instant::now(),
            Duration::from_secs(20),
            "istio-ca-root-cert",
            || {
                let (_, out, _) = cluster.kubectl_run(
                    &[
                        "get",
                        "configmap",
                        "istio-ca-root-cert",
                        "-n",
                        namespace,
                        "-o",
                        "jsonpath={.data.root-cert\\.pem}",
                    ],
                    None,
                );
                out.trim() == root_pem.trim()
            },
        );
    }
    let kubelet = Kubelet::start(&cluster, runner(addresses, root)).await;

    // The user's YAML, applied as written.
    apply(&cluster, BOOKINFO);
    apply(&cluster, &gateway_yaml);
    apply(&cluster, PRODUCTPAGE_ROUTE);
    apply(&cluster, &rule);
    apply(&cluster, &canary);
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "wait",
            "--for=condition=Available",
            "--timeout=90s",
            "deployment",
            "--all",
            "-A",
        ],
        None,
    );
    assert!(ok, "deployments available: {err}");
    let client = cluster.client().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
    let list = pods
        .list(&kube::api::ListParams::default().labels("istio=ingressgateway"))
        .await
        .expect("pods");
    let gateway_pod = list.items.first().expect("the gateway's pod");
    let gateway_ip: Ipv4Addr = kubelet
        .ip_of(
            "istio-system",
            gateway_pod.metadata.name.as_deref().unwrap_or_default(),
        )
        .expect("the gateway's IP");
    let gateway = SocketAddr::from((gateway_ip, 80));

    tokio::task::spawn_blocking(move || {
        // The first answer through the whole path.
        until(Instant::now(), Duration::from_secs(60), "bookinfo through the gateway", || {
            product(gateway, &[]).is_ok()
        });

        // 90/10: 400 requests, v2's share within four binomial deviations of 10 %
        // (36 ± 4·6 of 400).
        let (v1, v2) = sample(gateway, 400, &[]);
        println!("90/10 canary: v1 {v1}, v2 {v2} of 400");
        assert!((16..=64).contains(&v2), "v2 got {v2} of 400 under 90/10");
        assert!(v1 > 300, "v1 got {v1} of 400 under 90/10");

        // The 95/5 step and header routing, applied with kubectl under traffic.
        let load = Load::start(gateway);
        std::thread::sleep(Duration::from_millis(500));
        apply_blocking(&cluster, REVIEWS_95_5);
        let (v1, v2) = sample(gateway, 400, &[]);
        println!("95/5 step: v1 {v1}, v2 {v2} of 400");
        assert!(v2 <= 40, "v2 got {v2} of 400 under 95/5");
        // In force at productpage's sidecar (its config dump has the new match)
        // within a second of kubectl returning; then seen by requests.
        let productpage = kubelet_ips(&kubelet_pods(&cluster, "app=productpage"), &kubelet)[0];
        let dump = SocketAddr::from((productpage, 15000));
        apply_blocking(&cluster, &header);
        let applied = Instant::now();
        let took = until(applied, Duration::from_secs(5), "header routing at productpage's sidecar", || {
            common::http_get(dump, "admin", "/config_dump").is_ok_and(|(_, body)| body.contains("x-user-type"))
        });
        println!("header routing in force at the sidecar {took:?} after kubectl apply returned");
        assert!(took < Duration::from_secs(1), "header routing took {took:?}");
        until(applied, Duration::from_secs(5), "beta users on v2", || {
            product(gateway, &[("x-user-type", "beta")]).as_deref() == Ok("v2")
        });
        let (v1, v2) = sample(gateway, 50, &[("x-user-type", "beta")]);
        assert_eq!((v1, v2), (0, 50), "beta users all on v2");
        let (v1, v2) = sample(gateway, 50, &[]);
        assert_eq!((v1, v2), (50, 0), "everyone else on v1");

        // STRICT mutual TLS in the namespace: still served (every hop is mTLS).
        apply_blocking(&cluster, STRICT);
        std::thread::sleep(Duration::from_secs(1));

        // Kill the leading replica under traffic: the other takes the Lease, the
        // proxies that followed the dead one reconnect to it, and a change applied
        // with kubectl afterwards (through the new leader's webhook) reaches them.
        let leader = lease_holder(&cluster);
        let (mut dead, survivor) = match leader.as_str() {
            "cp-a" => (a, b),
            "cp-b" => (b, a),
            other => panic!("the Lease is held by {other:?}"),
        };
        let killed = Instant::now();
        dead.stop();
        let took = until(killed, Duration::from_secs(30), "the Lease taken over", || {
            lease_holder(&cluster) == survivor.name
        });
        println!("{} took the Lease {took:?} after {} was killed", survivor.name, dead.name);
        until(killed, Duration::from_secs(30), "every proxy on the survivor", || {
            survivor.connected() == 5
        });
        apply_blocking(&cluster, &canary);
        let applied = Instant::now();
        until(applied, Duration::from_secs(5), "the canary back at productpage's sidecar", || {
            common::http_get(dump, "admin", "/config_dump")
                .is_ok_and(|(_, body)| !body.contains("x-user-type"))
        });
        std::thread::sleep(Duration::from_millis(500));
        let (sent, failures) = load.finish();
        println!("background load: {sent} requests, {} failed", failures.len());
        assert!(sent > 50, "the load ran ({sent} requests)");
        assert!(failures.is_empty(), "failed requests: {failures:?}");

        // Every hop into reviews was mutual TLS from productpage's identity, which
        // came from its pod's token through TokenReview.
        let reviews_pod = kubelet_ips(&kubelet_pods(&cluster, "app=reviews"), &kubelet);
        for ip in reviews_pod {
            let stats = common::http_get(SocketAddr::from((ip, 15020)), "stats", "/stats/prometheus")
                .expect("the sidecar's metrics")
                .1;
            let inbound: Vec<&str> = stats
                .lines()
                .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
                .collect();
            assert!(!inbound.is_empty(), "reviews at {ip} served requests:\n{stats}");
            for line in inbound {
                assert!(line.contains("connection_security_policy=\"mutual_tls\""), "{line}");
                assert!(
                    line.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\""),
                    "{line}"
                );
            }
            let certs = common::http_get(SocketAddr::from((ip, 15000)), "admin", "/certs")
                .expect("the sidecar's certificate")
                .1;
            assert!(
                certs.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
                "{certs}"
            );
        }
        // Shown when the test fails.
        for replica in [&dead, &survivor] {
            for line in replica.log.try_iter() {
                println!("{}: {line}", replica.name);
            }
        }
    })
    .await
    .expect("the scenario");
}

/// One control-plane replica, run as a process against the cluster.
struct Replica {
    name: &'static str,
    grpc: SocketAddr,
    http: SocketAddr,
    process: Option<common::Running>,
    log: std::sync::mpsc::Receiver<String>,
}

impl Replica {
    fn start(cluster: &Cluster, name: &'static str) -> Replica {
        let state = cluster.dir().join(name);
        let addresses = cluster.dir().join(format!("{name}.addresses"));
        let (process, _ready, log) = common::spawn(
            &[
                "control-plane",
                "--kubeconfig",
                &cluster.kubeconfig.display().to_string(),
                "--grpc",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--state-dir",
                &state.display().to_string(),
                "--addresses-file",
                &addresses.display().to_string(),
                "--webhook",
                "127.0.0.1:0",
                "--replica",
                name,
                "--lease-duration",
                "3s",
            ],
            "ready",
        );
        let text = std::fs::read_to_string(&addresses).expect("the control plane's addresses");
        let address = |prefix: &str| -> SocketAddr {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|a| a.parse().ok())
                .expect("an address")
        };
        Replica {
            name,
            grpc: address("grpc "),
            http: address("http "),
            process: Some(process),
            log,
        }
    }

    fn stop(&mut self) {
        drop(self.process.take());
    }

    /// Proxies connected to it now (its metrics).
    fn connected(&self) -> u64 {
        common::http_get(self.http, "metrics", "/metrics")
            .ok()
            .and_then(|(_, text)| {
                text.lines()
                    .find_map(|l| l.strip_prefix("trellis_control_connected_proxies "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

fn lease_holder(cluster: &Cluster) -> String {
    let (_, out, _) = cluster.kubectl_run(
        &[
            "get",
            "lease",
            "-n",
            "istio-system",
            "trellis-control-plane",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    out.trim().to_string()
}

fn apply_blocking(cluster: &Cluster, yaml: &str) {
    apply(cluster, yaml);
}

/// Names of the pods with `selector`, from kubectl.
fn kubelet_pods(cluster: &Cluster, selector: &str) -> Vec<(String, String)> {
    let (ok, out, err) = cluster.kubectl_run(
        &[
            "get",
            "pods",
            "-A",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
        ],
        None,
    );
    assert!(ok, "{err}");
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(ns, n)| (ns.to_string(), n.to_string()))
        .collect()
}

fn kubelet_ips(pods: &[(String, String)], kubelet: &Kubelet) -> Vec<Ipv4Addr> {
    pods.iter()
        .filter_map(|(ns, n)| kubelet.ip_of(ns, n))
        .collect()
}
