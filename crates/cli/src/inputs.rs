//! Reading what the user points at: files, directories (recursively) and `-` for stdin,
//! loaded into resources with every problem tied to a file and line.

use std::io::Read;
use std::path::PathBuf;

use trellis_api::{Loaded, load_bytes};
use trellis_control::source::io_problem;

/// Loads every file under `paths` (directories as the control plane reads them, see
/// `trellis_control::source`); I/O problems become diagnostics, not panics.
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
        let (more, count) = trellis_control::source::load_path(path);
        loaded.extend(more);
        files += count;
    }
    (loaded, files)
}
