//! The capture tests' pods: network namespaces joined by a bridge, processes started
//! in them (the proxy as uid 1337), all removed when the test ends, also on a panic.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::{Running, output_lines_echoed, wait_for_line};
use super::{CLIENT_IP, CLIENT_IP6, INFRA_IP, SERVER_EXCLUDED_IP, SERVER_IP, SERVER_IP6};

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Two pods and the network between them: network namespaces joined by a bridge in
/// a third (`infra`, where a control plane can run, at [`INFRA_IP`]). Deleted, with
/// every process in them, when dropped, so also when the test panics.
pub struct Pods {
    pub client: String,
    pub server: String,
    pub infra: String,
    processes: Vec<Running>,
}

impl Pods {
    pub fn new() -> Pods {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let pods = Pods {
            client: format!("trellis-client-{tag}"),
            server: format!("trellis-server-{tag}"),
            infra: format!("trellis-infra-{tag}"),
            processes: Vec::new(),
        };
        let infra = pods.infra.as_str();
        for ns in [&pods.client, &pods.server, &pods.infra] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run("ip", &["-n", infra, "link", "add", "br0", "type", "bridge"]);
        run(
            "ip",
            &[
                "-n",
                infra,
                "addr",
                "add",
                &format!("{INFRA_IP}/24"),
                "dev",
                "br0",
            ],
        );
        run("ip", &["-n", infra, "link", "set", "br0", "up"]);
        for (ns, port, addrs) in [
            (
                &pods.client,
                "client",
                vec![format!("{CLIENT_IP}/24"), format!("{CLIENT_IP6}/64")],
            ),
            (
                &pods.server,
                "server",
                vec![
                    format!("{SERVER_IP}/24"),
                    format!("{SERVER_EXCLUDED_IP}/24"),
                    format!("{SERVER_IP6}/64"),
                ],
            ),
        ] {
            // Made inside the namespaces, so no name is taken in the host's.
            run(
                "ip",
                &[
                    "-n", infra, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ],
            );
            run("ip", &["-n", infra, "link", "set", port, "master", "br0"]);
            run("ip", &["-n", infra, "link", "set", port, "up"]);
            for addr in &addrs {
                // No duplicate-address detection: IPv6 addresses usable at once.
                run(
                    "ip",
                    &["-n", ns, "addr", "add", addr, "dev", "eth0", "nodad"],
                );
            }
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            // Everything off-pod (a cluster IP included) leaves by the bridge.
            run("ip", &["-n", ns, "route", "add", "default", "dev", "eth0"]);
            run(
                "ip",
                &["-n", ns, "-6", "route", "add", "default", "dev", "eth0"],
            );
        }
        // The client app's resolver asks an address nothing answers on: only the
        // proxy's DNS server (its queries redirected) can answer.
        let etc = pods.netns_etc();
        std::fs::create_dir_all(&etc).expect("/etc/netns/NAME");
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {INFRA_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions timeout:1 attempts:1\n"),
        )
        .expect("resolv.conf");
        pods
    }

    /// What `ip netns exec` mounts over /etc in the client pod.
    fn netns_etc(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.client)
    }

    /// Starts `program args` in namespace `ns` (as uid/gid 1337 when `proxy_user`),
    /// waits for a line containing `ready`, and keeps it until the pods go.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        ns: &str,
        proxy_user: bool,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        ready: &str,
        label: &'static str,
    ) -> std::sync::mpsc::Receiver<String> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        if proxy_user {
            command.args([
                "setpriv",
                "--reuid",
                "1337",
                "--regid",
                "1337",
                "--clear-groups",
            ]);
        }
        let mut child = command
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a pod process");
        let rx = output_lines_echoed(&mut child, Some(label));
        self.processes.push(Running(child));
        wait_for_line(&rx, ready);
        rx
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.processes.clear();
        for ns in [&self.client, &self.server, &self.infra] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(self.netns_etc());
    }
}

/// `args` as owned strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs a command, which must succeed.
pub fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{program} {args:?}: {status:?}"
    );
}
