//! The cluster's objects, created through the API server as a user and kubelet would
//! make them: Namespaces, a ServiceAccount and a Service per service, Pods (labels
//! matching their Service, bound to a node, then their status patched Running and
//! Ready with a pod IP, as the kubelet reports it) and a VirtualService for some
//! services. Requests run concurrently, at most `concurrency` at a time.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

/// How big a cluster to make.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub services: usize,
    pub pods: usize,
    pub namespaces: usize,
    /// A VirtualService for every this many services (0: none).
    pub virtual_service_every: usize,
    pub concurrency: usize,
}

/// A Pod as created (with its uid, for bound tokens) and the address it was given.
#[derive(Clone)]
pub struct LoadedPod {
    pub pod: Pod,
    pub ip: Ipv4Addr,
    pub service: usize,
}

/// What loading made and how long each step took.
pub struct Loaded {
    pub pods: Vec<LoadedPod>,
    pub steps: Vec<(String, Duration)>,
    pub virtual_services: usize,
}

/// The node the Pods are bound to (no kubelet runs; none is needed: the API server
/// does not check that the node exists).
pub const NODE: &str = "bench-node";

pub fn namespace_of(service: usize, sizes: &Sizes) -> String {
    format!("ns{}", service % sizes.namespaces)
}

/// Pod `p`'s address: 10.244.0.0/16 as the harness's kubelet hands them out. Not
/// loopback (the API server refuses those in EndpointSlices) and never connected to.
pub fn pod_ip(p: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, (1 + p / 250) as u8, (p % 250 + 1) as u8)
}

/// The VirtualService of `service`, its route timeout `timeout_s` seconds.
pub fn virtual_service(service: usize, sizes: &Sizes, timeout_s: usize) -> DynamicObject {
    let value = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": format!("svc{service}"), "namespace": namespace_of(service, sizes)},
        "spec": {
            "hosts": [format!("svc{service}")],
            "http": [{
                "timeout": format!("{timeout_s}s"),
                "retries": {"attempts": 2, "perTryTimeout": "1s"},
                "route": [{"destination": {"host": format!("svc{service}"), "port": {"number": 80}}}],
            }],
        },
    });
    serde_json::from_value(value).expect("a VirtualService")
}

pub fn virtual_services_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a well-formed object")
}

/// Runs `each` over `items`, at most `concurrency` at a time, results in order; each
/// is tried up to three times (the API server is busy while loading). Any failure
/// fails the whole.
async fn bounded<T, O, F, Fut>(items: Vec<T>, concurrency: usize, each: F) -> Result<Vec<O>, String>
where
    T: Clone,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<O, kube::Error>>,
{
    let each = &each;
    let results: Vec<Result<O, String>> = futures_util::stream::iter(items)
        .map(|item| async move {
            let mut last = String::new();
            for attempt in 0..3 {
                match each(item.clone()).await {
                    Ok(o) => return Ok(o),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            Err(last)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Creates `object`, or takes the one a retried attempt already made.
async fn create<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.get(object.meta().name.as_deref().unwrap_or_default())
                .await
        }
        other => other,
    }
}

/// Creates everything; the Pods come back in the order of their index.
pub async fn load(client: &kube::Client, sizes: &Sizes) -> Result<Loaded, String> {
    let mut steps = Vec::new();
    let c = sizes.concurrency;

    let started = Instant::now();
    let namespaces: Vec<String> = std::iter::once("istio-system".to_string())
        .chain((0..sizes.namespaces).map(|n| format!("ns{n}")))
        .collect();
    let all: Api<Namespace> = Api::all(client.clone());
    bounded(namespaces.clone(), c, |name| {
        let all = all.clone();
        async move {
            create(
                &all,
                &object(serde_json::json!({"metadata": {"name": name}})),
            )
            .await
        }
    })
    .await?;
    bounded((0..sizes.services).collect(), c, |s| {
        let ns = namespace_of(s, sizes);
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        async move {
            create(
                &api,
                &object(
                    serde_json::json!({"metadata": {"name": format!("svc{s}"), "namespace": ns}}),
                ),
            )
            .await
        }
    })
    .await?;
    steps.push((
        format!(
            "{} Namespaces, {} ServiceAccounts",
            namespaces.len(),
            sizes.services
        ),
        started.elapsed(),
    ));

    let started = Instant::now();
    bounded((0..sizes.services).collect(), c, |s| {
        let ns = namespace_of(s, sizes);
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        async move {
            create(
                &api,
                &object(serde_json::json!({
                    "metadata": {"name": format!("svc{s}"), "namespace": ns,
                        "labels": {"app": format!("svc{s}")}},
                    "spec": {"selector": {"app": format!("svc{s}")},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                })),
            )
            .await
        }
    })
    .await?;
    steps.push((format!("{} Services", sizes.services), started.elapsed()));

    let started = Instant::now();
    let pods = bounded((0..sizes.pods).collect(), c, |p| {
        let s = p % sizes.services;
        let ns = namespace_of(s, sizes);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let version = if (p / sizes.services).is_multiple_of(2) {
            "v1"
        } else {
            "v2"
        };
        async move {
            let pod = create(
                &api,
                &object(serde_json::json!({
                    "metadata": {"name": format!("svc{s}-{p}"), "namespace": ns,
                        "labels": {"app": format!("svc{s}"), "version": version},
                        "annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"}},
                    "spec": {
                        "nodeName": NODE,
                        "serviceAccountName": format!("svc{s}"),
                        "containers": [
                            {"name": "app", "image": format!("example/svc{s}:1.0"),
                             "ports": [{"name": "http", "containerPort": 8080}],
                             "env": [{"name": "SERVICE_VERSION", "value": version}],
                             "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
                            {"name": "istio-proxy", "image": "example/trellis:1.0",
                             "args": ["proxy", "sidecar"],
                             "ports": [{"name": "http-envoy-prom", "containerPort": 15090}],
                             "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}}},
                        ],
                    },
                })),
            )
            .await?;
            Ok(LoadedPod {
                pod,
                ip: pod_ip(p),
                service: s,
            })
        }
    })
    .await?;
    steps.push((format!("{} Pods created", sizes.pods), started.elapsed()));

    // What the kubelet reports once the containers run and pass readiness.
    let started = Instant::now();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    bounded(pods.clone(), c, |loaded| {
        let ns = loaded.pod.metadata.namespace.clone().unwrap_or_default();
        let name = loaded.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let ip = loaded.ip.to_string();
        let conditions: Vec<serde_json::Value> =
            ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                .iter()
                .map(
                    |t| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now}),
                )
                .collect();
        let containers: Vec<serde_json::Value> = ["app", "istio-proxy"]
            .iter()
            .map(|c| {
                serde_json::json!({"name": c, "image": "example", "imageID": "", "ready": true,
                    "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let status = serde_json::json!({"status": {
            "phase": "Running", "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": conditions, "containerStatuses": containers,
        }});
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
        }
    })
    .await?;
    steps.push((
        format!("{} Pod statuses (Running, Ready, pod IP)", sizes.pods),
        started.elapsed(),
    ));

    let started = Instant::now();
    let with_route: Vec<usize> = if sizes.virtual_service_every == 0 {
        Vec::new()
    } else {
        (0..sizes.services)
            .step_by(sizes.virtual_service_every)
            .collect()
    };
    let resource = virtual_services_resource();
    bounded(with_route.clone(), c, |s| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace_of(s, sizes), &resource);
        let vs = virtual_service(s, sizes, 1);
        async move { create(&api, &vs).await }
    })
    .await?;
    steps.push((
        format!("{} VirtualServices", with_route.len()),
        started.elapsed(),
    ));
    Ok(Loaded {
        pods,
        steps,
        virtual_services: with_route.len(),
    })
}
