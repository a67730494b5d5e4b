//! Where the tests find Istio's files and the seed examples: the folders the
//! environment names, else `../shared/...` beside the checkout. They are read, never
//! copied into the repository; a test without them skips with a line saying so.

use std::path::{Path, PathBuf};

/// Istio's corpus (`crds/`, `samples/`, `validation/`, ...): the folder
/// `TRELLIS_ISTIO_CORPUS` names, else `istio/` in `TRELLIS_CORPUS`, else
/// `../shared/corpus/istio`.
pub fn istio_corpus() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    [
        env("TRELLIS_ISTIO_CORPUS"),
        env("TRELLIS_CORPUS").map(|p| p.join("istio")),
        Some(beside_checkout("corpus/istio")),
    ]
    .into_iter()
    .flatten()
    .find(|corpus| corpus.is_dir())
}

/// Istio's `crd-all.gen.yaml`, in `crds/` of the corpus.
pub fn istio_crd_file() -> Option<PathBuf> {
    istio_corpus()
        .map(|corpus| corpus.join("crds/crd-all.gen.yaml"))
        .filter(|file| file.is_file())
}

/// Every `.yaml` file below `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
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

/// The seed examples: `TRELLIS_SEED_EXAMPLES`, else `../shared/seed/examples`.
pub fn seed_examples() -> Option<PathBuf> {
    std::env::var_os("TRELLIS_SEED_EXAMPLES")
        .map_or_else(|| beside_checkout("seed/examples"), PathBuf::from)
        .canonicalize()
        .ok()
        .filter(|dir| dir.is_dir())
}

fn beside_checkout(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}
