//! Istio's analyzer test table (../shared/corpus/istio/analyzers/expected.yaml) through the
//! binary, as a user runs it: `trellis analyze --analyzer NAME -f INPUT... -o json` in the
//! corpus directory, with `--meshConfigFile` where a case needs a mesh config and no other
//! option (so the CLI's defaults hold: namespace `default`, Deployment templates analyzed
//! as injected pods). Every plain-YAML case whose analyzer concerns what Trellis runs must
//! print exactly Istio's messages (code, name, level, kind, namespace, resource name; a
//! namespace-less document reads `default`, as istioctl prints it).

use std::path::Path;
use std::process::Command;

use trellis_analyze::conformance::{Case, Tally, cases, corpus_dir, key_of_json, multiset};

/// Runs one case; `None` when the binary printed exactly the expected messages.
fn run(dir: &Path, case: &Case) -> Option<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
    cmd.current_dir(dir).env("NO_COLOR", "1").args([
        "analyze",
        "--analyzer",
        &case.analyzer,
        "-o",
        "json",
    ]);
    for input in &case.inputs {
        cmd.arg("-f").arg(input.strip_prefix(dir).unwrap_or(input));
    }
    if let Some(mesh_config) = &case.mesh_config {
        let relative = mesh_config.strip_prefix(dir).unwrap_or(mesh_config);
        cmd.arg("--meshConfigFile").arg(relative);
    }
    let out = cmd.output().expect("run trellis analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: no Error among the messages, 1: an Error; anything else is a usage problem.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Some(format!(
            "{} {}: exit {:?}: {stderr}",
            case.id, case.analyzer, out.status
        ));
    }
    let printed: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            return Some(format!(
                "{} {}: output is not JSON ({e})",
                case.id, case.analyzer
            ));
        }
    };
    let messages = printed.as_array().into_iter().flatten().map(key_of_json);
    case.difference(&multiset(messages))
        .map(|miss| format!("{miss}; stderr: {stderr}"))
}

#[test]
fn istio_analyzer_cases_match_through_the_binary() {
    let Some(dir) = corpus_dir(env!("CARGO_MANIFEST_DIR")) else {
        println!(
            "skipping: ../shared/corpus/istio/analyzers is absent (the corpus ships beside the checkout)"
        );
        return;
    };
    let mut tally = Tally::default();
    for case in cases(&dir) {
        match case {
            Ok(case) => {
                let miss = run(&dir, &case);
                tally.count(&case, miss);
            }
            Err(why) => tally.not_run.push(why),
        }
    }
    tally.print("trellis analyze on Istio's analyzer cases");
    assert!(tally.plain.1 > 0, "no cases found in {}", dir.display());
    assert!(
        tally.misses.is_empty(),
        "{} cases differ from Istio's messages",
        tally.misses.len()
    );
}
