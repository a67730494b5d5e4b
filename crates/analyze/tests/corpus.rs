//! Conformance with Istio's analyzer test table (../shared/corpus/istio/analyzers/expected.yaml):
//! every plain-YAML case whose analyzer concerns what Trellis runs is analyzed with only
//! that analyzer, and its messages are compared with Istio's as a multiset of
//! (code, name, level, kind, namespace, resource name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trellis_analyze::{Options, analyze};

/// Analyzers about Envoy or Istio's own installation, outside what Trellis runs.
const OUT_OF_SCOPE: &[&str] = &[
    "envoyfilter.",
    "externalcontrolplane.",
    "injection.ImageAnalyzer",
    "injection.ImageAutoAnalyzer",
    "webhook.Analyzer",
    "k8sgateway.CRDVersionAnalyzer",
];

/// The share of in-scope cases that must match exactly.
const REQUIRED_PERCENT: f64 = 90.0;

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/istio/analyzers");
    dir.join("expected.yaml").exists().then_some(dir)
}

type Key = (String, String, String, String, Option<String>, String);

fn key_of(v: &serde_json::Value) -> Key {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    (
        s("code"),
        s("message"),
        s("level"),
        s("kind"),
        v.get("namespace")
            .and_then(|x| x.as_str())
            .map(str::to_string),
        s("name"),
    )
}

fn multiset(keys: impl IntoIterator<Item = Key>) -> BTreeMap<Key, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[test]
fn istio_analyzer_cases_match() {
    let Some(dir) = corpus() else {
        println!(
            "skipping: ../shared/corpus/istio/analyzers is absent (the corpus ships beside the checkout)"
        );
        return;
    };
    let text = std::fs::read_to_string(dir.join("expected.yaml")).expect("read expected.yaml");
    let doc = trellis_api::yaml::parse(&text)
        .expect("parse expected.yaml")
        .remove(0)
        .root
        .to_json();
    let cases = doc["cases"].as_array().expect("cases");
    let (mut total, mut matched) = (0, 0);
    let (mut needs_total, mut needs_matched) = (0, 0);
    let mut skipped = Vec::new();
    let mut misses = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let analyzer = case["analyzer"].as_str().unwrap_or("");
        if OUT_OF_SCOPE.iter().any(|p| analyzer.starts_with(p)) {
            continue;
        }
        // Plain-YAML cases, and those that need only a mesh config (given as istioctl's
        // --meshConfigFile would); mesh networks and two-cluster cases are not run.
        let mesh_config_file = case["needs"]["mesh_config"].as_str();
        let plain = case["plain_yaml"] == serde_json::Value::Bool(true);
        if !plain
            && (mesh_config_file.is_none()
                || case["needs"].as_object().is_some_and(|n| n.len() > 1))
        {
            skipped.push(format!("{id} {analyzer}: needs {}", case["needs"]));
            continue;
        }
        let mesh_config = mesh_config_file.map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).expect("read mesh config");
            trellis_api::yaml::parse(&text)
                .expect("parse mesh config")
                .remove(0)
                .root
                .to_json()
        });
        if plain {
            total += 1;
        } else {
            needs_total += 1;
        }
        let mut resources = Vec::new();
        for input in case["inputs"].as_array().into_iter().flatten() {
            let rel = input.as_str().unwrap_or("");
            let bytes = std::fs::read(dir.join(rel)).expect("read input");
            resources.extend(trellis_api::load_bytes(rel, &bytes).resources);
        }
        let options = Options {
            default_namespace: None,
            istio_namespace: "istio-system".into(),
            add_ingress_gateway: true,
            pods_from_deployments: false,
            mesh_config,
            only: vec![analyzer.to_string()],
        };
        let got = match analyze(&resources, &options) {
            Ok(messages) => messages,
            Err(e) => {
                misses.push(format!("{id} {analyzer}: {e}"));
                continue;
            }
        };
        let got_keys = got.iter().map(|m| {
            (
                m.code.to_string(),
                m.message_name.to_string(),
                m.level.to_string(),
                m.kind.clone(),
                m.namespace.clone(),
                m.name.clone(),
            )
        });
        let want = multiset(case["expect"].as_array().into_iter().flatten().map(key_of));
        let got = multiset(got_keys);
        if want == got {
            if plain {
                matched += 1;
            } else {
                needs_matched += 1;
            }
        } else {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, n)| got.get(*k) != Some(n))
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, n)| want.get(*k) != Some(n))
                .collect();
            misses.push(format!(
                "{id} {analyzer}: missing {missing:?}; unexpected {extra:?}"
            ));
        }
    }
    let percent = 100.0 * matched as f64 / total.max(1) as f64;
    println!(
        "analyzer conformance: {matched}/{total} in-scope plain-YAML cases match exactly ({percent:.1}%)"
    );
    println!(
        "with a mesh config (--meshConfigFile): {needs_matched}/{needs_total} cases match exactly"
    );
    for miss in &misses {
        println!("  miss: {miss}");
    }
    for skip in &skipped {
        println!("  not run: {skip}");
    }
    assert!(
        percent >= REQUIRED_PERCENT,
        "conformance {percent:.1}% is below {REQUIRED_PERCENT}%"
    );
}
