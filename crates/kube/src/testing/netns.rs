//! Cluster tests run in a network namespace of their own: the API server rejects
//! loopback addresses in EndpointSlices, so pods get addresses in 10.244.0.0/16, which
//! the namespace's loopback device answers for (a `local` route: any address in the
//! range can be bound). Nothing outside the namespace is touched or reachable.

use std::process::Command;

/// The pods' address range inside the namespace.
pub const POD_CIDR: &str = "10.244.0.0/16";

const INSIDE: &str = "TRELLIS_TEST_NETNS";

/// Call first in a cluster test named `test` (its function name). In the test's own
/// process this runs the same test again, alone, in a new network namespace, checks
/// that it passed there, and returns `false` (nothing more to do). In the namespace it
/// sets up loopback and the pod range and returns `true`: go on with the test.
pub fn isolate(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        setup();
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let root = is_root();
    let mut command = Command::new("unshare");
    command.arg("--net");
    if !root {
        command.arg("--map-root-user");
    }
    let status = command
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status();
    match status {
        Ok(s) if s.success() => false,
        Ok(s) => panic!("{test} failed in its network namespace ({s}); its output is above"),
        Err(e) => panic!("cannot run unshare (util-linux) for {test}'s network namespace: {e}"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn setup() {
    let run = |args: &[&str]| {
        let status = Command::new("ip").args(args).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "ip {args:?} in the test's network namespace: {status:?}"
        );
    };
    run(&["link", "set", "lo", "up"]);
    run(&["route", "add", "local", POD_CIDR, "dev", "lo"]);
}
