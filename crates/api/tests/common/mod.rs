//! What the corpus tests share: where the Istio corpus and the seed examples are
//! (beside the checkout unless the environment names them), reading their YAML files
//! and `# key: value` headers, and everything loading and validating a text finds.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};

use trellis_api::{Diagnostic, load_str};

/// The Istio corpus (the folder holding `validation/`, `samples/`, ...): the one
/// `TRELLIS_ISTIO_CORPUS` names, else `istio/` in the folder `TRELLIS_CORPUS` names,
/// else `../shared/corpus/istio` beside the checkout; `None` when none of them is there.
pub fn istio_corpus() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    [
        env("TRELLIS_ISTIO_CORPUS"),
        env("TRELLIS_CORPUS").map(|p| p.join("istio")),
        Some(beside_checkout("corpus/istio")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("validation").is_dir())
}

/// The seed examples: the folder `TRELLIS_SEED_EXAMPLES` names, else
/// `../shared/seed/examples` beside the checkout.
pub fn seed_examples() -> PathBuf {
    std::env::var_os("TRELLIS_SEED_EXAMPLES")
        .map_or_else(|| beside_checkout("seed/examples"), PathBuf::from)
}

/// `../shared/<rel>`, beside the checkout.
fn beside_checkout(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

/// Every `.yaml` and `.yml` file below `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's name, without its folder.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
}

/// The text of a corpus file (a test cannot go on without it).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The value of a `# key: value` header line, unquoted.
pub fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("# {key}:");
    let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
    let value = line.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
        .or_else(|| {
            value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"))
        });
    Some(unquoted.unwrap_or_else(|| value.to_string()))
}

/// Everything found in `text`: the load diagnostics, then each resource's validation.
pub fn diagnose(file: &str, text: &str) -> Vec<Diagnostic> {
    let loaded = load_str(file, text);
    let mut out = loaded.diagnostics;
    for r in &loaded.resources {
        out.extend(r.validate());
    }
    out
}

/// The kind a diagnostic belongs to (`""` for problems of the file itself).
pub fn kind_of(d: &Diagnostic) -> &str {
    d.resource
        .as_deref()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
}
