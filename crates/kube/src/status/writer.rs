//! Writing one resource's analysis into the cluster, and remembering what is there.
//! The writer reads the object first (its generation, its current status), writes
//! the status subresource with a JSON merge patch at the version it read, and only
//! when something differs; a conflict or an error is retried by the next pass.

use std::collections::{HashMap, HashSet};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Error};
use serde_json::{Value, json};

use super::messages::{ObjectRef, ValidationMessage, Wanted, observed_generation, written};

/// The field manager the patches are made under.
const FIELD_MANAGER: &str = "trellis-status";

/// What the writer believes one object's status holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Known {
    pub messages: Vec<ValidationMessage>,
    /// The spec the messages were written for (`None`: read at start, not written).
    pub spec_hash: Option<u64>,
}

/// The Istio kinds whose status is written, and what the writer knows of them.
pub(super) struct Cluster {
    client: Client,
    kinds: HashMap<(String, String), ApiResource>,
    pub known: HashMap<ObjectRef, Known>,
    /// Kinds whose objects have not been listed yet (their old messages unknown).
    unlisted: HashSet<(String, String)>,
}

/// How one write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The cluster already said it.
    Same,
    /// The status was patched.
    Patched,
    /// The object is gone.
    Gone,
}

impl Cluster {
    pub fn new(client: Client) -> Cluster {
        let kinds: HashMap<(String, String), ApiResource> = crate::source::watched()
            .into_iter()
            .filter(|k| k.custom)
            .map(|k| {
                (
                    (k.resource.group.clone(), k.resource.kind.clone()),
                    k.resource,
                )
            })
            .collect();
        let unlisted = kinds.keys().cloned().collect();
        Cluster {
            client,
            kinds,
            known: HashMap::new(),
            unlisted,
        }
    }

    /// The kinds written to, as `(group, kind)`.
    pub fn istio_kinds(&self) -> HashSet<(String, String)> {
        self.kinds.keys().cloned().collect()
    }

    /// Lists each kind not listed yet and notes the messages its objects carry (left
    /// by an earlier run, so a problem fixed while no writer ran is still cleared).
    /// A kind without a CRD counts as listed. Returns whether every kind is.
    pub async fn list_written(&mut self) -> bool {
        let pending: Vec<(String, String)> = self.unlisted.iter().cloned().collect();
        for key in pending {
            let resource = &self.kinds[&key];
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for object in list.items {
                        let messages = written(object.data.get("status"));
                        if messages.is_empty() {
                            continue;
                        }
                        let object_ref = ObjectRef {
                            group: key.0.clone(),
                            kind: key.1.clone(),
                            namespace: object.metadata.namespace.clone().unwrap_or_default(),
                            name: object.metadata.name.clone().unwrap_or_default(),
                        };
                        self.known.entry(object_ref).or_insert(Known {
                            messages,
                            spec_hash: None,
                        });
                    }
                    self.unlisted.remove(&key);
                }
                Err(Error::Api(e)) if e.code == 404 => {
                    self.unlisted.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(kind = %key.1, %error, "cannot list to read analysis statuses");
                }
            }
        }
        self.unlisted.is_empty()
    }

    /// Whether `object`'s status must be looked at to say `wanted`.
    pub fn differs(&self, object: &ObjectRef, wanted: &Wanted) -> bool {
        match self.known.get(object) {
            None => !wanted.messages.is_empty(),
            Some(known) => {
                known.messages != wanted.messages
                    || (!wanted.messages.is_empty() && known.spec_hash != Some(wanted.spec_hash))
            }
        }
    }

    /// Makes `object`'s status say `wanted` (messages and the generation they are
    /// about; both removed when there are none), unless it does already.
    pub async fn write(&mut self, object: &ObjectRef, wanted: &Wanted) -> Result<Outcome, Error> {
        let key = (object.group.clone(), object.kind.clone());
        let Some(resource) = self.kinds.get(&key) else {
            return Ok(Outcome::Gone);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &object.namespace, resource);
        let outcome = write_status(&api, &object.name, &wanted.messages).await?;
        match outcome {
            Outcome::Gone => {
                self.known.remove(object);
            }
            Outcome::Same | Outcome::Patched => {
                self.known.insert(
                    object.clone(),
                    Known {
                        messages: wanted.messages.clone(),
                        spec_hash: Some(wanted.spec_hash),
                    },
                );
            }
        }
        Ok(outcome)
    }
}

async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    messages: &[ValidationMessage],
) -> Result<Outcome, Error> {
    let Some(object) = api.get_opt(name).await? else {
        return Ok(Outcome::Gone);
    };
    let status = object.data.get("status");
    let current = written(status);
    let generation = object.metadata.generation;
    let same = if messages.is_empty() {
        current.is_empty()
    } else {
        current == messages && observed_generation(status) == generation
    };
    if same {
        return Ok(Outcome::Same);
    }
    let status = if messages.is_empty() {
        json!({"validationMessages": null, "observedGeneration": null})
    } else {
        json!({"validationMessages": messages, "observedGeneration": generation})
    };
    // At the version read: had the spec changed since, the generation would be wrong.
    let patch = json!({
        "metadata": {"resourceVersion": object.metadata.resource_version},
        "status": status,
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api
        .patch_status(name, &params, &Patch::Merge::<Value>(patch))
        .await
    {
        Ok(_) => Ok(Outcome::Patched),
        Err(Error::Api(e)) if e.code == 404 => Ok(Outcome::Gone),
        Err(e) => Err(e),
    }
}
