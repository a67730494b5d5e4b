//! `trellis demo`: the bundled bookstore application and the seed's traffic
//! configuration, checked end to end and explained.
//!
//! Today it loads, validates and analyzes the demo manifests and prints the routing
//! they ask for. Running the mesh itself (proxies, control plane, live traffic) is
//! not built yet; the command says so rather than pretending.

use std::io::Write;

use trellis_analyze::{Level, Options};
use trellis_api::{Loaded, Severity, load_str};

use crate::output;

const BOOKINFO: &str = include_str!("../../../../demo/bookinfo.yaml");
const TRAFFIC: &str = include_str!("../../../../demo/traffic.yaml");

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis demo            check and explain the demo mesh
  trellis demo --print    print the demo manifests, to edit and feed to `trellis validate -f -`")]
pub struct Args {
    /// Print the bundled manifests instead of checking them.
    #[arg(long)]
    pub print: bool,
}

/// Runs the demo.
pub fn run(args: &Args) -> i32 {
    let mut out = anstream::stdout();
    if args.print {
        let _ = write!(out, "{BOOKINFO}---\n{TRAFFIC}");
        return 0;
    }
    let mut loaded = Loaded::default();
    loaded.extend(load_str("demo/bookinfo.yaml", BOOKINFO));
    loaded.extend(load_str("demo/traffic.yaml", TRAFFIC));
    let mut problems = loaded.diagnostics.clone();
    for r in &loaded.resources {
        problems.extend(r.validate());
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let messages =
        trellis_analyze::analyze(&loaded.resources, &Options::default()).unwrap_or_default();
    let h = output::OK;
    let _ = writeln!(
        out,
        "{h}Trellis demo{h:#}: a bookstore (productpage → details, reviews → ratings) with the seed's traffic rules\n"
    );
    let _ = writeln!(
        out,
        "{} resources loaded from the bundled manifests",
        loaded.resources.len()
    );
    let _ = writeln!(out, "  validate: {errors} errors");
    let _ = writeln!(
        out,
        "  analyze:  {} errors, {} warnings, {} infos",
        messages.iter().filter(|m| m.level == Level::Error).count(),
        messages
            .iter()
            .filter(|m| m.level == Level::Warning)
            .count(),
        messages.iter().filter(|m| m.level == Level::Info).count()
    );
    for p in &problems {
        let _ = writeln!(out, "    {p}");
    }
    for m in &messages {
        let _ = writeln!(out, "    {m}");
    }
    let _ = writeln!(out, "\nWorkloads:");
    for r in loaded.resources.iter().filter(|r| r.kind == "Deployment") {
        let labels = &r.raw["spec"]["template"]["metadata"]["labels"];
        let _ = writeln!(
            out,
            "  {:<16} app={:<12} version={}",
            r.meta.name,
            labels["app"].as_str().unwrap_or("?"),
            labels["version"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(out, "\nRouting:");
    for r in loaded
        .resources
        .iter()
        .filter(|r| r.kind == "VirtualService")
    {
        let hosts: Vec<&str> = r.raw["spec"]["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        let _ = writeln!(out, "  {} ({})", r.meta.name, hosts.join(", "));
        for rule in r.raw["spec"]["http"].as_array().into_iter().flatten() {
            let when = describe_match(&rule["match"]);
            let to: Vec<String> = rule["route"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let dest = &d["destination"];
                    let subset = dest["subset"]
                        .as_str()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    let weight = d["weight"]
                        .as_i64()
                        .map(|w| format!(" {w}%"))
                        .unwrap_or_default();
                    format!("{}{subset}{weight}", dest["host"].as_str().unwrap_or("?"))
                })
                .collect();
            let _ = writeln!(out, "    {when:<28} → {}", to.join(", "));
        }
    }
    let w = output::WARNING;
    let _ = writeln!(
        out,
        "\n{w}Not yet running:{w:#} the proxy (issue 3) and the control plane with `trellis up` (issue 4)\n\
         are still being built, so this demo checks and explains the mesh but sends no traffic.\n\
         Try `trellis demo --print | trellis validate -f -` and edit the manifests to see the errors Trellis gives."
    );
    if errors > 0 { 1 } else { 0 }
}

fn describe_match(matches: &serde_json::Value) -> String {
    let Some(list) = matches.as_array() else {
        return "otherwise".into();
    };
    let parts: Vec<String> = list
        .iter()
        .flat_map(|m| {
            m["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, cond)| {
                    let (op, value) = cond
                        .as_object()
                        .and_then(|c| c.iter().next())
                        .map_or(("", ""), |(k, v)| (k.as_str(), v.as_str().unwrap_or("")));
                    format!("{name} {op} {value}")
                })
        })
        .collect();
    if parts.is_empty() {
        "when matched".into()
    } else {
        format!("when {}", parts.join(" and "))
    }
}
