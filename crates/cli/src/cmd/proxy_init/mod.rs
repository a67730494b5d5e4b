//! `trellis proxy init`: programs the pod's network namespace so the app's TCP goes
//! through its sidecar (Istio's init container), by one `iptables-restore --noflush`
//! of the nat table. The rules themselves are [`rules`], a pure function of the flags.
//! IPv6 gets the same rules (`ip6tables-restore`) when the namespace has it.

pub mod rules;

use std::io::Write;
use std::process::{Command, Stdio};

use rules::{Cidr, Family, Port, Rules, Selection, parse_selection};

use crate::output;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Run once per pod, as root, before the app starts (an injected pod's init
container does); then run the proxy with --capture as the proxy's uid. IPv6 is
redirected too (ip6tables-restore) when the namespace has it.

Lists are comma-separated; `*` means all (Istio's annotations:
traffic.sidecar.istio.io/includeOutboundIPRanges, excludeOutboundIPRanges,
excludeOutboundPorts, includeInboundPorts, excludeInboundPorts).

Examples:
  # what an injected pod's init container runs
  trellis proxy init --proxy-uid 1337 --outbound-port 15001 --inbound-port 15006

  # print the rules instead of applying them
  trellis proxy init --exclude-outbound-ip-ranges 10.0.0.0/8 --dry-run

  # also answer the app's DNS queries for mesh names (the proxy listens on 15053)
  trellis proxy init --redirect-dns"
)]
pub struct Args {
    /// The proxy's user id (and, unless --proxy-gid, group id): its own connections are
    /// never captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// Where outbound TCP is redirected (the proxy's outbound capture listener).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Where inbound TCP is redirected (the proxy's inbound capture listener).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Destinations captured outbound (CIDRs, `*` for all; empty captures none).
    #[arg(long, value_name = "CSV", default_value = "*")]
    pub include_outbound_ip_ranges: String,
    /// Destinations never captured outbound (CIDRs).
    #[arg(long, value_name = "CSV", default_value = "")]
    pub exclude_outbound_ip_ranges: String,
    /// Destination ports never captured outbound.
    #[arg(long, value_name = "CSV", default_value = "")]
    pub exclude_outbound_ports: String,
    /// Ports captured inbound (`*` for all but the proxy's own; empty captures none).
    #[arg(long, value_name = "CSV", default_value = "*")]
    pub include_inbound_ports: String,
    /// Ports never captured inbound.
    #[arg(long, value_name = "CSV", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Send the app's DNS queries (UDP port 53) to the proxy's DNS server, which
    /// answers for the mesh's names (on 15053) and asks the resolver for the rest.
    #[arg(long)]
    pub redirect_dns: bool,
    /// The proxy's DNS port, with --redirect-dns.
    #[arg(long, default_value_t = 15053)]
    pub dns_port: u16,
    /// Print the iptables-restore input instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
}

impl Args {
    /// The rules these flags ask for, or the flag whose value is wrong.
    pub fn rules(&self) -> Result<Rules, String> {
        let list = |flag: &str, text: &str| -> Result<Vec<Port>, String> {
            match parse_selection::<Port>(text).map_err(|e| format!("--{flag}: {e}"))? {
                Selection::Only(v) => Ok(v),
                Selection::All => Err(format!("--{flag}: `*` is not allowed here")),
            }
        };
        let ranges = |flag: &str, text: &str| -> Result<Selection<Cidr>, String> {
            parse_selection::<Cidr>(text).map_err(|e| format!("--{flag}: {e}"))
        };
        let exclude_outbound = match ranges(
            "exclude-outbound-ip-ranges",
            &self.exclude_outbound_ip_ranges,
        )? {
            Selection::Only(v) => v,
            Selection::All => {
                return Err(
                        "--exclude-outbound-ip-ranges: `*` is not allowed (use --include-outbound-ip-ranges '')".into(),
                    );
            }
        };
        Ok(Rules {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            include_outbound: ranges(
                "include-outbound-ip-ranges",
                &self.include_outbound_ip_ranges,
            )?,
            exclude_outbound,
            exclude_outbound_ports: list("exclude-outbound-ports", &self.exclude_outbound_ports)?,
            include_inbound_ports: parse_selection::<Port>(&self.include_inbound_ports)
                .map_err(|e| format!("--include-inbound-ports: {e}"))?,
            exclude_inbound_ports: list("exclude-inbound-ports", &self.exclude_inbound_ports)?,
            redirect_dns: self.redirect_dns.then_some(self.dns_port),
        })
    }
}

/// Applies (or prints) the rules; exit code 0 on success.
pub fn run(args: &Args) -> i32 {
    let mut err = anstream::stderr();
    let rules = match args.rules() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 2;
        }
    };
    let ipv6 = super::proxy::ipv6_enabled();
    let input = rules.restore_input(Family::V4);
    let input6 = ipv6.then(|| rules.restore_input(Family::V6));
    if args.dry_run {
        let _ = write!(anstream::stdout(), "{input}");
        if let Some(input6) = &input6 {
            let _ = write!(
                anstream::stdout(),
                "# ip6tables-restore --noflush\n{input6}"
            );
        }
        return 0;
    }
    let applied = restore("iptables-restore", &input).and_then(|()| match &input6 {
        Some(input6) => restore("ip6tables-restore", input6),
        None => Ok(()),
    });
    match applied {
        Ok(()) => {
            let _ = writeln!(
                anstream::stdout(),
                "{s}capture{s:#}: outbound TCP -> :{}, inbound TCP -> :{}{} (uid {} exempt; {})",
                rules.outbound_port,
                rules.inbound_port,
                rules
                    .redirect_dns
                    .map(|p| format!(", DNS -> :{p}"))
                    .unwrap_or_default(),
                rules.proxy_uid,
                if ipv6 { "IPv4 and IPv6" } else { "IPv4" },
                s = output::OK
            );
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            1
        }
    }
}

/// Runs `tool --noflush` with `input` on its standard input.
fn restore(tool: &str, input: &str) -> Result<(), String> {
    let mut child = Command::new(tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e} (is iptables installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{tool}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
