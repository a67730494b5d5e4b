//! `trellis proxy --standalone DIR`: the proxy's config compiled from a directory of
//! Istio and Kubernetes YAML, without a control plane, and followed as the directory
//! changes (a rejected edit leaves the running config in force).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use trellis_compile::Mesh;
use trellis_model::ProxyConfig;
use trellis_proxy::Proxy;

use super::proxy::{Args, Role, identity, ipv6_enabled, parse_inbound, parse_port_map};
use crate::output;

pub(super) fn initial_config(args: &Args, version: u64) -> Result<ProxyConfig, String> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let docs = trellis_api::yaml::parse(&text)
            .map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
        let doc = docs
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: empty", path.display()))?;
        return serde_json::from_value(doc.root.to_json())
            .map_err(|e| format!("{}: not a ProxyConfig: {e}", path.display()));
    }
    compile(args, version)
}

/// Loads, validates and compiles the standalone directory.
fn compile(args: &Args, version: u64) -> Result<ProxyConfig, String> {
    let dir = args
        .standalone
        .as_ref()
        .ok_or("either --standalone DIR or --config FILE is required")?;
    let resources = super::up::load_valid(std::slice::from_ref(dir))?;
    for warning in trellis_control::source::security_warnings(&resources) {
        let _ = writeln!(
            anstream::stderr(),
            "{s}warning{s:#}: {warning}",
            s = output::WARNING
        );
    }
    let mesh = Mesh::new(&resources, vec![]);
    let who = identity(args)?;
    let (config, notes) = match args.role {
        Role::Gateway => {
            let ports = parse_port_map(&args.port_map)?;
            trellis_compile::gateway(&mesh, &who, &ports, version)
        }
        Role::Sidecar if args.capture => {
            let mut inbound = parse_inbound(&args.inbound)?;
            if inbound.is_empty() {
                inbound = trellis_compile::inbound_ports(&mesh, &who, &BTreeMap::new());
            }
            let (mut config, mut notes) =
                trellis_compile::sidecar(&mesh, &who, args.listen, &inbound, version);
            let options = trellis_compile::CaptureOptions {
                ipv6: ipv6_enabled(),
                ..Default::default()
            };
            notes.extend(trellis_compile::capture(&mesh, &who, &mut config, &options));
            (config, notes)
        }
        Role::Sidecar => {
            let inbound = parse_inbound(&args.inbound)?;
            trellis_compile::sidecar(&mesh, &who, args.listen, &inbound, version)
        }
    };
    for n in notes {
        let _ = writeln!(
            anstream::stderr(),
            "{s}note{s:#}: {}: {}",
            n.resource,
            n.message,
            s = output::WARNING
        );
    }
    Ok(config)
}

pub(super) fn parse_pairs(text: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    text.split(sep)
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("`{p}` is not KEY=VALUE"))
        })
        .collect()
}

/// Re-reads the directory when it changes (a bad edit is reported and ignored), until
/// a signal asks the proxy to stop (none: no handlers, so until killed).
pub(super) fn watch(
    args: &Args,
    proxy: &Proxy,
    signals: &std::sync::mpsc::Receiver<crate::signals::Stop>,
) -> Option<crate::signals::Stop> {
    let mut seen = fingerprint(args);
    let mut version = 1;
    let mut handled = true;
    loop {
        if handled {
            match signals.recv_timeout(Duration::from_millis(500)) {
                Ok(signal) => return Some(signal),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => handled = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        let now = fingerprint(args);
        if now == seen {
            continue;
        }
        seen = now;
        version += 1;
        let mut err = anstream::stderr();
        match compile(args, version).and_then(|c| proxy.update(c).map_err(|e| e.to_string())) {
            Ok(()) => {
                let _ = writeln!(
                    err,
                    "{s}reloaded{s:#} configuration (version {version})",
                    s = output::OK
                );
            }
            Err(e) => {
                let _ = writeln!(
                    err,
                    "{s}rejected{s:#} the new configuration; the previous one stays in force: {e}",
                    s = output::ERROR
                );
            }
        }
    }
}

/// Names, sizes and modification times of every file under the standalone path.
fn fingerprint(args: &Args) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    args.standalone
        .as_deref()
        .map(trellis_control::source::fingerprint)
        .unwrap_or_default()
}
