//! Istio's analyzer test table (`../shared/corpus/istio/analyzers/expected.yaml`) as cases
//! to run, with each case's messages as `trellis analyze` prints them, for the corpus tests
//! of this crate (the library) and of the CLI (the binary). Behind the `testing` feature.
//!
//! The one idea: Istio's harness keeps a document without a namespace namespace-less, but
//! `istioctl analyze` and `trellis analyze` put it in the default namespace (`-n`,
//! `default`), so an expected `namespace: ~` on a namespaced kind reads `default` here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Analyzers about Envoy or Istio's own installation, outside what Trellis runs.
pub const OUT_OF_SCOPE: &[&str] = &[
    "envoyfilter.",
    "externalcontrolplane.",
    "injection.ImageAnalyzer",
    "injection.ImageAutoAnalyzer",
    "webhook.Analyzer",
    "k8sgateway.CRDVersionAnalyzer",
];

/// The namespace `trellis analyze` gives documents that name none (its `-n` default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// `<checkout>/../shared/corpus/istio/analyzers`, seen from a crate's manifest directory
/// (`crates/NAME`), when the corpus is there.
pub fn corpus_dir(manifest_dir: &str) -> Option<PathBuf> {
    let dir = Path::new(manifest_dir).join("../../../shared/corpus/istio/analyzers");
    dir.join("expected.yaml").exists().then_some(dir)
}

/// One message as compared: code, message name, level, kind, namespace, resource name.
pub type Key = (String, String, String, String, Option<String>, String);

/// Messages as a multiset: order does not matter, repeats do.
pub type Messages = BTreeMap<Key, usize>;

/// Counts `keys` into a multiset.
pub fn multiset(keys: impl IntoIterator<Item = Key>) -> Messages {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// The key of a message as `trellis analyze -o json` prints it (`type` is the name).
pub fn key_of_json(v: &Value) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    (
        s("code"),
        s("type"),
        s("level"),
        s("kind"),
        v["namespace"].as_str().map(str::to_string),
        s("name"),
    )
}

/// The key of a message of the library.
pub fn key_of(m: &crate::Message) -> Key {
    (
        m.code.to_string(),
        m.message_name.to_string(),
        m.level.to_string(),
        m.kind.clone(),
        m.namespace.clone(),
        m.name.clone(),
    )
}

/// One case Trellis runs: Istio's analyzer name, the input files, and what it must print.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub analyzer: String,
    /// The input files, in order.
    pub inputs: Vec<PathBuf>,
    /// The mesh config to give as `--meshConfigFile`; `None` for plain-YAML cases.
    pub mesh_config: Option<PathBuf>,
    /// Istio's messages, namespaces as `trellis analyze` prints them.
    pub expect: Messages,
}

impl Case {
    /// True when the inputs alone suffice (the cases the README's claim counts).
    pub fn plain_yaml(&self) -> bool {
        self.mesh_config.is_none()
    }

    /// What is missing and what is extra in `got`, or `None` when it is exactly `expect`.
    pub fn difference(&self, got: &Messages) -> Option<String> {
        if *got == self.expect {
            return None;
        }
        let missing: Vec<_> = (self.expect.iter())
            .filter(|(k, n)| got.get(*k) != Some(n))
            .collect();
        let extra: Vec<_> = (got.iter())
            .filter(|(k, n)| self.expect.get(*k) != Some(n))
            .collect();
        Some(format!(
            "{} {}: missing {missing:?}; unexpected {extra:?}",
            self.id, self.analyzer
        ))
    }
}

/// The cases of `expected.yaml` in `dir` whose analyzer concerns what Trellis runs: those
/// that need only their YAML, or also a mesh config; the others (mesh networks, two
/// clusters) as `Err` saying what they need.
pub fn cases(dir: &Path) -> Vec<Result<Case, String>> {
    let text = std::fs::read_to_string(dir.join("expected.yaml")).expect("read expected.yaml");
    let doc = trellis_api::yaml::parse(&text)
        .expect("parse expected.yaml")
        .remove(0)
        .root
        .to_json();
    let mut out = Vec::new();
    for case in doc["cases"].as_array().expect("cases") {
        let id = case["id"].as_str().unwrap_or("?").to_string();
        let analyzer = case["analyzer"].as_str().unwrap_or("").to_string();
        if OUT_OF_SCOPE.iter().any(|p| analyzer.starts_with(p)) {
            continue;
        }
        let needs = &case["needs"];
        let mesh_config = needs["mesh_config"].as_str();
        let plain = case["plain_yaml"] == Value::Bool(true);
        if !plain && (mesh_config.is_none() || needs.as_object().is_some_and(|n| n.len() > 1)) {
            out.push(Err(format!("{id} {analyzer}: needs {needs}")));
            continue;
        }
        let inputs = (case["inputs"].as_array().into_iter().flatten())
            .map(|i| dir.join(i.as_str().unwrap_or("")))
            .collect();
        let expect = multiset(
            (case["expect"].as_array().into_iter().flatten())
                .map(|e| expected_key(e, DEFAULT_NAMESPACE)),
        );
        out.push(Ok(Case {
            id,
            analyzer,
            inputs,
            mesh_config: mesh_config.filter(|_| !plain).map(|f| dir.join(f)),
            expect,
        }));
    }
    out
}

/// An expected message's key, with an absent namespace read as `default_namespace`
/// unless the kind is cluster-scoped (`scope: Cluster`).
fn expected_key(v: &Value, default_namespace: &str) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let namespace = match v["namespace"].as_str() {
        Some(ns) => Some(ns.to_string()),
        None if v["scope"] == "Cluster" => None,
        None => Some(default_namespace.to_string()),
    };
    (
        s("code"),
        s("message"),
        s("level"),
        s("kind"),
        namespace,
        s("name"),
    )
}

/// How many cases matched, and what did not.
#[derive(Debug, Default)]
pub struct Tally {
    /// (matched, run) among plain-YAML cases.
    pub plain: (usize, usize),
    /// (matched, run) among cases given a mesh config.
    pub with_mesh_config: (usize, usize),
    pub misses: Vec<String>,
    pub not_run: Vec<String>,
}

impl Tally {
    /// Counts one run case: `miss` is its difference (or why it could not run).
    pub fn count(&mut self, case: &Case, miss: Option<String>) {
        let bucket = if case.plain_yaml() {
            &mut self.plain
        } else {
            &mut self.with_mesh_config
        };
        bucket.1 += 1;
        match miss {
            None => bucket.0 += 1,
            Some(m) => self.misses.push(m),
        }
    }

    /// Prints the figures and every miss (the test output shows them).
    pub fn print(&self, how: &str) {
        let (matched, run) = self.plain;
        println!("{how}: {matched}/{run} in-scope plain-YAML cases give exactly Istio's messages");
        let (matched, run) = self.with_mesh_config;
        println!(
            "{how}, with --meshConfigFile: {matched}/{run} cases give exactly Istio's messages"
        );
        for miss in &self.misses {
            println!("  miss: {miss}");
        }
        for skip in &self.not_run {
            println!("  not run: {skip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_namespace_less_expectation_reads_the_default_namespace_unless_cluster_scoped() {
        let namespaced = json!({"code": "IST0144", "message": "InvalidApplicationUID",
            "level": "Warning", "kind": "Deployment", "namespace": null, "name": "d"});
        assert_eq!(
            expected_key(&namespaced, "default").4.as_deref(),
            Some("default")
        );
        let cluster = json!({"kind": "Namespace", "namespace": null, "scope": "Cluster"});
        assert_eq!(expected_key(&cluster, "default").4, None);
        let written = json!({"kind": "Gateway", "namespace": "istio-system"});
        assert_eq!(
            expected_key(&written, "default").4.as_deref(),
            Some("istio-system")
        );
    }
}
