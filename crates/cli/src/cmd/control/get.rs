//! `trellis get`: the resources the control plane holds, by kind and namespace, as a
//! table or as the resources themselves (`-o yaml|json`, a `List` unless one is named).
//! Kind aliases (`vs`, `dr`, ...) are resolved by the server.

use std::io::Write;

use serde_json::Value;

use super::{Target, call, fail, print_data};
use crate::output::{self, Format};

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
    #[command(flatten)]
    pub cluster: super::ClusterTarget,
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
    let (status, answer) = match call(&args.target.with(&args.cluster), "GET", &path, None) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
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
