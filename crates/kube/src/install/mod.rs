//! `trellis install` and `uninstall` against a cluster: the manifests (`manifests.rs`,
//! profiles and `--set` in `profile.rs`) applied in order with server-side apply
//! (field manager `trellis-install`, so a second install updates in place), CRDs waited
//! for until Established, then every Deployment until available — and when that times
//! out, which pods are not ready and why. Progress goes to a callback: the CLI prints.

pub mod manifests;
pub mod profile;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

pub use manifests::{CONTROL_PLANE, MANAGED_BY, objects};
pub use profile::{Profile, SetError, Values};

/// The field manager of every write an install makes.
pub const FIELD_MANAGER: &str = "trellis-install";

/// Why an install or uninstall stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("the CRDs: {0}")]
    Crds(String),
    #[error("not ready after {timeout:?}:\n{}", .missing.join("\n"))]
    NotReady {
        timeout: Duration,
        missing: Vec<String>,
    },
}

/// Everything an install creates, CRDs first.
pub fn all_objects(values: &Values) -> Result<Vec<Value>, InstallError> {
    let mut out = crate::crd::definitions().map_err(|e| InstallError::Crds(e.to_string()))?;
    out.extend(objects(values));
    Ok(out)
}

fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

async fn api_for(
    client: &kube::Client,
    object: &Value,
) -> Result<Api<DynamicObject>, InstallError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default());
    let (resource, capabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| InstallError::Api {
                what: format!("discovering {api_version} {}", gvk.kind),
                source,
            })?;
    Ok(
        match (capabilities.scope, object["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        },
    )
}

/// Applies `objects` in order (server-side apply, forced: the install owns them),
/// waiting for each CRD to be Established before going on.
pub async fn apply(
    client: &kube::Client,
    objects: &[Value],
    mut progress: impl FnMut(&str),
) -> Result<(), InstallError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut crds = Vec::new();
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let api = api_for(client, object).await?;
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| InstallError::Api {
                what: format!("applying {}", describe(object)),
                source,
            })?;
        if object["kind"] == "CustomResourceDefinition" {
            crds.push(name.to_string());
        } else {
            progress(&format!("applied {}", describe(object)));
        }
        // CRDs must be served before anything of their kinds is written.
        if !crds.is_empty() && object["kind"] != "CustomResourceDefinition" {
            wait_established(client, &std::mem::take(&mut crds)).await?;
        }
    }
    if !crds.is_empty() {
        wait_established(client, &crds).await?;
    }
    Ok(())
}

async fn wait_established(client: &kube::Client, names: &[String]) -> Result<(), InstallError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let crd = api.get(name).await.map_err(|source| InstallError::Api {
                what: format!("reading CRD {name}"),
                source,
            })?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(InstallError::Crds(format!(
                    "{name} not Established after 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Waits until every Deployment in `objects` is available, reporting each as it
/// becomes so; on timeout, says which are not and why their pods are not ready.
pub async fn wait_ready(
    client: &kube::Client,
    objects: &[Value],
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(), InstallError> {
    let mut pending: Vec<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let started = Instant::now();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (ns, name) in pending {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let ready = match api.get_opt(&name).await {
                Ok(Some(d)) => {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let have = d
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0);
                    have >= want
                }
                _ => false,
            };
            if ready {
                progress(&format!("{ns}/{name} ready ({:.1?})", started.elapsed()));
            } else {
                still.push((ns, name));
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            let mut missing = Vec::new();
            for (ns, name) in &pending {
                missing.push(why_not_ready(client, ns, name).await);
            }
            return Err(InstallError::NotReady { timeout, missing });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// `Deployment ns/name: 0/2 available; pod P: ImagePullBackOff (…)`.
async fn why_not_ready(client: &kube::Client, ns: &str, name: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Ok(Some(d)) = deployments.get_opt(name).await else {
        return format!("  Deployment {ns}/{name}: missing");
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let have = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let mut line = format!("  Deployment {ns}/{name}: {have}/{want} available");
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) if list.items.is_empty() => {
            line.push_str("; no pods (quota, admission, or no nodes?)")
        }
        Ok(list) => {
            for pod in list.items {
                let pod_name = pod.metadata.name.unwrap_or_default();
                let status = pod.status.unwrap_or_default();
                let phase = status.phase.unwrap_or_else(|| "Unknown".into());
                let waiting: Vec<String> = status
                    .container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| {
                        let w = c.state?.waiting?;
                        Some(format!(
                            "{} {}{}",
                            c.name,
                            w.reason.unwrap_or_default(),
                            w.message.map(|m| format!(" ({m})")).unwrap_or_default()
                        ))
                    })
                    .collect();
                let scheduled = status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status != "True")
                    .and_then(|c| c.message);
                line.push_str(&format!("\n    pod {pod_name}: {phase}"));
                if let Some(why) = scheduled {
                    line.push_str(&format!(", not scheduled: {why}"));
                }
                if !waiting.is_empty() {
                    line.push_str(&format!(", waiting: {}", waiting.join("; ")));
                }
            }
        }
        Err(e) => line.push_str(&format!("; cannot list its pods: {e}")),
    }
    line
}

/// What an uninstall removed and kept.
#[derive(Debug, Default)]
pub struct Removed {
    pub deleted: Vec<String>,
    /// Left in place (the CRDs without `purge`: users' Istio resources live in them).
    pub kept: Vec<String>,
}

/// Deletes what any profile installs in `values`' namespace, in reverse order, plus what the control plane made
/// at run time (the CA Secret, the Lease, `istio-ca-root-cert` in every namespace);
/// the CRDs only with `purge`. Missing objects are not an error.
pub async fn uninstall(
    client: &kube::Client,
    values: &Values,
    purge: bool,
    mut progress: impl FnMut(&str),
) -> Result<Removed, InstallError> {
    let mut removed = Removed::default();
    // Whatever profile installed it: the objects of every profile, once each.
    let mut everything: Vec<Value> = Vec::new();
    for profile in Profile::ALL {
        for object in all_objects(&Values {
            profile,
            ..values.clone()
        })? {
            if !everything.iter().any(|o| describe(o) == describe(&object)) {
                everything.push(object);
            }
        }
    }
    let ns = values.namespace.clone();
    for (kind, name) in [
        ("Secret", crate::ca_secret::SELF_SIGNED_SECRET),
        ("Secret", crate::ca_secret::API_TOKEN_SECRET),
        ("Lease", crate::leader::LEASE),
    ] {
        let api_version = if kind == "Lease" {
            "coordination.k8s.io/v1"
        } else {
            "v1"
        };
        // Last in, so deleted first (before their namespace).
        everything.push(serde_json::json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": ns}}));
    }
    for object in everything.iter().rev() {
        let what = describe(object);
        if object["kind"] == "CustomResourceDefinition" && !purge {
            removed.kept.push(what);
            continue;
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let api = api_for(client, object).await?;
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                progress(&format!("deleted {what}"));
                removed.deleted.push(what);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(InstallError::Api {
                    what: format!("deleting {what}"),
                    source,
                });
            }
        }
    }
    // A CRD goes once its resources are cleaned up: wait, so a new install does not
    // meet one that is still terminating.
    if purge {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let names: Vec<String> = everything
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in names {
            while crds.get_opt(&name).await.ok().flatten().is_some() {
                if Instant::now() > deadline {
                    progress(&format!("CRD {name} is still being removed"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The root the control plane published in every namespace.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(client.clone());
    let published = maps
        .list(
            &ListParams::default()
                .fields(&format!("metadata.name={}", crate::root_cert::CONFIG_MAP)),
        )
        .await
        .map_err(|source| InstallError::Api {
            what: "listing istio-ca-root-cert".into(),
            source,
        })?;
    for map in published.items {
        let namespace = map.metadata.namespace.unwrap_or_default();
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), &namespace);
        match api
            .delete(crate::root_cert::CONFIG_MAP, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                removed.deleted.push(format!(
                    "ConfigMap {namespace}/{}",
                    crate::root_cert::CONFIG_MAP
                ));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(InstallError::Api {
                    what: "deleting istio-ca-root-cert".into(),
                    source,
                });
            }
        }
    }
    Ok(removed)
}
