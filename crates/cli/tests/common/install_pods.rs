//! The istio-system Pods of `trellis install`, run by the test's kubelet as the
//! test's own processes in the node's network namespace: the control plane reaches
//! the API server on the node's loopback with its pod's service-account token. And
//! what every Pod says and logged, for a cluster test's failure message.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use trellis_kube::testing::{PodInfo, PodRunner, pod_token, write_kubeconfig};

fn trellis() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

pub fn log(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let file = std::fs::File::create(dir.join(format!("{name}.log"))).expect("a log file");
    let err = file.try_clone().expect("a log file");
    (file.into(), err.into())
}

pub async fn wait_http(address: SocketAddr, path: &'static str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ok = tokio::task::spawn_blocking(move || super::http_get(address, "probe", path))
            .await
            .is_ok_and(|r| r.is_ok_and(|(status, _)| status == 200));
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Runs a pod's container as a kubelet would: the image is `trellis`, its arguments
/// the manifest's, with the downward API's variables filled in, 0.0.0.0 bound as the
/// pod IP (pods share this test's network namespace), the API server reached with the
/// pod's service-account token, Services named by their pods' addresses (no cluster
/// DNS here), and the projected istio-ca token and root ConfigMap as files.
pub fn runner(client: kube::Client, url: String, ca: std::path::PathBuf) -> PodRunner {
    Arc::new(move |info: PodInfo| {
        let (client, url, ca) = (client.clone(), url.clone(), ca.clone());
        Box::pin(async move {
            let spec = info.pod.spec.clone().unwrap_or_default();
            let container = &spec.containers[0];
            let ip = info.ip.to_string();
            let mut args: Vec<String> = container
                .args
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|a| {
                    a.replace("$(POD_NAME)", &info.name)
                        .replace("$(POD_NAMESPACE)", &info.namespace)
                        .replace("$(POD_IP)", &ip)
                        .replace("0.0.0.0", &ip)
                        .replace(
                            "/var/lib/trellis",
                            &info.dir.join("state").display().to_string(),
                        )
                })
                .collect();
            let mut children: Vec<Child> = Vec::new();
            let (out, err) = log(&info.dir, &container.name);
            let mut command = Command::new(trellis());
            command
                .env("POD_NAME", &info.name)
                .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
                .env("KUBERNETES_SERVICE_PORT", "443")
                .stdout(out)
                .stderr(err);
            let probe = if args.first().map(String::as_str) == Some("control-plane") {
                let token = pod_token(
                    &client,
                    &info.pod,
                    &info.service_account,
                    "https://kubernetes.default.svc.cluster.local",
                )
                .await
                .expect("the pod's service-account token");
                let kubeconfig = info.dir.join("kubeconfig");
                write_kubeconfig(&url, &ca, &token, &kubeconfig).expect("the pod's kubeconfig");
                args.push("--kubeconfig".into());
                args.push(kubeconfig.display().to_string());
                (SocketAddr::new(info.ip.into(), 15014), "/ready")
            } else {
                // The control plane's Service, by its pods' addresses.
                let pods: Api<Pod> = Api::namespaced(client.clone(), &info.namespace);
                let mut addresses = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while addresses.is_empty() && Instant::now() < deadline {
                    addresses = pods
                        .list(&ListParams::default().labels("app=istiod"))
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| p.status?.pod_ip)
                        .map(|ip| format!("{ip}:15012"))
                        .collect();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for a in &mut args {
                    if a.starts_with("istiod.") {
                        *a = addresses.join(",");
                    }
                }
                // The root, as the projected ConfigMap would hold it.
                let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &info.namespace);
                let root = info.dir.join("root-cert.pem");
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Ok(Some(map)) = maps.get_opt("istio-ca-root-cert").await
                        && let Some(pem) = map.data.and_then(|d| d.get("root-cert.pem").cloned())
                    {
                        std::fs::write(&root, pem).expect("write the root");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                args.extend([
                    "--token-file".to_string(),
                    info.istio_token.display().to_string(),
                    "--ca-root".into(),
                    root.display().to_string(),
                    "--admin".into(),
                    format!("{ip}:15000"),
                ]);
                (SocketAddr::new(info.ip.into(), 15020), "/healthz/ready")
            };
            children.push(command.args(&args).spawn().expect("trellis starts"));
            assert!(
                wait_http(probe.0, probe.1).await,
                "pod {} never became ready ({:?}); its log is in {}",
                info.name,
                args,
                info.dir.display()
            );
            children
        })
    })
}

/// The pods as `kubectl get pods -A -o wide` shows them and the last lines of every
/// container's log, for a failure's message.
pub fn diagnose(cluster: &trellis_kube::testing::Cluster) -> String {
    let (_, pods, _) = cluster.kubectl_run(&["get", "pods", "-A", "-o", "wide"], None);
    let logs = Command::new("sh")
        .arg("-c")
        .arg("for f in $(find \"$1\" -name '*.log'); do echo \"== $f\"; tail -n 15 \"$f\"; done")
        .arg("sh")
        .arg(cluster.dir().join("pods"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!("pods:\n{pods}\nlogs:\n{logs}")
}
