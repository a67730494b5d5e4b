//! Reading what the user points at: files, directories (recursively) and `-` for stdin,
//! loaded into resources with every problem tied to a file and line.

use std::io::Read;
use std::path::{Path, PathBuf};

use trellis_api::{Loaded, Severity, load_bytes};

/// Extensions picked up when walking a directory.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Loads every file under `paths`; I/O problems become diagnostics, not panics.
pub fn load(paths: &[PathBuf]) -> (Loaded, usize) {
    let mut loaded = Loaded::default();
    let mut files = 0;
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin().read_to_end(&mut bytes) {
                Ok(_) => loaded.extend(load_bytes("-", &bytes)),
                Err(e) => loaded.diagnostics.push(io_problem("-", &e.to_string())),
            }
            files += 1;
            continue;
        }
        let mut found = Vec::new();
        if let Err(e) = collect(path, true, &mut found) {
            loaded
                .diagnostics
                .push(io_problem(&path.display().to_string(), &e));
            continue;
        }
        for file in found {
            files += 1;
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => loaded.extend(load_bytes(&name, &bytes)),
                Err(e) => loaded.diagnostics.push(io_problem(&name, &e.to_string())),
            }
        }
    }
    (loaded, files)
}

fn collect(path: &Path, named: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot list directory: {e}"))?
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

fn io_problem(file: &str, message: &str) -> trellis_api::Diagnostic {
    trellis_api::Diagnostic {
        severity: Severity::Error,
        file: file.into(),
        line: 0,
        resource: None,
        path: None,
        message: message.to_string(),
    }
}
