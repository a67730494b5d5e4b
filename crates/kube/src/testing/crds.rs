//! Istio's own CRDs in a test cluster, read from the Istio corpus beside the checkout
//! (`../shared/corpus/istio/crds/crd-all.gen.yaml`; `TRELLIS_ISTIO_CORPUS` or
//! `TRELLIS_CORPUS` name another), never copied into the repository. A test may ask
//! for some kinds' `spec` to keep unknown fields, as Trellis's own CRDs do, so that a
//! misspelt field (at any depth) reaches the webhook instead of the API server's schema check.

use std::path::{Path, PathBuf};

use super::Cluster;

/// Istio's CRD file, if the corpus is here.
pub fn istio_crds_file() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    [
        env("TRELLIS_ISTIO_CORPUS"),
        env("TRELLIS_CORPUS").map(|p| p.join("istio")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio")),
    ]
    .into_iter()
    .flatten()
    .map(|corpus| corpus.join("crds/crd-all.gen.yaml"))
    .find(|file| file.is_file())
}

/// Creates Istio's CRDs in `cluster` and waits until they are established; those of
/// the kinds in `keep_unknown_in_spec` keep unknown `spec` fields. False (with a
/// line saying why) when the corpus is absent: the test `test` has nothing to run.
pub fn install_istio_crds(cluster: &Cluster, test: &str, keep_unknown_in_spec: &[&str]) -> bool {
    let Some(file) = istio_crds_file() else {
        eprintln!(
            "skipped {test}: Istio's CRDs are not here (../shared/corpus/istio/crds/crd-all.gen.yaml; set TRELLIS_ISTIO_CORPUS)"
        );
        return false;
    };
    let text = std::fs::read_to_string(&file).expect("the CRD file reads");
    let documents = trellis_api::yaml::parse(&text).expect("Istio's CRD file is YAML");
    let mut items = Vec::new();
    for document in documents {
        let mut crd = document.root.to_json();
        if crd.is_null() {
            continue;
        }
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        if keep_unknown_in_spec.contains(&kind) {
            for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
                keep_unknown(&mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]);
            }
        }
        items.push(crd);
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let (ok, _, err) = cluster.kubectl_run(&["create", "-f", "-"], Some(&list.to_string()));
    assert!(ok, "kubectl create Istio's CRDs: {err}");
    let (ok, _, err) = cluster.kubectl_run(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
        None,
    );
    assert!(ok, "Istio's CRDs established: {err}");
    true
}

/// Marks `schema` and every object schema below it (through `properties` and
/// `items`) as keeping unknown fields: the flag holds for one level only.
fn keep_unknown(schema: &mut serde_json::Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    }
    if let Some(properties) = map.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.values_mut().for_each(keep_unknown);
    }
    if let Some(items) = map.get_mut("items") {
        keep_unknown(items);
    }
}
