//! Where the tests find Istio's files and the seed examples: the folders the
//! environment names, else `../shared/...` beside the checkout. They are read, never
//! copied into the repository; a test without them skips with a line saying so.

use std::path::{Path, PathBuf};

/// Istio's `crd-all.gen.yaml`: in `crds/` of the corpus `TRELLIS_ISTIO_CORPUS` names,
/// else of `istio/` in `TRELLIS_CORPUS`, else of `../shared/corpus/istio`.
pub fn istio_crd_file() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    [
        env("TRELLIS_ISTIO_CORPUS"),
        env("TRELLIS_CORPUS").map(|p| p.join("istio")),
        Some(beside_checkout("corpus/istio")),
    ]
    .into_iter()
    .flatten()
    .map(|corpus| corpus.join("crds/crd-all.gen.yaml"))
    .find(|file| file.is_file())
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
