//! A Pod's own network namespace, as a CNI plugin would make it: a named namespace
//! with `eth0` (a veth whose other end stays in the node's namespace), the Pod's
//! address on it as a /32, and a default route to the node, whose end of every veth
//! holds the gateway address and which routes each Pod's address down its veth
//! (forwarding on). `/etc/netns/NAME/
//! hosts` holds what cluster DNS would answer: `ip netns exec` shows it as the Pod's
//! `/etc/hosts`. Everything is removed on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Pods with a namespace of their own get addresses here (the node's loopback
/// answers for [`super::super::POD_CIDR`], which processes without one use).
pub const NAMESPACED_POD_CIDR: &str = "10.246.0.0/16";

static NEXT: AtomicU32 = AtomicU32::new(1);

/// The gateway every Pod routes through: the node's end of each veth holds it.
const GATEWAY: &str = "169.254.1.1";

/// One Pod's network namespace.
#[derive(Debug)]
pub struct PodNetwork {
    /// The namespace's name (`ip netns exec NAME`).
    pub name: String,
    pub ip: Ipv4Addr,
    node_end: String,
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| format!("{path}: {e}"))
}

impl PodNetwork {
    /// Makes the namespace, its `eth0` and the node's route to it.
    pub fn create() -> Result<PodNetwork, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ip = Ipv4Addr::new(10, 246, (n / 250) as u8, (n % 250 + 1) as u8);
        let name = format!("tpod-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let node_end = format!("tv{}x{n}", pid % 100_000);
        let network = PodNetwork {
            name: name.clone(),
            ip,
            node_end: node_end.clone(),
        };
        sysctl("net/ipv4/ip_forward", "1")?;
        run_ip(&["netns", "add", &name])?;
        run_ip(&[
            "link", "add", &node_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ])?;
        run_ip(&["link", "set", &node_end, "up"])?;
        // The node's end answers as the Pods' gateway, and is the source the node
        // reaches Pods from (its loopback addresses cannot leave it).
        run_ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", &node_end])?;
        run_ip(&["route", "add", &format!("{ip}/32"), "dev", &node_end])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            run_ip(&all)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"])?;
        inside(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"])?;
        std::fs::create_dir_all(network.etc()).map_err(|e| e.to_string())?;
        Ok(network)
    }

    /// `/etc/netns/NAME`: files here replace `/etc`'s inside `ip netns exec`.
    pub fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Writes the Pod's `/etc/hosts`: `localhost`, and each `(name, address)`.
    pub fn write_hosts(&self, entries: &[(String, String)]) -> Result<(), String> {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, address) in entries {
            text.push_str(&format!("{address} {name}\n"));
        }
        // Only when it changed, and in place: a running process's /etc/hosts is a bind
        // mount of this inode, and a lookup that reads it mid-write finds nothing (then
        // waits on a resolver that is not there).
        let path = self.etc().join("hosts");
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        std::fs::write(path, text).map_err(|e| e.to_string())
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = run_ip(&["link", "del", &self.node_end]);
        let _ = run_ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.etc());
    }
}
