//! Where Trellis keeps a user's own files, as kubectl keeps `~/.kube`: `TRELLIS_HOME`,
//! else `~/.trellis` (mode 0700). A running control plane leaves a pointer to its API
//! token there, one file per API address, so the CLI finds the token by the address
//! it talks to; `trellis control-plane` keeps its state (CA, tokens) there by default.

use std::path::{Path, PathBuf};

/// `TRELLIS_HOME`, else `$HOME/.trellis` (or `./.trellis` without a HOME).
pub fn trellis_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRELLIS_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".trellis")
}

/// The pointer file for the API at `address` (`HOST:PORT`).
pub fn credential_pointer(address: &str) -> PathBuf {
    let name: String = address
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    trellis_home().join("credentials").join(name)
}

/// Records that the API at `address` takes the token in `token_file`.
pub fn write_credential_pointer(address: &str, token_file: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let pointer = credential_pointer(address);
    let dir = pointer.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    for d in [dir, dir.parent().unwrap_or(dir)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = pointer.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", token_file.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &pointer)?;
    Ok(pointer)
}

/// The API token for `address`: from `token_file` if given, else `TRELLIS_TOKEN`,
/// else through the pointer a control plane left. `None` when there is none.
pub fn api_token(address: &str, token_file: Option<&Path>) -> Option<String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    if let Some(file) = token_file {
        return read(file);
    }
    if let Some(token) = std::env::var("TRELLIS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Some(token);
    }
    let target = read(&credential_pointer(address))?;
    read(Path::new(&target))
}
