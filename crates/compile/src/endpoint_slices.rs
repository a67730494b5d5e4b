//! Endpoints of Services without a selector, from their EndpointSlices (those
//! labelled `kubernetes.io/service-name`, in the Service's namespace). Only ready
//! IP endpoints count; FQDN slices are left out, as Istio leaves them. An address
//! that is a known Pod's takes that Pod's labels, identity and sidecar, so mesh
//! mTLS and subsets work for hand-written endpoints of meshed pods too.

use std::collections::HashMap;
use std::net::IpAddr;

use trellis_api::kube::{EndpointSlice, SERVICE_NAME_LABEL};
use trellis_api::values::IntOrString;
use trellis_api::{Resource, Spec};

use crate::mesh::{DOMAIN, Mesh, Workload};

/// Adds the ready endpoints of `resources`' EndpointSlices to the selector-less
/// Services of `mesh` they name.
pub(crate) fn add(mesh: &mut Mesh, resources: &[Resource]) {
    let slices: Vec<(&Resource, &EndpointSlice)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::EndpointSlice(s) => Some((r, &**s)),
            _ => None,
        })
        .collect();
    if slices.is_empty() {
        return;
    }
    let pods: HashMap<IpAddr, &Workload> = mesh
        .workloads
        .iter()
        .filter_map(|w| Some((w.address?, w)))
        .collect();
    let by_host: HashMap<&str, usize> = mesh
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.hostname.as_str(), i))
        .collect();
    let mut found: Vec<(usize, Workload)> = Vec::new();
    for (r, slice) in slices {
        let Some(service) = r.meta.labels.get(SERVICE_NAME_LABEL) else {
            continue;
        };
        let namespace = r.meta.namespace_or_default();
        let host = format!("{service}.{namespace}.{DOMAIN}");
        let Some(&index) = by_host.get(host.as_str()) else {
            continue;
        };
        let svc = &mesh.services[index];
        if svc.selector.is_some() || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        // Each slice port under its Service port's name, and under the target port's
        // name where the Service names one, so either lookup finds it.
        let mut ports = std::collections::BTreeMap::new();
        for p in &slice.ports {
            let (Some(number), name) = (p.port, p.name.clone().unwrap_or_default()) else {
                continue;
            };
            let number = number.clamp(0, 65535) as u16;
            if let Some(IntOrString::String(target)) = svc
                .ports
                .iter()
                .find(|sp| sp.name == name)
                .map(|sp| &sp.target)
            {
                ports.insert(target.clone(), number);
            }
            ports.insert(name, number);
        }
        for endpoint in slice.endpoints.iter().filter(|e| e.is_ready()) {
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let pod = pods.get(&ip);
                found.push((
                    index,
                    Workload {
                        name: pod.map_or_else(|| r.meta.name.clone(), |p| p.name.clone()),
                        namespace: namespace.to_string(),
                        labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
                        address: Some(ip),
                        ports: ports.clone(),
                        service_account: pod.map(|p| p.service_account.clone()).unwrap_or_default(),
                        sidecar: pod.is_some_and(|p| p.sidecar),
                    },
                ));
            }
        }
    }
    for (index, workload) in found {
        let endpoints = &mut mesh.services[index].endpoints;
        if !endpoints.contains(&workload) {
            endpoints.push(workload);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Mesh;

    const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  ports:
  - {name: tcp-db, port: 5432, targetPort: pg}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: data
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [10.9.0.1]
  conditions: {ready: true}
- addresses: [10.9.0.2]
  conditions: {ready: false}
- addresses: [10.9.0.3]
ports:
- {name: tcp-db, port: 6432}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-elsewhere
  namespace: other
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [10.9.9.9]
ports:
- {name: tcp-db, port: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: data}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: data
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.9.1.1]
ports:
- {name: http, port: 80}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-pod
  namespace: data
  labels: {app: db, version: v2}
  annotations: {sidecar.istio.io/status: "{}"}
spec:
  serviceAccountName: db
  containers: [{name: db, image: pg}]
status: {podIP: 10.9.0.3}
"#;

    fn mesh() -> Mesh {
        let loaded = trellis_api::load_str("s.yaml", YAML);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        Mesh::new(&loaded.resources, vec![])
    }

    #[test]
    fn selectorless_service_takes_ready_slice_endpoints_of_its_namespace() {
        let mesh = mesh();
        let db = mesh.service("db.data.svc.cluster.local").expect("db");
        let mut addresses: Vec<String> = mesh
            .endpoints_of(db, &Default::default())
            .map(|w| w.address.expect("address").to_string())
            .collect();
        addresses.sort();
        // 10.9.0.2 is not ready; 10.9.9.9 is another namespace's slice.
        assert_eq!(addresses, ["10.9.0.1", "10.9.0.3"]);
        let endpoint = db
            .endpoints
            .iter()
            .find(|w| w.address.is_some())
            .expect("one");
        // Found by the Service port's name and by its named target port alike.
        assert_eq!(endpoint.ports.get("tcp-db"), Some(&6432));
        assert_eq!(endpoint.ports.get("pg"), Some(&6432));
    }

    #[test]
    fn slice_address_of_a_meshed_pod_takes_its_identity_and_labels() {
        let mesh = mesh();
        let db = mesh.service("db.data.svc.cluster.local").expect("db");
        let pod = db
            .endpoints
            .iter()
            .find(|w| w.address == "10.9.0.3".parse().ok())
            .expect("pod endpoint");
        assert!(pod.sidecar);
        assert_eq!(pod.service_account, "db");
        assert_eq!(pod.labels.get("version").map(String::as_str), Some("v2"));
        let plain = db
            .endpoints
            .iter()
            .find(|w| w.address == "10.9.0.1".parse().ok())
            .expect("plain endpoint");
        assert!(!plain.sidecar);
    }

    #[test]
    fn selected_service_ignores_slices() {
        let mesh = mesh();
        let web = mesh.service("web.data.svc.cluster.local").expect("web");
        assert_eq!(mesh.endpoints_of(web, &Default::default()).count(), 0);
    }
}
