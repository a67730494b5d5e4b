//! Conformance with Istio's validation corpus: every invalid case must be rejected
//! (at least one error from loading or validation), and every valid document, sample
//! and seed example must load and validate without errors (warnings are fine).
//!
//! The corpus lives outside the repository; set `TRELLIS_ISTIO_CORPUS` (or
//! `TRELLIS_CORPUS`, see `common`) and `TRELLIS_SEED_EXAMPLES` to point elsewhere.
//! When it is absent the test says so and passes. Misses are listed per kind; only
//! kinds in `ENFORCED_KINDS` fail it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{diagnose, file_name, header, istio_corpus, kind_of, read, seed_examples, yaml_files};
use trellis_api::values::Duration;
use trellis_api::yaml::{self, Value};
use trellis_api::{Resource, Severity, Spec, load_str};

/// Kinds whose misses fail the test (every kind Trellis types).
const ENFORCED_KINDS: &[&str] = &[
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Telemetry",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "WorkloadEntry",
    "Sidecar",
    "Namespace",
    "Service",
    "Deployment",
    "Pod",
    "ServiceAccount",
    "Secret",
];

/// crd-testdata files for kinds Trellis reports as ignored rather than typing.
const IGNORED_FIXTURES: &[&str] = &["envoyfilter", "wasm", "proxyconfig", "workloadgroup"];

/// Enforced unless the kind is known and not in the list (file-level errors count).
fn enforced(kind: &str) -> bool {
    kind.is_empty() || ENFORCED_KINDS.contains(&kind)
}

/// Every error found loading and validating `text`, as (kind, message).
fn errors(file: &str, text: &str) -> Vec<(String, String)> {
    diagnose(file, text)
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (kind_of(d).to_string(), d.to_string()))
        .collect()
}

/// Results of one group of cases.
#[derive(Default)]
struct Tally {
    total: usize,
    passed: usize,
    /// (kind, description) of each case that went wrong.
    misses: Vec<(String, String)>,
}

impl Tally {
    fn record(&mut self, ok: bool, kind: &str, what: impl FnOnce() -> String) {
        self.total += 1;
        if ok {
            self.passed += 1;
        } else {
            self.misses.push((kind.to_string(), what()));
        }
    }

    /// Prints the summary and misses; returns how many misses are enforced.
    fn report(&self, label: &str) -> usize {
        println!("{label}: {}/{}", self.passed, self.total);
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failing = 0;
        for (kind, what) in &self.misses {
            *by_kind.entry(kind.as_str()).or_default() += 1;
            if enforced(kind) {
                failing += 1;
                println!("  MISS [{kind}] {what}");
            } else {
                println!("  miss (report only) [{kind}] {what}");
            }
        }
        if !by_kind.is_empty() {
            println!("  misses by kind: {by_kind:?}");
        }
        failing
    }
}

/// Hand-written invalid cases: each file must produce at least one error.
fn invalid_cases(corpus: &Path, wording: &mut Tally) -> Tally {
    let mut tally = Tally::default();
    for path in yaml_files(&corpus.join("validation/invalid")) {
        let text = read(&path);
        let name = file_name(&path);
        let kind = header(&text, "kind").unwrap_or_default();
        let found = errors(&name, &text);
        tally.record(!found.is_empty(), &kind, || {
            format!(
                "{name}: accepted, expected rejection ({})",
                header(&text, "rule").unwrap_or_default()
            )
        });
        if let Some(expected) = header(&text, "expect-webhook-error-contains") {
            let matched = found.iter().any(|(_, m)| m.contains(&expected));
            wording.record(matched, &kind, || {
                format!(
                    "{name}: no error contains {expected:?}; got {:?}",
                    found.iter().map(|(_, m)| m).collect::<Vec<_>>()
                )
            });
        }
    }
    tally
}

/// The documents of a crd-testdata file, without their `_err` annotations.
fn fixture_docs(text: &str) -> Vec<(String, String)> {
    let Ok(docs) = yaml::parse(text) else {
        return vec![(String::new(), text.to_string())];
    };
    docs.into_iter()
        .map(|mut doc| {
            if let Value::Map(entries) = &mut doc.root.value {
                entries.retain(|(k, _)| k.text != "_err");
            }
            let kind = doc
                .root
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            (kind, doc.root.to_json().to_string())
        })
        .collect()
}

/// Istio's CRD fixtures: every `*-invalid` document rejected, every `*-valid` one accepted.
fn crd_fixtures(corpus: &Path) -> (Tally, Tally) {
    let (mut invalid, mut valid) = (Tally::default(), Tally::default());
    for path in yaml_files(&corpus.join("validation/crd-testdata")) {
        let name = file_name(&path);
        let stem = name.split('-').next().unwrap_or("");
        if IGNORED_FIXTURES.contains(&stem) {
            println!("skipping {name}: its kind is reported as ignored by Trellis");
            continue;
        }
        let text = read(&path);
        let is_invalid = name.ends_with("-invalid.yaml");
        for (i, (kind, doc)) in fixture_docs(&text).into_iter().enumerate() {
            let label = format!("{name} document {}", i + 1);
            let found = errors(&label, &doc);
            if is_invalid {
                invalid.record(!found.is_empty(), &kind, || {
                    format!("{label}: accepted, expected rejection")
                });
            } else {
                let kind = found.first().map_or(kind, |(k, _)| {
                    if k.is_empty() {
                        String::new()
                    } else {
                        k.clone()
                    }
                });
                valid.record(found.is_empty(), &kind, || {
                    format!(
                        "{label}: {:?}",
                        found.iter().map(|(_, m)| m).collect::<Vec<_>>()
                    )
                });
            }
        }
    }
    (invalid, valid)
}

/// The typed spec written back as JSON, for the kinds whose every field is typed.
fn typed_spec(r: &Resource) -> Option<serde_json::Value> {
    match &r.spec {
        Spec::Gateway(s) => serde_json::to_value(s).ok(),
        Spec::VirtualService(s) => serde_json::to_value(s).ok(),
        Spec::DestinationRule(s) => serde_json::to_value(s).ok(),
        Spec::ServiceEntry(s) => serde_json::to_value(s).ok(),
        Spec::WorkloadEntry(s) => serde_json::to_value(s).ok(),
        Spec::Sidecar(s) => serde_json::to_value(s).ok(),
        _ => None,
    }
}

/// The first path where `written` and `typed` differ, treating numbers by value,
/// durations by length (`1m` is `60s`), and null, empty or zero fields as absent.
fn round_trip_difference(
    path: &str,
    written: &serde_json::Value,
    typed: &serde_json::Value,
) -> Option<String> {
    use serde_json::Value as J;
    let absent = |v: &J| match v {
        J::Null => true,
        J::Bool(b) => !b,
        J::Number(n) => n.as_f64() == Some(0.0),
        J::String(s) => s.is_empty(),
        J::Array(a) => a.is_empty(),
        J::Object(o) => o.is_empty(),
    };
    match (written, typed) {
        (J::Object(a), J::Object(b)) => {
            for (k, v) in a {
                let at = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => {
                        if let Some(d) = round_trip_difference(&at, v, w) {
                            return Some(d);
                        }
                    }
                    None if absent(v) => {}
                    None => return Some(format!("{at} (dropped)")),
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| format!("{path}.{k} (added)"))
        }
        (J::Array(a), J::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| round_trip_difference(&format!("{path}[{i}]"), v, w)),
        (J::Number(a), J::Number(b)) if a.as_f64() == b.as_f64() => None,
        (J::String(a), J::String(b)) if a == b => None,
        (J::String(a), J::String(b)) => match (Duration::parse(a), Duration::parse(b)) {
            (Ok(x), Ok(y)) if x == y => None,
            _ => Some(path.to_string()),
        },
        _ if written == typed => None,
        _ => Some(path.to_string()),
    }
}

/// Every file under `dir` must load and validate without errors, and its typed
/// resources must write back what was read.
fn valid_files(dir: &Path, base: &Path, tally: &mut Tally) {
    for path in yaml_files(dir) {
        let text = read(&path);
        let name = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut found = errors(&name, &text);
        for r in load_str(&name, &text).resources {
            let written = r.raw.get("spec").cloned().unwrap_or_default();
            if let Some(typed) = typed_spec(&r)
                && let Some(at) = round_trip_difference("spec", &written, &typed)
            {
                found.push((
                    r.kind.clone(),
                    format!("{}: {at} does not round-trip", r.key()),
                ));
            }
        }
        if found.is_empty() {
            tally.record(true, "", String::new);
        }
        // One miss per kind that went wrong in the file.
        let mut kinds: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        kinds.dedup();
        for kind in kinds {
            let messages: Vec<&String> = found
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, m)| m)
                .collect();
            tally.record(false, kind, || format!("{name}: {messages:?}"));
        }
    }
}

#[test]
fn istio_validation_corpus() {
    let Some(corpus) = istio_corpus() else {
        println!("Istio corpus not found; skipping the validation corpus test");
        return;
    };
    println!(
        "validation corpus at {}; enforced kinds: {ENFORCED_KINDS:?}",
        corpus.display()
    );
    let mut failing = 0;
    let mut wording = Tally::default();
    failing +=
        invalid_cases(&corpus, &mut wording).report("invalid cases rejected (validation/invalid)");
    wording.report("  expected wording found (report only)");
    let (crd_invalid, crd_valid) = crd_fixtures(&corpus);
    failing += crd_invalid.report("CRD fixtures rejected (crd-testdata/*-invalid)");
    failing += crd_valid.report("CRD fixtures accepted (crd-testdata/*-valid)");
    let mut valid = Tally::default();
    valid_files(&corpus.join("validation/valid"), &corpus, &mut valid);
    failing += valid.report("valid cases accepted (validation/valid)");
    let mut samples = Tally::default();
    valid_files(&corpus.join("samples"), &corpus, &mut samples);
    failing += samples.report("Istio samples accepted (samples/)");
    let seeds = seed_examples();
    if seeds.is_dir() {
        let mut tally = Tally::default();
        valid_files(&seeds, &seeds, &mut tally);
        failing += tally.report("seed examples accepted");
    } else {
        println!(
            "seed examples not found at {}; skipping them",
            seeds.display()
        );
    }
    assert_eq!(
        failing, 0,
        "{failing} enforced corpus cases went wrong; see the MISS lines above"
    );
}

/// A mix of networking resources, repeated, must validate well under a second.
#[test]
fn validating_ten_thousand_resources_is_fast() {
    let doc = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /api}
      headers: {x-user: {regex: "^[a-z]+$"}}
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,reset"}
    route:
    - destination: {host: cart.shop.svc.cluster.local, subset: stable}
      weight: 90
    - destination: {host: cart.shop.svc.cluster.local, subset: canary}
      weight: 10
  - route:
    - destination: {host: cart.shop.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart.shop.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}
  subsets:
  - {name: stable, labels: {version: v1}}
  - {name: canary, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    let text = vec![doc; 2500].join("---\n");
    let loaded = load_str("many.yaml", &text);
    assert_eq!(
        loaded.resources.len(),
        10_000,
        "{:?}",
        loaded.diagnostics.first()
    );
    let errors: usize = loaded
        .resources
        .iter()
        .map(|r| {
            r.validate()
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
        })
        .sum();
    // Timing is measured by `cargo bench -p trellis-analyze --bench ten_thousand`, not here.
    assert_eq!(errors, 0);
}

#[test]
fn round_trip_comparison_sees_dropped_and_changed_fields() {
    let j = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");
    let same = |a: &str, b: &str| round_trip_difference("spec", &j(a), &j(b));
    assert_eq!(
        same(
            r#"{"a": 1, "t": "1m", "e": [], "n": null}"#,
            r#"{"a": 1.0, "t": "60s"}"#
        ),
        None
    );
    assert_eq!(
        same(r#"{"a": 1}"#, r#"{}"#).as_deref(),
        Some("spec.a (dropped)")
    );
    assert_eq!(
        same(r#"{"a": [{"b": "x"}]}"#, r#"{"a": [{"b": "y"}]}"#).as_deref(),
        Some("spec.a[0].b")
    );
    assert_eq!(
        same(r#"{}"#, r#"{"c": true}"#).as_deref(),
        Some("spec.c (added)")
    );
}
