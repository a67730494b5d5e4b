//! kube-proxy's part, played by the test: every Service's cluster IP and port DNAT-ed
//! (iptables, in the node's namespace) to the ready endpoints its EndpointSlices list,
//! picked at random per connection, and every Service's DNS names, for the Pods'
//! `/etc/hosts` (what cluster DNS would answer). Resynced from a list every 300 ms.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

const CHAIN: &str = "TEST-SERVICES";

/// What one resync found: DNS names per namespace, and the rules.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ServiceTable {
    /// `(namespace of the asking Pod, name)` → cluster IP, for names that resolve
    /// only in their own namespace (`reviews`); fully qualified names under "".
    pub names: BTreeMap<(String, String), String>,
    /// `cluster_ip:port` → ready endpoints `ip:port`.
    pub backends: BTreeMap<String, Vec<String>>,
}

impl ServiceTable {
    /// The `/etc/hosts` entries for a Pod in `namespace`.
    pub fn hosts_for(&self, namespace: &str) -> Vec<(String, String)> {
        self.names
            .iter()
            .filter(|((ns, _), _)| ns.is_empty() || ns == namespace)
            .map(|((_, name), ip)| (name.clone(), ip.clone()))
            .collect()
    }
}

/// Lists Services and EndpointSlices and builds the table.
pub async fn read(client: &kube::Client) -> Result<ServiceTable, kube::Error> {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let services = services.list(&ListParams::default()).await?;
    let slices = slices.list(&ListParams::default()).await?;
    let mut table = ServiceTable::default();
    for svc in &services.items {
        let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .clone()
            .filter(|ip| ip != "None" && !ip.is_empty())
        else {
            continue;
        };
        for fq in [
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
        ] {
            table.names.insert((String::new(), fq), ip.clone());
        }
        table.names.insert((ns.clone(), name.clone()), ip.clone());
        for port in spec.ports.iter().flatten() {
            let mut backends = Vec::new();
            for slice in slices.items.iter().filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(name)
            }) {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name == port.name)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    let ready = endpoint
                        .conditions
                        .as_ref()
                        .and_then(|c| c.ready)
                        .unwrap_or(true);
                    if ready {
                        for address in &endpoint.addresses {
                            backends.push(format!("{address}:{target}"));
                        }
                    }
                }
            }
            backends.sort();
            table
                .backends
                .insert(format!("{ip}:{}", port.port), backends);
        }
    }
    Ok(table)
}

/// The nat table's hooks into the chain; once per node.
pub fn install() -> Result<(), String> {
    restore(&format!(
        "*nat\n:{CHAIN} - [0:0]\n-A PREROUTING -j {CHAIN}\n-A OUTPUT -j {CHAIN}\nCOMMIT\n"
    ))
}

/// Replaces the chain's rules with `table`'s.
pub fn program(table: &ServiceTable) -> Result<(), String> {
    let mut rules = format!("*nat\n:{CHAIN} - [0:0]\n");
    for (front, backends) in &table.backends {
        let Some((ip, port)) = front.rsplit_once(':') else {
            continue;
        };
        let n = backends.len();
        for (i, backend) in backends.iter().enumerate() {
            let random = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.5}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            rules.push_str(&format!(
                "-A {CHAIN} -d {ip}/32 -p tcp --dport {port}{random} -j DNAT --to-destination {backend}\n"
            ));
        }
    }
    rules.push_str("COMMIT\n");
    restore(&rules)
}

fn restore(rules: &str) -> Result<(), String> {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
