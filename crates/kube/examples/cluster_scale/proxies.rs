//! The simulated sidecars, one per chosen Pod, each proving its identity as a real
//! one does in cluster mode: the Pod's bound service-account token (audience
//! `istio-ca`, from the TokenRequest API as the kubelet projects it) sent with its
//! first CSR, which the control plane checks by TokenReview; the certificate it gets
//! opens the config stream (`trellis_control::simulated`), where it says Hello as that
//! Pod (its IP, labels, service account, an inbound port) and ACKs every push.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use trellis_control::proto;
use trellis_control::security::client::ClientIdentity;
use trellis_control::simulated::Fleet;
use trellis_identity::{RenewalPolicy, SpiffeId, Trust};

use crate::load::{LoadedPod, Sizes};

/// Gets every proxy a certificate (at most `concurrency` at a time) and opens its
/// stream. The identities renew in the background; keep them while the proxies run.
pub async fn connect(
    client: &kube::Client,
    fleet: &Arc<Fleet>,
    pods: &[LoadedPod],
    grpc: &str,
    root_pem: &str,
    dir: &Path,
    concurrency: usize,
) -> Result<Vec<ClientIdentity>, String> {
    let trust = Trust::from_pem("cluster.local", root_pem).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let results: Vec<Result<ClientIdentity, String>> =
        futures_util::stream::iter(pods.iter().enumerate())
            .map(|(i, loaded)| {
                let trust = trust.clone();
                async move {
                    let pod = &loaded.pod;
                    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let account = format!("svc{}", loaded.service);
                    let token = trellis_kube::testing::pod_token(client, pod, &account, "istio-ca")
                        .await
                        .ok_or_else(|| format!("no token for {namespace}/{name}"))?;
                    let token_file = dir.join(format!("{namespace}.{name}.token"));
                    std::fs::write(&token_file, token).map_err(|e| e.to_string())?;
                    let id = SpiffeId::new(&namespace, &account).map_err(|e| e.to_string())?;
                    let identity = ClientIdentity::with_token_file(
                        grpc,
                        trust,
                        id,
                        token_file,
                        RenewalPolicy::default(),
                    );
                    tokio::time::timeout(Duration::from_secs(120), identity.manager.ready())
                        .await
                        .map_err(|_| format!("{namespace}/{name}: no certificate in 120 s"))?;
                    let config = identity.stream_config()?;
                    let ip = loaded.ip;
                    let [_, _, c, d] = ip.octets();
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    let hello = proto::Hello {
                        id: format!("{name}.{namespace}"),
                        role: proto::Role::Sidecar as i32,
                        workload: format!("svc{}", loaded.service),
                        namespace,
                        labels: labels.into_iter().collect(),
                        service_account: account,
                        pod_ip: ip.to_string(),
                        bind_ip: String::new(),
                        outbound: format!("{ip}:15001"),
                        inbound: vec![proto::InboundPort {
                            listen: format!("{ip}:8080"),
                            app: format!("127.244.{c}.{d}:8080"),
                            port: 8080,
                        }],
                        port_map: Default::default(),
                        version: 0,
                        ports: [("http".to_string(), 8080)].into(),
                        admin: String::new(),
                        capture: false,
                        capture_ipv6: false,
                    };
                    fleet.connect(i, grpc.to_string(), config, hello);
                    Ok(identity)
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}

/// Which Pods the `proxies` sidecars are: round robin over the namespaces, spread
/// over each namespace's services, and over each service's Pods (so both versions).
/// Needs as many services as proxies at most, and `services` a multiple of
/// `namespaces` (service `s` is in namespace `s % namespaces`, Pod `p` of service
/// `p % services`).
pub fn choose(pods: &[LoadedPod], sizes: &Sizes, proxies: usize) -> Vec<LoadedPod> {
    let per_namespace = sizes.services / sizes.namespaces;
    let stride = (sizes.services / proxies.max(1)).max(1);
    let pods_per_service = (sizes.pods / sizes.services).max(1);
    (0..proxies)
        .map(|i| {
            let (n, j) = (i % sizes.namespaces, i / sizes.namespaces);
            let s = n + sizes.namespaces * ((j * stride) % per_namespace);
            let p = s + sizes.services * (j % pods_per_service);
            pods[p].clone()
        })
        .collect()
}
