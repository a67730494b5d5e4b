//! `trellis proxy-config`: the configuration the control plane last pushed to one proxy
//! (listeners, routes, clusters, endpoints), as tables or as JSON/YAML. It shows what
//! was sent, not what the proxy runs; `proxy-status` says whether it was applied.
//! `secret` is the exception: the proxy's own certificates, read from it live.

use std::io::Write;

use serde_json::Value;

use super::{Target, call, fail, print_data};
use crate::output::{self, Format};

/// What part of a proxy's config to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    /// The workload certificate and mesh roots the proxy holds (never a key).
    Secret,
    All,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis proxy-config routes productpage-v1-0         where productpage's sidecar sends requests
  trellis proxy-config clusters istio-ingressgateway   the gateway's upstreams and their policies
  trellis proxy-config endpoints reviews-v1-0 -o json
  trellis proxy-config all istio-ingressgateway -o yaml
  trellis proxy-config secret reviews-v1-0             its certificate: SPIFFE id, serial, validity

The configuration shown is the one the control plane last pushed to that proxy
(see `trellis proxy-status` for whether it was applied).")]
pub struct ProxyConfigArgs {
    pub section: Section,
    /// The proxy (pod name, as `trellis proxy-status` lists it).
    pub pod: String,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub cluster: super::ClusterTarget,
}

/// `trellis proxy-config`.
pub fn proxy_config(args: &ProxyConfigArgs) -> i32 {
    if args.section == Section::Secret {
        return secret(args);
    }
    let path = format!("/api/v1/proxies/{}/config", args.pod);
    let (status, config) = match call(&args.target.with(&args.cluster), "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if status == 404 {
        let _ = writeln!(
            anstream::stderr(),
            "{s}error{s:#}: {} (see `trellis proxy-status` for the proxies)",
            config["error"].as_str().unwrap_or("no such proxy"),
            s = output::ERROR
        );
        return 1;
    }
    if status != 200 {
        return fail(&format!("the control plane answered {status}"));
    }
    let endpoints = || -> Vec<Value> {
        config["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c["endpoints"].as_array().into_iter().flatten().map(move |e| {
                    serde_json::json!({"cluster": c["name"], "address": e["address"], "weight": e["weight"], "workload": e["workload"]["name"], "version": e["workload"]["version"]})
                })
            })
            .collect()
    };
    if args.output != Format::Text {
        let value = match args.section {
            Section::Listeners => config["listeners"].clone(),
            Section::Routes => config["routeTables"].clone(),
            Section::Clusters => config["clusters"].clone(),
            Section::Endpoints => Value::Array(endpoints()),
            Section::All | Section::Secret => config.clone(),
        };
        print_data(args.output, &value);
        return 0;
    }
    let mut out = anstream::stdout();
    let show = |s: Section| args.section == s || args.section == Section::All;
    if show(Section::Listeners) {
        let _ = writeln!(
            out,
            "{:<34} {:<24} {:<9} {:<8} {:<24} TLS",
            "LISTENER", "ADDRESS", "DIRECTION", "PROTOCOL", "ROUTES"
        );
        for l in config["listeners"].as_array().into_iter().flatten() {
            // Terminated TLS: the mode and the server names certificates are picked by.
            let tls = match &l["tls"] {
                Value::Object(t) => {
                    let hosts: Vec<&str> = t
                        .get("certificates")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .flat_map(|c| c["sniHosts"].as_array().into_iter().flatten())
                        .filter_map(Value::as_str)
                        .collect();
                    format!(
                        "{} {}",
                        t.get("mode").and_then(Value::as_str).unwrap_or("SIMPLE"),
                        if hosts.is_empty() {
                            "*".to_string()
                        } else {
                            hosts.join(",")
                        }
                    )
                }
                // An inbound listener: the mesh's mTLS mode PeerAuthentication gives it.
                _ if l["direction"] == "inbound" => {
                    let mtls = &config["security"]["mtls"];
                    let port = l["port"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let mode = mtls["ports"][port.as_str()]
                        .as_str()
                        .or_else(|| mtls["mode"].as_str())
                        .unwrap_or("PERMISSIVE");
                    format!("mTLS {}", mode.to_ascii_uppercase())
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<34} {:<24} {:<9} {:<8} {:<24} {tls}",
                l["name"].as_str().unwrap_or_default(),
                l["bind"].as_str().unwrap_or("-"),
                l["direction"].as_str().unwrap_or_default(),
                l["protocol"].as_str().unwrap_or_default(),
                l["routeTable"].as_str().unwrap_or("(tcp)")
            );
        }
        let _ = writeln!(out);
    }
    if show(Section::Routes) {
        let _ = writeln!(
            out,
            "{:<16} {:<44} {:<30} DESTINATIONS",
            "TABLE", "DOMAINS", "MATCH"
        );
        for t in config["routeTables"].as_array().into_iter().flatten() {
            for vh in t["virtualHosts"].as_array().into_iter().flatten() {
                let domains: Vec<&str> = vh["domains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut domains = domains.join(",");
                if domains.len() > 43 {
                    domains.truncate(40);
                    domains.push_str("...");
                }
                for r in vh["routes"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "{:<16} {:<44} {:<30} {}",
                        t["name"].as_str().unwrap_or_default(),
                        domains,
                        describe_match(&r["matches"]),
                        describe_action(&r["action"])
                    );
                }
            }
        }
        let _ = writeln!(out);
    }
    if show(Section::Clusters) {
        let _ = writeln!(
            out,
            "{:<60} {:<8} {:<14} {:>9} {:<8} TLS",
            "CLUSTER", "PROTOCOL", "LB", "ENDPOINTS", "OUTLIER"
        );
        for c in config["clusters"].as_array().into_iter().flatten() {
            let lb = match &c["lb"] {
                Value::String(s) => s.clone(),
                Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
                other => other.to_string(),
            };
            // TLS origination: MUTUAL when a client certificate is presented, and the SNI.
            let tls = match &c["tls"] {
                Value::Object(t) => format!(
                    "{} sni={}{}",
                    if t.contains_key("clientCertPem") {
                        "MUTUAL"
                    } else {
                        "SIMPLE"
                    },
                    t.get("sni").and_then(Value::as_str).unwrap_or_default(),
                    t.get("problem")
                        .and_then(Value::as_str)
                        .map(|p| format!(" (unusable: {p})"))
                        .unwrap_or_default()
                ),
                // The mesh's mTLS: forced, or automatic to the endpoints with a sidecar.
                _ if c["meshTls"].is_object() => {
                    let endpoints = c["endpoints"].as_array().map_or(0, Vec::len);
                    let with = c["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["mtls"] == true)
                        .count();
                    match c["meshTls"]["mode"].as_str() {
                        Some("istio") => "ISTIO_MUTUAL".to_string(),
                        _ => format!("auto mTLS ({with} of {endpoints} endpoints)"),
                    }
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<60} {:<8} {:<14} {:>9} {:<8} {tls}",
                c["name"].as_str().unwrap_or_default(),
                c["protocol"].as_str().unwrap_or_default(),
                lb,
                c["endpoints"].as_array().map_or(0, Vec::len),
                if c["outlier"].is_null() { "-" } else { "on" }
            );
        }
        let _ = writeln!(out);
    }
    if show(Section::Endpoints) {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<8} CLUSTER",
            "ENDPOINT", "WORKLOAD", "VERSION"
        );
        for e in endpoints() {
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<8} {}",
                e["address"].as_str().unwrap_or("-"),
                e["workload"].as_str().unwrap_or("-"),
                e["version"]
                    .as_str()
                    .filter(|v| !v.is_empty())
                    .unwrap_or("-"),
                e["cluster"].as_str().unwrap_or_default()
            );
        }
    }
    0
}

fn describe_match(matches: &Value) -> String {
    let Some(list) = matches.as_array().filter(|l| !l.is_empty()) else {
        return "/*".into();
    };
    let parts: Vec<String> = list
        .iter()
        .map(|m| {
            let mut bits = Vec::new();
            if let Some(uri) = m.get("uri").and_then(Value::as_object) {
                for (how, v) in uri {
                    bits.push(format!("uri {how} {}", v.as_str().unwrap_or_default()));
                }
            }
            for h in m
                .get("headers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                bits.push(format!("header {}", h["name"].as_str().unwrap_or_default()));
            }
            if bits.is_empty() {
                "*".to_string()
            } else {
                bits.join(" & ")
            }
        })
        .collect();
    parts.join(" | ")
}

fn describe_action(action: &Value) -> String {
    if let Some(f) = action.get("forward") {
        let clusters: Vec<String> = f["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}%",
                    c["cluster"].as_str().unwrap_or_default(),
                    c["weight"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        return clusters.join(", ");
    }
    if action.get("redirect").is_some() {
        return "redirect".into();
    }
    if let Some(d) = action.get("directResponse") {
        return format!("direct {}", d["status"]);
    }
    action.to_string()
}

/// `trellis proxy-config secret POD`: the proxy's certificates, as istioctl shows them.
fn secret(args: &ProxyConfigArgs) -> i32 {
    let path = format!("/api/v1/proxies/{}/secret", args.pod);
    let (status, certs) = match call(&args.target.with(&args.cluster), "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if status != 200 {
        let _ = writeln!(
            anstream::stderr(),
            "{s}error{s:#}: {}",
            certs["error"]
                .as_str()
                .unwrap_or("the control plane cannot read that proxy's certificates"),
            s = output::ERROR
        );
        return 1;
    }
    if args.output != Format::Text {
        print_data(args.output, &certs);
        return 0;
    }
    let mut out = anstream::stdout();
    let workload = &certs["workload"];
    if workload.is_null() {
        let _ = writeln!(
            out,
            "{} has no workload certificate (no mesh identity)",
            args.pod
        );
        return 0;
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let _ = writeln!(out, "IDENTITY: {}", text(&workload["identity"]));
    let _ = writeln!(
        out,
        "renews in about {}s (at half its life), expires in {}s",
        workload["renewsInSeconds"].as_u64().unwrap_or(0),
        workload["expiresInSeconds"].as_u64().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "\n{:<16} {:<12} {:<34} {:<26} {:<26}",
        "RESOURCE NAME", "TYPE", "SERIAL NUMBER", "NOT BEFORE", "NOT AFTER"
    );
    let rows = workload["chain"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            (
                if i == 0 { "default" } else { "intermediate" },
                "Cert Chain",
                c,
            )
        })
        .chain(
            certs["roots"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ("ROOTCA", "CA", c)),
        );
    for (name, kind, c) in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<34} {:<26} {:<26}",
            name,
            kind,
            text(&c["serial"]),
            text(&c["notBefore"]),
            text(&c["notAfter"])
        );
    }
    0
}
