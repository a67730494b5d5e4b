//! Reading configuration from the file system: files and directories (recursively,
//! `*.yaml`, `*.yml`, `*.json`, hidden entries skipped) loaded into resources with every
//! problem tied to a file and line, plus a cheap fingerprint to notice edits.
//!
//! Loading is the same for `trellis validate`, `trellis apply` and the watched
//! directory, so a file is judged the same way wherever it is given.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use trellis_api::{Diagnostic, Loaded, Resource, Severity, load_bytes};

/// Extensions picked up when walking a directory.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Why the files under a path cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("cannot list directory: {0}")]
    List(std::io::Error),
}

/// The files under `path` that loading reads, in a stable order. A path named
/// directly is read whatever its extension.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, ListError> {
    let mut out = Vec::new();
    collect(path, true, &mut out)?;
    Ok(out)
}

/// Loads one path (file or directory); I/O problems become diagnostics, not panics.
/// Returns what was loaded and how many files were read.
pub fn load_path(path: &Path) -> (Loaded, usize) {
    let mut loaded = Loaded::default();
    let found = match files(path) {
        Ok(f) => f,
        Err(e) => {
            loaded
                .diagnostics
                .push(io_problem(&path.display().to_string(), &e.to_string()));
            return (loaded, 0);
        }
    };
    let count = found.len();
    for file in found {
        let name = file.display().to_string();
        match std::fs::read(&file) {
            Ok(bytes) => loaded.extend(load_bytes(&name, &bytes)),
            Err(e) => loaded.diagnostics.push(io_problem(&name, &e.to_string())),
        }
    }
    (loaded, count)
}

fn collect(path: &Path, named: bool, out: &mut Vec<PathBuf>) -> Result<(), ListError> {
    let meta = std::fs::metadata(path).map_err(ListError::Read)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(ListError::List)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect(&entry, false, out)?;
            }
        }
    } else if named
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// A problem reading a file, as a diagnostic without a line.
pub fn io_problem(file: &str, message: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.into(),
        line: 0,
        resource: None,
        path: None,
        message: message.to_string(),
    }
}

/// Every error of loading and of each resource's validation, the rules of
/// `trellis validate`; the resources when there is none.
pub fn validated(loaded: Loaded) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    let mut problems: Vec<Diagnostic> = loaded
        .diagnostics
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    for r in &loaded.resources {
        problems.extend(
            r.validate()
                .into_iter()
                .filter(|d| d.severity == Severity::Error),
        );
    }
    if problems.is_empty() {
        Ok(loaded.resources)
    } else {
        Err(problems)
    }
}

/// "the configuration is invalid:" and one indented line per problem.
pub fn invalid_message(problems: &[Diagnostic]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!("the configuration is invalid:\n  {}", lines.join("\n  "))
}

/// Names, sizes and modification times of every file under `path`: when this
/// changes, the directory was edited.
pub fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if p == path || is_manifest(&p) {
            // Only what is loaded counts: a log written beside the manifests is not an edit.
            out.push((
                p,
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
    }
    out.sort();
    out
}

/// True for a file the directory loader reads (by extension, not hidden).
fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
}

/// Loads and validates `path` file by file, keeping each resource without its YAML
/// tree (see [`slim`]): a large directory never holds every file's tree at once.
pub fn load_validated(path: &Path) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    let found =
        files(path).map_err(|e| vec![io_problem(&path.display().to_string(), &e.to_string())])?;
    let mut problems = Vec::new();
    let mut resources = Vec::new();
    for file in found {
        let name = file.display().to_string();
        let loaded = match std::fs::read(&file) {
            Ok(bytes) => load_bytes(&name, &bytes),
            Err(e) => {
                problems.push(io_problem(&name, &e.to_string()));
                continue;
            }
        };
        match validated(loaded) {
            Ok(rs) => resources.extend(rs.into_iter().map(slim)),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(problems)
    }
}

/// Drops a resource's YAML tree: it only maps field paths to lines for diagnostics,
/// which are given before a resource is stored (`source` keeps its file and line).
/// With tens of thousands of resources this is most of their memory.
pub fn slim(mut r: Resource) -> Resource {
    r.node = std::sync::Arc::new(trellis_api::yaml::Node {
        value: trellis_api::yaml::Value::Null,
        line: r.source.line,
        col: 1,
    });
    r
}

/// Whether proxies enforce the security policies they are sent: they do (mTLS modes
/// on inbound listeners, JWT and authorization in the request and TCP paths); the
/// notices below are kept for a kind that might be compiled before it is enforced.
pub const fn security_enforced() -> bool {
    true
}

/// The security kinds: validated, stored, analysed and compiled into proxy configs;
/// enforced when [`security_enforced`] says so.
pub const NOT_ENFORCED_KINDS: [&str; 3] = [
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
];

/// The resources among `resources` whose kind is not enforced yet (`Kind ns/name`);
/// none once [`security_enforced`].
pub fn not_enforced(resources: &[Resource]) -> Vec<String> {
    if security_enforced() {
        return Vec::new();
    }
    resources
        .iter()
        .filter(|r| NOT_ENFORCED_KINDS.contains(&r.kind.as_str()))
        .map(Resource::key)
        .collect()
}

/// The note `trellis apply` prints beside a resource of `kind`, if any.
pub fn apply_note(kind: &str) -> Option<&'static str> {
    (!security_enforced() && NOT_ENFORCED_KINDS.contains(&kind))
        .then_some("accepted and compiled, not enforced yet: proxies do not evaluate it yet")
}

/// One line saying which security policies are not enforced, or `None`.
pub fn not_enforced_warning(resources: &[Resource]) -> Option<String> {
    let names = not_enforced(resources);
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "{} security {} accepted and compiled but NOT enforced yet (the proxies do not evaluate them yet): {}",
        names.len(),
        if names.len() == 1 {
            "policy is"
        } else {
            "policies are"
        },
        names.join(", ")
    ))
}

/// What to say when `resources` are loaded: that security policies are not enforced
/// yet, and that each CUSTOM AuthorizationPolicy denies what it matches.
pub fn security_warnings(resources: &[Resource]) -> Vec<String> {
    let mut out: Vec<String> = not_enforced_warning(resources).into_iter().collect();
    out.extend(custom_warnings(resources));
    out
}

/// One line per CUSTOM AuthorizationPolicy among `resources`: it denies what it matches.
pub fn custom_warnings(resources: &[Resource]) -> Vec<String> {
    resources
        .iter()
        .filter_map(|r| match &r.spec {
            trellis_api::Spec::AuthorizationPolicy(ap)
                if ap.action == trellis_api::security::Action::Custom =>
            {
                Some(format!(
                    "{}: {}",
                    r.key(),
                    trellis_compile::CUSTOM_NOT_SUPPORTED
                ))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_security_policies_warns_only_about_what_custom_does() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ext\n  namespace: shop\nspec:\n  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - {}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: shop\nspec:\n  mtls:\n    mode: STRICT\n";
        let resources = trellis_api::resource::load_str("p.yaml", yaml).resources;
        let warnings = security_warnings(&resources);
        // Every kind is enforced: the only warning is CUSTOM's.
        assert_eq!(
            warnings,
            [
                "AuthorizationPolicy shop/ext: CUSTOM: no extension provider is supported yet; matching requests are denied"
            ]
        );
        assert_eq!(apply_note("PeerAuthentication"), None);
        assert_eq!(apply_note("VirtualService"), None);
    }
}
