//! Conformance with Istio's analyzer test table (../shared/corpus/istio/analyzers/expected.yaml),
//! run through the library with the options `trellis analyze` uses (`Options::default()`:
//! default namespace `default`, Deployment templates as injected pods, the ingress
//! gateway's stand-ins), only the case's analyzer named. Every plain-YAML case whose
//! analyzer concerns what Trellis runs must give exactly Istio's messages, compared as a
//! multiset of (code, name, level, kind, namespace, resource name). The CLI's
//! tests/analyze_corpus.rs runs the same cases through the binary.

use trellis_analyze::conformance::{Tally, cases, corpus_dir, key_of, multiset};
use trellis_analyze::{Options, analyze};

fn mesh_config(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read mesh config");
    trellis_api::yaml::parse(&text)
        .expect("parse mesh config")
        .remove(0)
        .root
        .to_json()
}

#[test]
fn istio_analyzer_cases_match() {
    let Some(dir) = corpus_dir(env!("CARGO_MANIFEST_DIR")) else {
        println!(
            "skipping: ../shared/corpus/istio/analyzers is absent (the corpus ships beside the checkout)"
        );
        return;
    };
    let mut tally = Tally::default();
    for case in cases(&dir) {
        let case = match case {
            Ok(case) => case,
            Err(why) => {
                tally.not_run.push(why);
                continue;
            }
        };
        let mut resources = Vec::new();
        for input in &case.inputs {
            let rel = input.strip_prefix(&dir).unwrap_or(input).to_string_lossy();
            let bytes = std::fs::read(input).expect("read input");
            resources.extend(trellis_api::load_bytes(&rel, &bytes).resources);
        }
        let options = Options {
            only: vec![case.analyzer.clone()],
            mesh_config: case.mesh_config.as_deref().map(mesh_config),
            ..Options::default()
        };
        let miss = match analyze(&resources, &options) {
            Ok(messages) => case.difference(&multiset(messages.iter().map(key_of))),
            Err(e) => Some(format!("{} {}: {e}", case.id, case.analyzer)),
        };
        tally.count(&case, miss);
    }
    tally.print("analyzer conformance (library, the CLI's options)");
    assert!(tally.plain.1 > 0, "no cases found in {}", dir.display());
    assert!(
        tally.misses.is_empty(),
        "{} cases differ from Istio's messages",
        tally.misses.len()
    );
}
