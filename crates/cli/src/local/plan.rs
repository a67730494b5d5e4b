//! Turning ordinary manifests into a local mesh plan: each Deployment replica becomes
//! a pod with two loopback addresses — the pod IP, where its sidecar listens (inbound
//! on the container ports, outbound on 15001, admin 15000, metrics 15020), and an app
//! IP, where the app itself listens — so no privileges and no port juggling are needed.
//! A mesh's addresses come from one loopback block B (127.B.0.0/16), so meshes given
//! different blocks run side by side.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use trellis_api::{Resource, Spec};

/// Most pods one local mesh may run (the loopback plan has room for 250).
pub const MAX_PODS: usize = 250;

/// One process of one replica.
#[derive(Debug, Clone)]
pub struct Pod {
    /// `reviews-v2-0`
    pub name: String,
    pub deployment: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Where the sidecar listens; what the mesh sees.
    pub pod_ip: IpAddr,
    /// Where the app listens.
    pub app_ip: IpAddr,
    /// Container ports the app serves (inbound listeners front them).
    pub ports: Vec<u16>,
    /// Container ports that have a name (Services may target them by name).
    pub named_ports: BTreeMap<String, u16>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Whether it gets a sidecar, by Istio's injection rules, and why.
    pub injection: Injection,
    /// What runs in place of the container's image, when it gave no command.
    pub stand_in: Option<String>,
}

/// Whether a pod gets a sidecar, decided as Istio's injector decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    pub sidecar: bool,
    pub reason: &'static str,
}

/// Istio's injection rules: the pod's `sidecar.istio.io/inject` (label, or the older
/// annotation) `"false"` never injects; a namespace labelled `istio-injection=disabled`
/// never does either; `istio-injection=enabled` or an `istio.io/rev` label injects; in
/// an unlabelled namespace only a pod that says `sidecar.istio.io/inject: "true"` gets
/// one.
pub fn injection(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
) -> Injection {
    const INJECT: &str = "sidecar.istio.io/inject";
    let pod = pod_labels
        .get(INJECT)
        .or_else(|| pod_annotations.get(INJECT))
        .map(|v| v.eq_ignore_ascii_case("true"));
    let namespace = match namespace_labels.get("istio-injection").map(String::as_str) {
        Some("enabled") => Some(true),
        Some(_) => Some(false),
        None if namespace_labels.contains_key("istio.io/rev") => Some(true),
        None => None,
    };
    let (sidecar, reason) = match (namespace, pod) {
        (_, Some(false)) => (false, "the pod says sidecar.istio.io/inject: \"false\""),
        (Some(false), _) => (false, "its namespace is labelled istio-injection=disabled"),
        (Some(true), _) => (true, "its namespace is labelled for injection"),
        (None, Some(true)) => (true, "the pod says sidecar.istio.io/inject: \"true\""),
        (None, None) => (
            false,
            "its namespace is not labelled istio-injection=enabled",
        ),
    };
    Injection { sidecar, reason }
}

/// Pods in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub pods: Vec<Pod>,
    /// The loopback block B: pod IPs 127.B.1.N, app IPs 127.B.2.N.
    pub block: u8,
}

/// The gateway's own loopback address in block `block` (its admin on :15000,
/// metrics on :15020).
pub fn gateway_ip(block: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, 3, 1))
}

/// Plans the pods of every Deployment in `resources`, addressed in loopback block
/// `block`.
pub fn plan(resources: &[Resource], block: u8) -> Result<Plan, String> {
    let mut pods = Vec::new();
    let namespaces: BTreeMap<&str, &BTreeMap<String, String>> = resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Namespace(_)))
        .map(|r| (r.meta.name.as_str(), &r.meta.labels))
        .collect();
    let none = BTreeMap::new();
    for r in resources {
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        let replicas = d.spec.replicas.unwrap_or(1).max(0) as usize;
        let template = &d.spec.template;
        let Some(container) = template.spec.containers.first() else {
            return Err(format!(
                "Deployment {}: the pod template has no containers",
                r.meta.name
            ));
        };
        if template.spec.containers.len() > 1 {
            tracing::warn!(deployment = %r.meta.name, "only the first container of a pod runs in local mode");
        }
        let mut command: Vec<String> = container
            .command
            .iter()
            .chain(container.args.iter())
            .cloned()
            .collect();
        let mut env: Vec<(String, String)> = Vec::new();
        let mut stand_in = None;
        if command.is_empty() {
            let image = container.image.as_deref().unwrap_or_default();
            let found = super::images::stand_in(image).map_err(|e| {
                format!(
                    "Deployment {}: container {}: {e}",
                    r.meta.name, container.name
                )
            })?;
            let Some(found) = found else {
                return Err(format!(
                    "Deployment {}: container {} has no `command`, and local mode has no stand-in for its image {}; \
                     local mode runs commands, not images: add `command:` (and `args:`) with the program to start",
                    r.meta.name,
                    container.name,
                    if image.is_empty() {
                        "(none given)"
                    } else {
                        image
                    },
                ));
            };
            command = found.command;
            env = found.env;
            stand_in = Some(format!("image {image} runs as {}", found.says));
        }
        if command[0] == "trellis" {
            command[0] = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "trellis".into());
        }
        env.extend(
            container
                .env
                .iter()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
        );
        let ports: Vec<u16> = container
            .ports
            .iter()
            .map(|p| p.container_port.clamp(1, 65535) as u16)
            .collect();
        let named_ports: BTreeMap<String, u16> = container
            .ports
            .iter()
            .filter_map(|p| Some((p.name.clone()?, p.container_port.clamp(1, 65535) as u16)))
            .collect();
        let namespace = r.meta.namespace_or_default();
        let injection = injection(
            namespaces.get(namespace).copied().unwrap_or(&none),
            &template.metadata.labels,
            &template.metadata.annotations,
        );
        for i in 0..replicas {
            let n = pods.len();
            if n >= MAX_PODS {
                return Err(format!(
                    "more than {MAX_PODS} pods; local mode runs at most {MAX_PODS}"
                ));
            }
            pods.push(Pod {
                name: format!("{}-{i}", r.meta.name),
                deployment: r.meta.name.clone(),
                namespace: r.meta.namespace_or_default().to_string(),
                labels: template.metadata.labels.clone(),
                service_account: template.spec.service_account().to_string(),
                pod_ip: IpAddr::V4(Ipv4Addr::new(127, block, 1, (n + 1) as u8)),
                app_ip: IpAddr::V4(Ipv4Addr::new(127, block, 2, (n + 1) as u8)),
                ports: ports.clone(),
                named_ports: named_ports.clone(),
                command: command.clone(),
                env: env.clone(),
                injection,
                stand_in: stand_in.clone(),
            });
        }
    }
    Ok(Plan { pods, block })
}

impl Plan {
    /// The workloads compilation sees: each pod at the address the mesh reaches it on
    /// (its sidecar's pod IP, or the app itself when it has no sidecar).
    pub fn workloads(&self) -> Vec<trellis_compile::Workload> {
        self.pods.iter().map(Pod::workload).collect()
    }

    /// The pods that run without a sidecar.
    pub fn without_sidecars(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| !p.injection.sidecar)
    }
}

impl Pod {
    /// Where the mesh reaches this pod: its sidecar, or its app when it has none.
    pub fn address(&self) -> IpAddr {
        if self.injection.sidecar {
            self.pod_ip
        } else {
            self.app_ip
        }
    }

    /// The pod as compilation sees it.
    pub fn workload(&self) -> trellis_compile::Workload {
        trellis_compile::Workload {
            name: self.deployment.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            address: Some(self.address()),
            ports: self.named_ports.clone(),
            service_account: self.service_account.clone(),
            sidecar: self.injection.sidecar,
        }
    }
}

/// How the pods `resources` ask for differ from the running `plan`: pods to add, to
/// remove, and whose spec changed (names). Addresses are not compared: they are given
/// by order, and only the runner decides them.
pub fn drift(running: &Plan, resources: &[Resource]) -> Result<[Vec<String>; 3], String> {
    let wanted = plan(resources, running.block)?;
    let same = |a: &Pod, b: &Pod| {
        (
            &a.labels,
            &a.ports,
            &a.named_ports,
            &a.command,
            &a.env,
            &a.service_account,
            &a.injection,
        ) == (
            &b.labels,
            &b.ports,
            &b.named_ports,
            &b.command,
            &b.env,
            &b.service_account,
            &b.injection,
        )
    };
    let find = |pods: &[Pod], name: &str| pods.iter().position(|p| p.name == name);
    let added = wanted
        .pods
        .iter()
        .filter(|p| find(&running.pods, &p.name).is_none())
        .map(|p| p.name.clone())
        .collect();
    let removed = running
        .pods
        .iter()
        .filter(|p| find(&wanted.pods, &p.name).is_none())
        .map(|p| p.name.clone())
        .collect();
    let changed = wanted
        .pods
        .iter()
        .filter(|p| find(&running.pods, &p.name).is_some_and(|i| !same(&running.pods[i], p)))
        .map(|p| p.name.clone())
        .collect();
    Ok([added, removed, changed])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_REPLICAS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, command: [sleep, '60'], ports: [{containerPort: 8000}]}
";

    #[test]
    fn pods_take_their_addresses_from_the_mesh_block() {
        let loaded = trellis_api::load_str("web.yaml", TWO_REPLICAS);
        let planned = plan(&loaded.resources, 7).expect("plan");
        let addresses: Vec<(String, String)> = planned
            .pods
            .iter()
            .map(|p| (p.pod_ip.to_string(), p.app_ip.to_string()))
            .collect();
        assert_eq!(
            addresses,
            [
                ("127.7.1.1".to_string(), "127.7.2.1".to_string()),
                ("127.7.1.2".to_string(), "127.7.2.2".to_string())
            ]
        );
        assert_eq!(gateway_ip(7).to_string(), "127.7.3.1");
        let default = plan(&loaded.resources, 0).expect("plan");
        assert_eq!(default.pods[0].pod_ip.to_string(), "127.0.1.1");
    }
}
