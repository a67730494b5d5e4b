//! The control plane and the commands that talk to it: `trellis control-plane`,
//! `apply`, `delete`, `get`, `proxy-status` and `proxy-config`. The client commands
//! speak the control plane's JSON API (see `trellis_control::api`) over plain HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::output::{self, Format};

/// Where the client commands find the control plane's API unless told otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:15014";

/// Exit code when the control plane cannot be reached or answers with an error.
pub const UNREACHABLE: i32 = 3;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis control-plane --config ./mesh       watch ./mesh; proxies connect to 127.0.0.1:15012
  trellis control-plane --config ./mesh --state /var/lib/trellis/applied.yaml
  trellis proxy --control-plane 127.0.0.1:15012 --role gateway --port-map 80=8080

The HTTP API (apply, delete, get, proxy-status, proxy-config) and Prometheus metrics
(/metrics: pushes, push latency, connected proxies, config errors) share --http.
Edits to --config take effect within a second; an invalid edit is refused whole and
the running configuration stays.")]
pub struct ControlPlaneArgs {
    /// Directory (or file) of manifests to serve and watch.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Address proxies connect to (gRPC).
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub grpc: SocketAddr,
    /// Address of the HTTP API and /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http: SocketAddr,
    /// File where resources added with `trellis apply` are kept across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Stop when the process that started this one exits (how `trellis up` runs it).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn control_plane(args: &ControlPlaneArgs) -> i32 {
    // Warnings, and what became of the watched directory's edits (`trellis up` shows
    // them on its terminal).
    crate::cmd::proxy::init_logging_or(&format!("warn,{}=info", trellis_control::CONFIG_LOG));
    let stop = crate::signals::stop_flag();
    let options = trellis_control::Options {
        config_dir: args.config.clone(),
        grpc: args.grpc,
        http: args.http,
        state_file: args.state.clone(),
    };
    let running = match trellis_control::spawn(options) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "{s}error{s:#}: {e}", s = output::ERROR);
            return 1;
        }
    };
    let _ = writeln!(
        anstream::stdout(),
        "{s}trellis control-plane{s:#} ready: {} resources; proxies connect to {}, API and metrics on http://{}/",
        running.control.resources().len(),
        running.grpc,
        running.http,
        s = output::OK
    );
    let parent = std::os::unix::process::parent_id();
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if args.exit_with_parent && std::os::unix::process::parent_id() != parent {
            break;
        }
    }
    drop(running);
    0
}

/// Where a client command sends its requests.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The control plane's HTTP API (also from TRELLIS_CONTROL_PLANE).
    #[arg(long, env = "TRELLIS_CONTROL_PLANE", default_value = DEFAULT_API, value_name = "HOST:PORT")]
    pub control_plane: String,
}

/// A JSON API call: status code and body.
pub fn call(
    target: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let host = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("`{host}` is not a HOST:PORT address: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` has no address"))?;
    let unreachable = |e: std::io::Error| {
        format!(
            "cannot reach the control plane at {host}: {e} (is `trellis up` or `trellis control-plane` running? --control-plane picks another address)"
        )
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unreachable)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).map_err(unreachable)?;
    stream.write_all(payload.as_bytes()).map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("the control plane at {host} sent a malformed answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The API never uses chunked encoding for these answers (full bodies).
    let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    Ok((status, value))
}

fn fail(message: &str) -> i32 {
    let _ = writeln!(
        anstream::stderr(),
        "{s}error{s:#}: {message}",
        s = output::ERROR
    );
    UNREACHABLE
}

fn print_data(format: Format, value: &Value) {
    let text = match format {
        Format::Yaml => output::to_yaml(value),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    };
    let _ = anstream::stdout().write_all(text.as_bytes());
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis apply -f canary-step2.yaml               change the running mesh
  trellis apply -f mesh/ -o json                   the outcome for scripts
  trellis delete -f canary-step2.yaml

An invalid file is refused with the same messages as `trellis validate` and changes
nothing. Exit codes: 0 applied, 1 invalid, 3 control plane unreachable.")]
pub struct ApplyArgs {
    /// Files or directories of resources; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// `trellis apply` (or `delete` when `delete` is set).
pub fn apply(args: &ApplyArgs, delete: bool) -> i32 {
    let mut files = Vec::new();
    for path in &args.files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                return fail(&format!("standard input: {e}"));
            }
            files.push(serde_json::json!({"name": "-", "text": text}));
            continue;
        }
        let found = match trellis_control::source::files(path) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(
                    anstream::stderr(),
                    "{s}error{s:#}: {}: {e}",
                    path.display(),
                    s = output::ERROR
                );
                return crate::cmd::validate::INVALID;
            }
        };
        for file in found {
            match std::fs::read_to_string(&file) {
                Ok(text) => files
                    .push(serde_json::json!({"name": file.display().to_string(), "text": text})),
                Err(e) => {
                    let _ = writeln!(
                        anstream::stderr(),
                        "{s}error{s:#}: {}: {e}",
                        file.display(),
                        s = output::ERROR
                    );
                    return crate::cmd::validate::INVALID;
                }
            }
        }
    }
    let path = if delete {
        "/api/v1/delete"
    } else {
        "/api/v1/apply"
    };
    let body = serde_json::json!({ "files": files });
    let (status, answer) = match call(&args.target.control_plane, "POST", path, Some(&body)) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if args.output != Format::Text {
        print_data(args.output, &answer);
        return match status {
            200 => 0,
            422 => crate::cmd::validate::INVALID,
            _ => UNREACHABLE,
        };
    }
    let mut out = anstream::stdout();
    let mut err = anstream::stderr();
    match status {
        200 => {
            let list = answer
                .get(if delete { "deleted" } else { "applied" })
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in list {
                let name = format!(
                    "{}/{}",
                    item["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    item["name"].as_str().unwrap_or_default()
                );
                let ns = item["namespace"].as_str().unwrap_or_default();
                let what = if delete {
                    if item["found"].as_bool() == Some(true) {
                        "deleted"
                    } else {
                        "not found"
                    }
                } else {
                    item["change"].as_str().unwrap_or("applied")
                };
                let style = if what == "not found" {
                    output::WARNING
                } else {
                    output::OK
                };
                let kind = item["kind"].as_str().unwrap_or_default();
                let note = if !delete && trellis_control::source::NOT_ENFORCED_KINDS.contains(&kind)
                {
                    format!(
                        " {w}(accepted, not enforced yet: mTLS and authorization are not built){w:#}",
                        w = output::WARNING
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{name} ({ns}) {style}{what}{style:#}{note}");
            }
            0
        }
        422 => {
            for p in answer["problems"].as_array().cloned().unwrap_or_default() {
                let _ = writeln!(
                    err,
                    "{s}error{s:#}: {}",
                    p["text"].as_str().unwrap_or_default(),
                    s = output::ERROR
                );
            }
            let _ = writeln!(
                err,
                "{}; nothing was changed",
                if delete {
                    "delete refused"
                } else {
                    "apply refused: the configuration is invalid"
                }
            );
            crate::cmd::validate::INVALID
        }
        _ => fail(&format!(
            "the control plane answered {status}: {}",
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis get virtualservices                  every VirtualService in namespace default
  trellis get vs -A                            in every namespace
  trellis get dr reviews -o yaml               one resource, as the control plane holds it
  trellis get all -o json")]
pub struct GetArgs {
    /// Kind (virtualservice, vs, destinationrule, dr, gateway, gw, service, svc, …) or `all`.
    pub kind: String,
    /// Only this resource.
    pub name: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// `trellis get`.
pub fn get(args: &GetArgs) -> i32 {
    let mut path = String::from("/api/v1/resources?");
    if args.kind != "all" {
        path.push_str(&format!("kind={}&", args.kind));
    }
    if !args.all_namespaces {
        path.push_str(&format!("namespace={}", args.namespace));
    }
    let (status, answer) = match call(&args.target.control_plane, "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if status != 200 {
        return fail(&format!("the control plane answered {status}"));
    }
    let mut items: Vec<Value> = answer.as_array().cloned().unwrap_or_default();
    if let Some(name) = &args.name {
        items.retain(|i| i["name"].as_str() == Some(name));
        if items.is_empty() {
            let _ = writeln!(
                anstream::stderr(),
                "{s}error{s:#}: {} `{name}` not found in namespace {}",
                args.kind,
                args.namespace,
                s = output::ERROR
            );
            return 1;
        }
    }
    match args.output {
        Format::Text => {
            if items.is_empty() {
                let _ = writeln!(anstream::stderr(), "no {} found", args.kind);
                return 0;
            }
            let mut out = anstream::stdout();
            let _ = writeln!(
                out,
                "{:<22} {:<16} {:<28} SOURCE",
                "KIND", "NAMESPACE", "NAME"
            );
            for i in &items {
                let _ = writeln!(
                    out,
                    "{:<22} {:<16} {:<28} {}",
                    i["kind"].as_str().unwrap_or_default(),
                    i["namespace"].as_str().unwrap_or_default(),
                    i["name"].as_str().unwrap_or_default(),
                    i["source"].as_str().unwrap_or_default()
                );
            }
        }
        format => {
            let resources: Vec<Value> = items.iter().map(|i| i["resource"].clone()).collect();
            let value = if args.name.is_some() && resources.len() == 1 {
                resources[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": resources})
            };
            print_data(format, &value);
        }
    }
    0
}

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
}

/// `trellis proxy-status`.
pub fn proxy_status(args: &ProxyStatusArgs) -> i32 {
    let (status, answer) = match call(&args.target.control_plane, "GET", "/api/v1/proxies", None) {
        Ok(r) => r,
        Err(e) => return fail(&e),
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

/// What part of a proxy's config to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    All,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis proxy-config routes productpage-v1-0         where productpage's sidecar sends requests
  trellis proxy-config clusters istio-ingressgateway   the gateway's upstreams and their policies
  trellis proxy-config endpoints reviews-v1-0 -o json
  trellis proxy-config all istio-ingressgateway -o yaml

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
}

/// `trellis proxy-config`.
pub fn proxy_config(args: &ProxyConfigArgs) -> i32 {
    let path = format!("/api/v1/proxies/{}/config", args.pod);
    let (status, config) = match call(&args.target.control_plane, "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return fail(&e),
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
            Section::All => config.clone(),
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
