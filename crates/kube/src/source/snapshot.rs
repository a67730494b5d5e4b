//! The cluster read once, for `trellis analyze`: every kind the watches read, plus
//! Deployments (their templates are analyzed), Istio's ConfigMaps in the control
//! plane's namespace (the mesh config, the injector's values) and, by name only, the
//! Secrets that Gateways and DestinationRules name. Objects are kept as the API server
//! holds them ([`Reader::Analysis`]) and not validated: reporting that is the analyzers'
//! job. A kind the API server does not serve (its CRD is not installed) has none.

use std::collections::BTreeSet;

use futures_util::future::try_join_all;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject};
use trellis_api::{Diagnostic, Resource, Severity};

use super::kinds::{Reader, WatchedKind, load_object, watched};
use super::secrets;

/// Objects listed per request.
const PAGE: u32 = 500;

/// What the cluster holds, as the analyzers read it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every object read, named `cluster:PLURAL/NAMESPACE/NAME` with no line.
    pub resources: Vec<Resource>,
    /// Objects the loader could not type (a misspelt field kept by a lenient CRD),
    /// each with the object's namespace.
    pub diagnostics: Vec<(Option<String>, Diagnostic)>,
    /// Kinds the API server does not serve (plural names), read as none.
    pub not_served: Vec<String>,
}

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
#[error("listing {what}: {message}")]
pub struct ReadError {
    /// What was being listed (`virtualservices`, `secrets named app-tls`).
    pub what: String,
    /// The client's error and its causes, on one line.
    pub message: String,
}

/// Reads the cluster; `istio_namespace` is where Istio's ConfigMaps are.
pub async fn read(client: &kube::Client, istio_namespace: &str) -> Result<Snapshot, ReadError> {
    let mut kinds = watched();
    kinds.push(core_kind::<k8s_openapi::api::apps::v1::Deployment>());
    let lists = kinds.iter().map(|kind| {
        let params = match kind.labels {
            Some(selector) => ListParams::default().labels(selector),
            None => ListParams::default(),
        };
        list(client, kind, None, params)
    });
    let config_maps = core_kind::<k8s_openapi::api::core::v1::ConfigMap>();
    let istio = list(
        client,
        &config_maps,
        Some(istio_namespace),
        ListParams::default(),
    );
    let (listed, istio) = futures_util::future::join(try_join_all(lists), istio).await;
    let mut snapshot = Snapshot::default();
    for (kind, objects) in kinds.iter().zip(listed?) {
        snapshot.add(kind, objects);
    }
    // Only Istio's own: the mesh config (`istio`) and the injector's values.
    let istio: Option<Vec<DynamicObject>> = istio?.map(|objects| {
        objects
            .into_iter()
            .filter(|o| {
                let name = o.metadata.name.as_deref().unwrap_or_default();
                name == super::mesh_config::CONFIG_MAP || name.starts_with("istio-sidecar-injector")
            })
            .collect()
    });
    snapshot.add(&config_maps, istio);
    let names: BTreeSet<String> = secrets::referenced(&snapshot.resources);
    let secret_kind = secrets::kind();
    let by_name = names.iter().map(|name| {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        list(client, &secret_kind, None, params)
    });
    for objects in try_join_all(by_name).await? {
        snapshot.add(&secret_kind, objects);
    }
    Ok(snapshot)
}

impl Snapshot {
    /// Loads the objects of one kind (`None`: the kind is not served).
    fn add(&mut self, kind: &WatchedKind, objects: Option<Vec<DynamicObject>>) {
        let Some(objects) = objects else {
            if !self.not_served.contains(&kind.resource.plural) {
                self.not_served.push(kind.resource.plural.clone());
            }
            return;
        };
        for object in objects {
            let namespace = object.metadata.namespace.clone();
            match load_object(kind, object, Reader::Analysis) {
                Ok(loaded) => {
                    self.resources.extend(loaded.resources);
                    self.diagnostics.extend(
                        loaded
                            .diagnostics
                            .into_iter()
                            .filter(|d| d.severity == Severity::Error)
                            .map(|d| (namespace.clone(), d)),
                    );
                }
                Err(message) => self.diagnostics.push((
                    namespace,
                    Diagnostic {
                        severity: Severity::Error,
                        file: format!("cluster:{}", kind.resource.plural).into(),
                        line: 0,
                        resource: None,
                        path: None,
                        message,
                    },
                )),
            }
        }
    }
}

fn core_kind<K: kube::Resource<DynamicType = ()>>() -> WatchedKind {
    WatchedKind {
        resource: ApiResource::erase::<K>(&()),
        custom: false,
        labels: None,
    }
}

/// Every object of `kind` (in `namespace`, else in all), page by page; `None` when
/// the API server does not serve the kind (404).
async fn list(
    client: &kube::Client,
    kind: &WatchedKind,
    namespace: Option<&str>,
    params: ListParams,
) -> Result<Option<Vec<DynamicObject>>, ReadError> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        None => Api::all_with(client.clone(), &kind.resource),
    };
    let what = || match &params.field_selector {
        Some(fields) => format!("{} ({fields})", kind.resource.plural),
        None => kind.resource.plural.clone(),
    };
    let mut objects = Vec::new();
    let mut page = params.clone().limit(PAGE);
    loop {
        let list = match api.list(&page).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(e) => {
                return Err(ReadError {
                    what: what(),
                    message: one_line(&e),
                });
            }
        };
        objects.extend(list.items);
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = params.clone().limit(PAGE).continue_token(&token),
            None => return Ok(Some(objects)),
        }
    }
}

/// An error and its causes, joined with `: `, each said once.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
