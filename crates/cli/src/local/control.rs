//! The local mesh's control plane: `trellis control-plane` as a child process watching
//! the manifests, restarted when it dies. With `--control-plane-port 0` the OS picks its
//! ports in the child, which writes them to a file the runner reads; a restarted
//! control plane is given the same ports, so proxies and `trellis apply` still find it.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::run::{Options, Supervised, supervise_with};

/// How long the control plane may take to load the manifests and listen.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);

/// Where the local mesh's control plane keeps its CA, bootstrap tokens and API token.
pub fn state_dir(log_dir: &Path) -> std::path::PathBuf {
    log_dir.join("state")
}

/// Starts the control plane and waits until it listens: the supervised process and
/// where it listens (gRPC for the proxies, then the HTTP API).
pub fn start(
    options: &Options,
    stop: Arc<AtomicBool>,
) -> Result<(Supervised, SocketAddr, SocketAddr), String> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = options.control_plane_port;
    let api = SocketAddr::new(localhost, port);
    let grpc = SocketAddr::new(
        localhost,
        if port == 0 { 0 } else { port.saturating_sub(2) },
    );
    if port != 0 {
        for addr in [api, grpc] {
            std::net::TcpListener::bind(addr).map_err(|e| {
                format!("the control plane cannot listen on {addr}: {e} (is another mesh running? try --control-plane-port)")
            })?;
        }
    }
    let addresses_file = options.log_dir.join("control-plane.addresses");
    // One left by an earlier run in the same log directory would be stale.
    let _ = std::fs::remove_file(&addresses_file);
    // What each start is given: the ports asked for, then the ones the first start got.
    let addresses = Arc::new(Mutex::new((grpc, api)));
    let spawn = {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the trellis binary: {e}"))?;
        let log_path = options.log_dir.join("control-plane.log");
        let fixed: Vec<String> = vec![
            "--config".into(),
            options.config_dir.display().to_string(),
            "--state".into(),
            options.log_dir.join("applied.yaml").display().to_string(),
            "--addresses-file".into(),
            addresses_file.display().to_string(),
            "--workloads".into(),
            options.log_dir.join("workloads.json").display().to_string(),
            "--state-dir".into(),
            state_dir(&options.log_dir).display().to_string(),
            "--cert-lifetime".into(),
            options.cert_lifetime.clone(),
            "--exit-with-parent".into(),
        ];
        let addresses = addresses.clone();
        move || -> Result<Child, String> {
            let (grpc, api) = *addresses.lock().unwrap_or_else(|e| e.into_inner());
            let log = File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            Command::new(&exe)
                .arg("control-plane")
                .args(["--grpc", &grpc.to_string(), "--http", &api.to_string()])
                .args(&fixed)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log)
                // Refused edits and NACKs are reported on the terminal of `trellis up`.
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start the control plane: {e}"))
        }
    };
    let supervised = supervise_with("control plane".into(), Box::new(spawn), stop.clone())?;
    match wait_listening(&addresses_file, &supervised) {
        Ok(bound) => {
            *addresses.lock().unwrap_or_else(|e| e.into_inner()) = bound;
            Ok((supervised, bound.0, bound.1))
        }
        Err(e) => {
            stop.store(true, Ordering::Release);
            if let Some(mut child) = supervised
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(e)
        }
    }
}

/// Waits (bounded) for the first control plane to write where it listens.
fn wait_listening(
    file: &Path,
    supervised: &Supervised,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + LISTEN_LIMIT;
    loop {
        if let Some(bound) = read_addresses(file) {
            return Ok(bound);
        }
        let exited = supervised
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || supervised.restarts.load(Ordering::Relaxed) > 0 {
            return Err("the control plane stopped before it listened (see above)".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the control plane did not listen within {LISTEN_LIMIT:?}; see {}",
                file.with_file_name("control-plane.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The addresses `trellis control-plane --addresses-file` wrote: `grpc ADDR` and
/// `http ADDR` lines.
fn read_addresses(file: &Path) -> Option<(SocketAddr, SocketAddr)> {
    let text = std::fs::read_to_string(file).ok()?;
    let (mut grpc, mut http) = (None, None);
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("grpc", addr)) => grpc = addr.parse().ok(),
            Some(("http", addr)) => http = addr.parse().ok(),
            _ => {}
        }
    }
    Some((grpc?, http?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_only_once_both_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("control-plane.addresses");
        assert_eq!(read_addresses(&file), None, "no file yet");
        std::fs::write(&file, "grpc 127.0.0.1:4001\n").expect("write");
        assert_eq!(read_addresses(&file), None, "the HTTP address is missing");
        std::fs::write(&file, "grpc 127.0.0.1:4001\nhttp 127.0.0.1:4002\n").expect("write");
        let grpc: SocketAddr = "127.0.0.1:4001".parse().expect("addr");
        let http: SocketAddr = "127.0.0.1:4002".parse().expect("addr");
        assert_eq!(read_addresses(&file), Some((grpc, http)));
    }
}
