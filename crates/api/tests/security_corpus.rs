//! Conformance of the security and telemetry kinds (and the Kubernetes subset)
//! against the Istio corpus in `../shared/corpus/istio` (beside the checkout): invalid cases must be
//! rejected, valid configuration and Istio's samples must load without errors.
//!
//! Set `TRELLIS_CORPUS` to the corpus root (the folder holding `istio/`) to use
//! another copy (see `common`); without a corpus the tests print a line and pass.

mod common;

use std::path::{Path, PathBuf};

use common::{diagnose, file_name, header, istio_corpus, kind_of, read, seed_examples, yaml_files};
use trellis_api::{Diagnostic, Severity, load_str};

macro_rules! corpus_or_skip {
    () => {
        match istio_corpus() {
            Some(c) => c,
            None => {
                println!("skipped: the Istio corpus is not present (set TRELLIS_CORPUS)");
                return;
            }
        }
    };
}

fn errors(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
    diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

/// The YAML files below `dir` whose names `keep` accepts, sorted.
fn files(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    yaml_files(dir)
        .into_iter()
        .filter(|p| keep(&file_name(p)))
        .collect()
}

const MY_KINDS: &[&str] = &[
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Telemetry",
    "Namespace",
    "Service",
    "Deployment",
    "Pod",
    "ServiceAccount",
    "Secret",
];

/// Errors that belong to one of the kinds this test covers.
fn my_errors(diags: &[Diagnostic]) -> Vec<String> {
    errors(diags)
        .into_iter()
        .filter(|d| MY_KINDS.contains(&kind_of(d)))
        .map(ToString::to_string)
        .collect()
}

#[test]
fn hand_written_invalid_cases_are_rejected() {
    let root = corpus_or_skip!();
    let cases = files(&root.join("validation/invalid"), &|n| {
        n.starts_with("peerauthentication--")
            || n.starts_with("authorizationpolicy--")
            || n.starts_with("requestauthentication--")
    });
    assert!(!cases.is_empty(), "no cases found");
    let mut misses = Vec::new();
    let mut worded = 0;
    for path in &cases {
        let text = read(path);
        let diags = diagnose(&path.display().to_string(), &text);
        let errs = errors(&diags);
        if errs.is_empty() {
            misses.push(format!(
                "{} ({}): accepted",
                path.display(),
                header(&text, "rule").unwrap_or_else(|| "?".into())
            ));
            continue;
        }
        let expected = header(&text, "expect-webhook-error-contains")
            .or_else(|| header(&text, "expect-crd-error-contains"));
        if expected
            .as_deref()
            .is_none_or(|e| errs.iter().any(|d| d.message.contains(e)))
        {
            worded += 1;
        } else {
            println!(
                "wording differs for {}: expected {:?}, got {:?}",
                path.display(),
                expected,
                errs.iter().map(|d| &d.message).collect::<Vec<_>>()
            );
        }
    }
    println!(
        "invalid cases rejected: {}/{}",
        cases.len() - misses.len(),
        cases.len()
    );
    println!("with the expected wording: {worded}/{}", cases.len());
    assert!(
        misses.is_empty(),
        "accepted invalid cases:\n{}",
        misses.join("\n")
    );
}

#[test]
fn hand_written_valid_cases_have_no_errors() {
    let root = corpus_or_skip!();
    let cases = files(&root.join("validation/valid"), &|n| {
        n.starts_with("ap-") || n.starts_with("pa-") || n.starts_with("ra-")
    });
    assert!(!cases.is_empty(), "no cases found");
    let mut failures = Vec::new();
    for path in &cases {
        let diags = diagnose(&path.display().to_string(), &read(path));
        failures.extend(errors(&diags).into_iter().map(ToString::to_string));
    }
    println!(
        "valid cases accepted: {}/{}",
        cases.len() - failures.len().min(cases.len()),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "errors in valid cases:\n{}",
        failures.join("\n")
    );
}

/// Splits a multi-document file, dropping the `_err:` annotation lines.
fn crd_documents(text: &str) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut expected = String::new();
    let flush = |current: &mut String, expected: &mut String, docs: &mut Vec<_>| {
        if current.lines().any(|l| l.starts_with("kind:")) {
            docs.push((std::mem::take(current), std::mem::take(expected)));
        }
        current.clear();
        expected.clear();
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut current, &mut expected, &mut docs);
        } else if let Some(e) = line.strip_prefix("_err:") {
            expected = e.trim().trim_matches(['"', '\'']).to_string();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current, &mut expected, &mut docs);
    docs
}

const CRD_FIXTURES: &[&str] = &["authz", "peerauth", "reqauth", "telemetry"];

#[test]
fn crd_fixtures_valid_documents_have_no_errors() {
    let root = corpus_or_skip!();
    let mut total = 0;
    let mut failures = Vec::new();
    for name in CRD_FIXTURES {
        let path = root.join(format!("validation/crd-testdata/{name}-valid.yaml"));
        for (doc, _) in crd_documents(&read(&path)) {
            total += 1;
            let diags = diagnose(&path.display().to_string(), &doc);
            failures.extend(errors(&diags).into_iter().map(ToString::to_string));
        }
    }
    println!(
        "crd valid documents accepted: {}/{total}",
        total - failures.len().min(total)
    );
    assert!(
        failures.is_empty(),
        "errors in valid fixtures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn crd_fixtures_invalid_documents_are_rejected() {
    let root = corpus_or_skip!();
    let mut total = 0;
    let mut misses = Vec::new();
    for name in CRD_FIXTURES {
        let path = root.join(format!("validation/crd-testdata/{name}-invalid.yaml"));
        for (doc, expected) in crd_documents(&read(&path)) {
            total += 1;
            let diags = diagnose(&path.display().to_string(), &doc);
            if errors(&diags).is_empty() {
                let name = doc
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("name: "))
                    .unwrap_or("?")
                    .to_string();
                misses.push(format!("{}: {name} (expected: {expected})", path.display()));
            }
        }
    }
    println!(
        "crd invalid documents rejected: {}/{total}",
        total - misses.len()
    );
    assert!(
        misses.is_empty(),
        "accepted invalid fixtures:\n{}",
        misses.join("\n")
    );
}

#[test]
fn examples_and_samples_load_without_errors() {
    let root = corpus_or_skip!();
    let mut paths = files(&root.join("samples"), &|_| true);
    paths.extend(files(&root.join("config-examples/authz-policies"), &|n| {
        n.ends_with("-in.yaml")
    }));
    paths.extend(files(
        &root.join("config-examples/pilot-testdata-config"),
        &|n| n.starts_with("authn") || n.starts_with("peer-authn"),
    ));
    let seed = seed_examples();
    for name in ["06-peerauthentication.yaml", "07-authorizationpolicy.yaml"] {
        let p = seed.join(name);
        if p.is_file() {
            paths.push(p);
        }
    }
    let mut failures = Vec::new();
    let mut resources = 0;
    for path in &paths {
        let text = read(path);
        let loaded = load_str(&path.display().to_string(), &text);
        resources += loaded
            .resources
            .iter()
            .filter(|r| MY_KINDS.contains(&r.kind.as_str()))
            .count();
        failures.extend(my_errors(&diagnose(&path.display().to_string(), &text)));
    }
    println!(
        "files: {}, resources of the covered kinds: {resources}, errors: {}",
        paths.len(),
        failures.len()
    );
    assert!(resources > 0, "no resources of the covered kinds found");
    assert!(failures.is_empty(), "errors:\n{}", failures.join("\n"));
}

#[test]
fn analyzer_inputs_of_the_covered_kinds_type_cleanly() {
    // Analyzer inputs are sometimes semantically wrong on purpose, but each one is
    // something `kubectl apply` accepted, so it must at least load with its types.
    let root = corpus_or_skip!();
    let paths = files(&root.join("analyzers/testdata"), &|_| true);
    let mut failures = Vec::new();
    let mut resources = 0;
    for path in &paths {
        let loaded = load_str(&path.display().to_string(), &read(path));
        resources += loaded
            .resources
            .iter()
            .filter(|r| MY_KINDS.contains(&r.kind.as_str()))
            .count();
        failures.extend(my_errors(&loaded.diagnostics));
    }
    println!(
        "analyzer files: {}, resources of the covered kinds: {resources}, load errors: {}",
        paths.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "load errors:\n{}", failures.join("\n"));
}
