//! `trellis apply` and `trellis delete`: send files (or stdin) to the control plane,
//! which validates them whole; print what changed, or the problems and that nothing
//! was changed. Validation happens on the server, with `trellis validate`'s messages.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use super::{Target, UNREACHABLE, call, fail, print_data};
use crate::output::{self, Format};

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
    #[command(flatten)]
    pub cluster: super::ClusterTarget,
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
    let (status, answer) = match call(&args.target.with(&args.cluster), "POST", path, Some(&body)) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
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
                let note = match trellis_control::source::apply_note(kind) {
                    Some(note) if !delete => format!(" {w}({note}){w:#}", w = output::WARNING),
                    _ => String::new(),
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
