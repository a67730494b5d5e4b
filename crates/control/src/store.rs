//! The config store: every resource the mesh is configured with, in layers that each
//! come from one source — the watched directory (replaced whole on every valid edit),
//! a Kubernetes cluster (replaced whole after each batch of watch events), and the API
//! (`trellis apply` and `delete`), which wins when several name the same resource.
//!
//! The store holds only validated resources: an invalid edit or apply is refused whole
//! and changes nothing. A layer replaced by equal content is no change, so a source
//! that relists (a restarted watch) causes no push. Readers get an immutable `Arc`
//! snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_api::Resource;

/// `(kind, namespace, name)`; cluster-scoped kinds have an empty namespace.
pub type Key = (String, String, String);

/// The identity of a resource in the store.
pub fn key(r: &Resource) -> Key {
    let namespace = if r.kind == "Namespace" {
        String::new()
    } else {
        r.meta.namespace_or_default().to_string()
    };
    (r.kind.clone(), namespace, r.meta.name.clone())
}

use crate::source::slim;

/// What an apply did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

/// A source of resources, replaced whole by its owner. Later layers win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// The watched directory (`trellis control-plane --config-dir`).
    Directory,
    /// A Kubernetes API server's objects (cluster mode).
    Cluster,
}

/// The layers, the API's resources and the merged view.
#[derive(Debug, Default)]
pub struct Store {
    layers: BTreeMap<Layer, BTreeMap<Key, Resource>>,
    api: BTreeMap<Key, Resource>,
    merged: Arc<Vec<Resource>>,
}

impl Store {
    /// The resources in force: the directory's, overridden by the API's.
    pub fn resources(&self) -> Arc<Vec<Resource>> {
        self.merged.clone()
    }

    /// Replaces the directory layer. Returns whether anything changed.
    pub fn set_directory(&mut self, resources: Vec<Resource>) -> bool {
        self.set_layer(
            Layer::Directory,
            resources.into_iter().map(|r| (key(&r), slim(r))).collect(),
        )
    }

    /// Replaces `layer` whole. Returns whether anything changed (equal content, as a
    /// relisted watch gives, is no change).
    pub fn set_layer(&mut self, layer: Layer, next: BTreeMap<Key, Resource>) -> bool {
        let current = self.layers.entry(layer).or_default();
        let same = next.len() == current.len()
            && next.iter().zip(current.iter()).all(|((k1, a), (k2, b))| {
                k1 == k2 && (Arc::ptr_eq(&a.raw, &b.raw) || a.raw == b.raw)
            });
        *current = next;
        if !same {
            self.rebuild();
        }
        !same
    }

    /// The layer's resources, in force or not.
    fn in_layers(&self, k: &Key) -> Option<&Resource> {
        self.layers.values().rev().find_map(|l| l.get(k))
    }

    /// Adds or replaces resources in the API layer.
    pub fn apply(&mut self, resources: Vec<Resource>) -> Vec<(Key, Change)> {
        let mut changes = Vec::new();
        for r in resources.into_iter().map(slim) {
            let k = key(&r);
            let before = self.api.get(&k).or_else(|| self.in_layers(&k));
            let change = match before {
                None => Change::Created,
                Some(b) if b.raw == r.raw => Change::Unchanged,
                Some(_) => Change::Configured,
            };
            changes.push((k.clone(), change));
            self.api.insert(k, r);
        }
        if changes.iter().any(|(_, c)| *c != Change::Unchanged) {
            self.rebuild();
        }
        changes
    }

    /// Removes resources from the API and the directory (a directory resource comes
    /// back when its file next changes; a cluster's is deleted there, not here).
    /// Returns, for each, whether it existed.
    pub fn delete(&mut self, keys: &[Key]) -> Vec<(Key, bool)> {
        let out: Vec<(Key, bool)> = keys
            .iter()
            .map(|k| {
                let a = self.api.remove(k).is_some();
                let d = self
                    .layers
                    .get_mut(&Layer::Directory)
                    .is_some_and(|l| l.remove(k).is_some());
                (k.clone(), a || d)
            })
            .collect();
        if out.iter().any(|(_, found)| *found) {
            self.rebuild();
        }
        out
    }

    /// The API layer alone (what `trellis apply` added), for saving across restarts.
    pub fn api_resources(&self) -> Vec<Resource> {
        self.api.values().cloned().collect()
    }

    fn rebuild(&mut self) {
        // Each key once, from the last layer that has it (the API last of all).
        let mut merged: BTreeMap<&Key, &Resource> = BTreeMap::new();
        for layer in self.layers.values() {
            merged.extend(layer.iter());
        }
        merged.extend(self.api.iter());
        self.merged = Arc::new(merged.into_values().cloned().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Vec<Resource> {
        trellis_api::load_str("t.yaml", text).resources
    }

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
";

    #[test]
    fn api_layer_overrides_the_directory_and_reports_changes() {
        let mut store = Store::default();
        assert!(store.set_directory(load(VS)));
        assert!(!store.set_directory(load(VS)), "same content is no change");
        let changes = store.apply(load(VS));
        assert_eq!(changes[0].1, Change::Unchanged);
        let edited = VS.replace("host: reviews}", "host: reviews, subset: v1}");
        assert_eq!(store.apply(load(&edited))[0].1, Change::Configured);
        assert_eq!(store.resources().len(), 1);
        assert!(store.resources()[0].raw.to_string().contains("v1"));
        let k = key(&store.resources()[0]);
        assert_eq!(
            store.delete(std::slice::from_ref(&k)),
            vec![(k.clone(), true)]
        );
        assert!(store.resources().is_empty());
        assert_eq!(store.delete(std::slice::from_ref(&k)), vec![(k, false)]);
    }
}
