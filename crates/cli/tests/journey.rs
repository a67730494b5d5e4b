//! The seed's journey end to end in a cluster (real kube-apiserver, controller-manager
//! and etcd; the test plays the kubelet, running each Pod spec as written in a network
//! namespace of its own): `trellis install --set profile=demo -y`, `kubectl label
//! namespace default istio-injection=enabled`, the bookstore's Deployments applied as a
//! user writes them (the API server calls the injector; pods come up 2/2 with a native
//! sidecar whose init container programmed capture), then the seed's Gateway,
//! DestinationRule and canary. The apps know nothing of the mesh: productpage calls
//! `http://reviews:9080` by name, captured by its sidecar. Then the 90/10 split, header
//! routing, the 95/5 → 50/50 → 100 steps under load with no failed request, STRICT
//! mutual TLS refusing a pod without a sidecar (the seed's "503 after enabling mTLS")
//! and PERMISSIVE serving it, a rolling restart under load, and a Job with a sidecar
//! that completes.

mod common;
use common::install_pods::diagnose;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::traffic::{Load, PRODUCTPAGE_ROUTE, SEED, product, sample, seed};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use trellis_kube::testing::runtime::ContainerRuntime;
use trellis_kube::testing::{Cluster, Kubelet, Runner, isolate};

fn trellis() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

/// The bookstore as a user writes it (the test's kubelet runs `command`, not images),
/// listening on the container port, calling the others by their Service names.
fn workloads() -> String {
    let mut out = String::new();
    for (service, account) in [
        ("productpage", "bookinfo-productpage"),
        ("details", "bookinfo-details"),
        ("reviews", "bookinfo-reviews"),
    ] {
        out.push_str(&format!(
            "apiVersion: v1
kind: ServiceAccount
metadata: {{name: {account}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, labels: {{app: {service}}}}}
spec:
  selector: {{app: {service}}}
  ports: [{{name: http, port: 9080}}]
---
"
        ));
    }
    for (service, version, account) in [
        ("productpage", "v1", "bookinfo-productpage"),
        ("details", "v1", "bookinfo-details"),
        ("reviews", "v1", "bookinfo-reviews"),
        ("reviews", "v2", "bookinfo-reviews"),
    ] {
        out.push_str(&format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {service}-{version}}}
spec:
  selector: {{matchLabels: {{app: {service}, version: {version}}}}}
  template:
    metadata: {{labels: {{app: {service}, version: {version}}}}}
    spec:
      serviceAccountName: {account}
      terminationGracePeriodSeconds: 10
      containers:
      - name: {service}
        image: docker.io/istio/examples-bookinfo-{service}-{version}:1.20.3
        command: [trellis, bookinfo, {service}]
        env:
        - {{name: PORT, value: '9080'}}
        - {{name: SERVICE_VERSION, value: {version}}}
        ports: [{{containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /health, port: 9080}}, periodSeconds: 1}}
        # The app stops serving at SIGTERM; the sleep lets its endpoint leave every
        # sidecar first, as any Kubernetes rollout of such an app needs.
        lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}}}
---
"
        ));
    }
    // A client the user left out of the mesh (the seed's "503 after enabling mTLS").
    out.push_str(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy}
spec:
  selector: {matchLabels: {app: legacy}}
  template:
    metadata:
      labels: {app: legacy}
      annotations: {sidecar.istio.io/inject: 'false'}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: legacy, image: curlimages/curl, command: [sleep, infinity]}
",
    );
    out
}

fn reviews_split(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2}
"
    )
}

fn mtls(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"
    )
}

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: bookinfo-productpage
      containers:
      - name: report
        image: curlimages/curl
        command: [sh, -c, 'curl -sf -m 5 http://details:9080/details/0']
";

#[test]
fn the_seeds_journey_runs_in_a_cluster_with_injection_and_capture() {
    let name = "the_seeds_journey_runs_in_a_cluster_with_injection_and_capture";
    if !isolate(name) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario(name));
}

fn apply(cluster: &Cluster, yaml: &str) {
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply: {err}\n{yaml}");
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.kubectl_run(args, None);
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

fn until(cluster: &Cluster, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            diagnose(cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `curl` from inside a pod's network namespace (its /etc/hosts, its routes): the
/// status code, or 0 when the connection failed.
fn curl_in(netns: &str, url: &str) -> u16 {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-s", "-o", "/dev/null"])
        .args(["-m", "5", "-w", "%{http_code}", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn scenario(name: &str) {
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
    let client = cluster.client().await;
    let kubelet = Arc::new(
        Kubelet::start(
            &cluster,
            Runner::Both {
                runtime: ContainerRuntime {
                    trellis: trellis().into(),
                },
                processes: common::install_pods::runner(
                    client.clone(),
                    cluster.url.clone(),
                    cluster.ca_file.clone(),
                ),
                in_node: Arc::new(|pod: &Pod| {
                    pod.metadata.namespace.as_deref() == Some("istio-system")
                }),
            },
        )
        .await,
    );
    let pods: Api<Pod> = Api::all(client.clone());
    let kubeconfig = cluster.kubeconfig.clone();
    let installed = tokio::task::spawn_blocking(move || {
        Command::new(trellis())
            .args([
                "install",
                "--set",
                "profile=demo",
                "-y",
                "--readiness-timeout",
                "120s",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("trellis install")
    })
    .await
    .expect("install ran");
    assert_eq!(
        installed.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let gateway_pod = pods
        .list(&ListParams::default().labels("istio=ingressgateway"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("the ingress gateway's pod");
    let gateway_ip: Ipv4Addr = gateway_pod
        .status
        .and_then(|s| s.pod_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("the gateway's IP");
    let gateway = SocketAddr::from((gateway_ip, 8080));
    let legacy_netns = {
        let kubelet = kubelet.clone();
        move |cluster: &Cluster| -> String {
            let name = kubectl(
                cluster,
                &[
                    "get",
                    "pods",
                    "-l",
                    "app=legacy",
                    "-o",
                    "jsonpath={.items[0].metadata.name}",
                ],
            );
            kubelet
                .netns_of("default", name.trim())
                .expect("legacy's network namespace")
        }
    };

    tokio::task::spawn_blocking(move || {
        kubectl(
            &cluster,
            &["label", "namespace", "default", "istio-injection=enabled"],
        );
        apply(&cluster, &workloads());
        until(
            &cluster,
            "the bookstore available",
            Duration::from_secs(120),
            || {
                cluster
                    .kubectl_run(
                        &[
                            "wait",
                            "--for=condition=Available",
                            "--timeout=2s",
                            "deployment",
                            "--all",
                            "-n",
                            "default",
                        ],
                        None,
                    )
                    .0
            },
        );
        // As `kubectl get pods` shows them: the sidecar counts as a container.
        let table = kubectl(&cluster, &["get", "pods", "-n", "default", "--no-headers"]);
        for line in table.lines() {
            let ready = line.split_whitespace().nth(1).unwrap_or_default();
            let expected = if line.starts_with("legacy-") {
                "1/1"
            } else {
                "2/2"
            };
            assert_eq!(ready, expected, "{line}\n{table}");
        }

        apply(&cluster, &gateway_yaml);
        apply(&cluster, PRODUCTPAGE_ROUTE);
        apply(&cluster, &rule);
        apply(&cluster, &canary);
        until(
            &cluster,
            "bookinfo through the gateway",
            Duration::from_secs(60),
            || product(gateway, &[]).is_ok(),
        );

        // 90/10: v2's share within four binomial deviations of 10 % (40 ± 24 of 400).
        let (v1, v2) = sample(gateway, 400, &[]);
        println!("90/10 canary: v1 {v1}, v2 {v2} of 400");
        assert!((16..=64).contains(&v2), "v2 got {v2} of 400 under 90/10");

        // Header routing.
        apply(&cluster, &header);
        // In force once ten beta requests in a row land on v2 (one could by the 10 %).
        until(
            &cluster,
            "beta users on v2",
            Duration::from_secs(10),
            || (0..10).all(|_| product(gateway, &[("x-user-type", "beta")]).as_deref() == Ok("v2")),
        );
        assert_eq!(sample(gateway, 50, &[("x-user-type", "beta")]), (0, 50));

        // The canary's steps under load: 95/5 → 50/50 → 100, no request failing.
        let load = Load::start(gateway);
        for (v1, v2) in [(95, 5), (50, 50), (0, 100)] {
            apply(&cluster, &reviews_split(v1, v2));
            std::thread::sleep(Duration::from_secs(2));
        }
        until(&cluster, "everyone on v2", Duration::from_secs(10), || {
            sample(gateway, 20, &[]) == (0, 20)
        });
        let (sent, failures) = load.finish();
        println!(
            "canary steps under load: {sent} requests, {} failed",
            failures.len()
        );
        assert!(sent > 50, "the load ran ({sent} requests)");
        assert!(failures.is_empty(), "failed requests: {failures:?}");

        // STRICT: the pod without a sidecar is refused; PERMISSIVE: served.
        let legacy = legacy_netns(&cluster);
        let url = "http://productpage:9080/health";
        assert_eq!(curl_in(&legacy, url), 200, "plaintext served before STRICT");
        apply(&cluster, &mtls("STRICT"));
        until(
            &cluster,
            "plaintext refused under STRICT",
            Duration::from_secs(10),
            || curl_in(&legacy, url) != 200,
        );
        assert!(
            product(gateway, &[]).is_ok(),
            "the mesh still serves under STRICT"
        );
        apply(&cluster, &mtls("PERMISSIVE"));
        until(
            &cluster,
            "plaintext served under PERMISSIVE",
            Duration::from_secs(10),
            || curl_in(&legacy, url) == 200,
        );
        apply(&cluster, &mtls("STRICT"));

        // A rolling restart of reviews-v2 under load: no request fails.
        let load = Load::start(gateway);
        std::thread::sleep(Duration::from_millis(500));
        kubectl(&cluster, &["rollout", "restart", "deployment/reviews-v2"]);
        until(
            &cluster,
            "the rollout done",
            Duration::from_secs(90),
            || {
                cluster
                    .kubectl_run(
                        &["rollout", "status", "deployment/reviews-v2", "--timeout=2s"],
                        None,
                    )
                    .0
            },
        );
        std::thread::sleep(Duration::from_secs(1));
        let (sent, failures) = load.finish();
        println!(
            "rolling restart under load: {sent} requests, {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "failed requests during the restart: {failures:?}"
        );

        // A Job with an injected sidecar completes.
        apply(&cluster, JOB);
        until(
            &cluster,
            "the Job complete",
            Duration::from_secs(60),
            || {
                kubectl(
                    &cluster,
                    &[
                        "get",
                        "job",
                        "report",
                        "-o",
                        "jsonpath={.status.conditions[?(@.type=='Complete')].status}",
                    ],
                )
                .trim()
                    == "True"
            },
        );
    })
    .await
    .expect("the scenario");
    drop(kubelet);
}
