//! `trellis proxy-status`: every connected proxy with the version last pushed and the
//! version it ACKed (SYNCED, STALE, NOT SENT) and a NACK's error. The exit code says
//! whether all are synced.

use std::io::Write;

use super::{Target, call, fail, print_data};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis proxy-status              every connected proxy: SYNCED, STALE or NOT SENT
  trellis proxy-status -o json

SYNCED: the proxy ACKed the last push. STALE: the last push is not ACKed yet, or was
refused (NACK: the proxy keeps its previous configuration; the error is shown), or the
configuration now due failed to compile (nothing is pushed; the error is shown).
Exit codes: 0 all synced, 1 some proxy stale or not sent, 3 unreachable.")]
pub struct ProxyStatusArgs {
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub cluster: super::ClusterTarget,
}

/// `trellis proxy-status`.
pub fn proxy_status(args: &ProxyStatusArgs) -> i32 {
    let (status, answer) = match call(
        &args.target.with(&args.cluster),
        "GET",
        "/api/v1/proxies",
        None,
    ) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if status != 200 {
        return fail(&format!("the control plane answered {status}"));
    }
    let proxies = answer.as_array().cloned().unwrap_or_default();
    let all_synced = proxies.iter().all(|p| p["state"] == "SYNCED");
    if args.output != Format::Text {
        print_data(args.output, &answer);
        return i32::from(!all_synced);
    }
    let mut out = anstream::stdout();
    let _ = writeln!(
        out,
        "{:<28} {:<8} {:<10} {:>8} {:>8} {:>10}  ERROR",
        "NAME", "ROLE", "STATE", "VERSION", "ACKED", "LAST PUSH"
    );
    for p in &proxies {
        let state = p["state"].as_str().unwrap_or_default();
        let style = match state {
            "SYNCED" => output::OK,
            "STALE" => output::ERROR,
            _ => output::WARNING,
        };
        let age = p["lastPushAgeMs"].as_u64().map_or("-".to_string(), |ms| {
            format!("{:.1}s ago", ms as f64 / 1000.0)
        });
        let nack = p["nackError"]
            .as_str()
            .map(|e| format!("NACK v{}: {e}", p["nackVersion"].as_u64().unwrap_or(0)));
        let compile = p["compileError"]
            .as_str()
            .map(|e| format!("compile failed: {e}"));
        let error = [nack, compile]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "{:<28} {:<8} {style}{:<10}{style:#} {:>8} {:>8} {:>10}  {error}",
            p["id"].as_str().unwrap_or_default(),
            p["role"].as_str().unwrap_or_default(),
            state,
            p["version"].as_u64().unwrap_or(0),
            p["ackedVersion"].as_u64().unwrap_or(0),
            age,
        );
    }
    if proxies.is_empty() {
        let _ = writeln!(out, "(no proxy is connected)");
    }
    i32::from(!all_synced)
}
