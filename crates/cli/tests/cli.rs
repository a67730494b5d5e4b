//! The `trellis` binary as a user runs it: exit codes, output formats, stdin, directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

fn trellis(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for trellis")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    dir.join("seed/examples").exists().then_some(dir)
}

const MISSPELT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  htpp:
  - route:
    - destination: {host: reviews}
";

#[test]
fn misspelt_field_is_one_line_with_file_line_resource_field_and_hint() {
    let out = trellis(&["validate", "-f", "-"], Some(MISSPELT));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("-:8: VirtualService default/reviews: spec.htpp: unknown field `htpp` (did you mean `http`?)"),
        "{err}"
    );
}

#[test]
fn valid_input_exits_zero_with_a_summary() {
    let out = trellis(
        &["validate", "-f", "-"],
        Some(&MISSPELT.replace("htpp", "http")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 resource in 1 file valid"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn json_output_lists_problems_with_their_positions() {
    let out = trellis(&["validate", "-f", "-", "-o", "json"], Some(MISSPELT));
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["valid"], false);
    assert_eq!(value["problems"][0]["line"], 8);
    assert_eq!(value["problems"][0]["field"], "spec.htpp");
    assert_eq!(
        value["problems"][0]["resource"],
        "VirtualService default/reviews"
    );
}

#[test]
fn directories_are_read_recursively_and_ignored_kinds_warn() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
    std::fs::write(
        dir.path().join("a/b/vs.yaml"),
        MISSPELT.replace("htpp", "http"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("a/filter.yml"),
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec: {}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("a/notes.txt"), "not yaml: [").expect("write");
    let out = trellis(
        &["validate", "-f", dir.path().to_str().expect("utf-8 path")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 resources in 2 files valid (1 warning)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("EnvoyFilter"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn garbage_gets_an_error_with_a_line_not_a_crash() {
    for input in [
        "a: [1, 2\nb: 3\n",
        "\u{0}\u{1}binary",
        "- - - - [",
        "key: value\n  bad indent: x\n",
    ] {
        let out = trellis(&["validate", "-f", "-"], Some(input));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{input:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).starts_with("error: -:"),
            "{input:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn missing_file_is_reported_by_name() {
    let out = trellis(&["validate", "-f", "/nonexistent/x.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/x.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn seed_examples_validate() {
    let Some(shared) = shared() else {
        println!("skipping: ../shared/seed is absent");
        return;
    };
    let out = trellis(
        &[
            "validate",
            "-f",
            shared.join("seed/examples").to_str().expect("path"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn analyze_reports_istio_codes_as_json() {
    let input = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [missing-gateway]
  http:
  - route:
    - destination: {host: reviews}
";
    let out = trellis(
        &[
            "analyze",
            "-f",
            "-",
            "-o",
            "json",
            "--analyzer",
            "virtualservice.GatewayAnalyzer",
        ],
        Some(input),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let value: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let first = &value[0];
    assert_eq!(first["code"], "IST0101");
    assert_eq!(first["level"], "Error");
    assert_eq!(first["kind"], "VirtualService");
    assert_eq!(first["namespace"], "default");
    assert_eq!(first["name"], "reviews");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing-gateway")),
        "{first}"
    );
}

#[test]
fn unknown_analyzer_is_a_usage_error_with_a_hint() {
    let out = trellis(
        &["analyze", "-f", "-", "--analyzer", "no.SuchAnalyzer"],
        Some(MISSPELT),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown analyzer"),
        "{}",
        text(&out.stderr)
    );
}

/// The `Commands:` of a help text: each name with its one line (wrapped lines joined).
fn commands(help: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let section = help.lines().skip_while(|l| *l != "Commands:").skip(1);
    for line in section.take_while(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        match found.last_mut() {
            Some((_, about)) if indent > 2 => {
                about.push(' ');
                about.push_str(line.trim());
            }
            _ => {
                let (name, about) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                found.push((name.to_string(), about.trim().to_string()));
            }
        }
    }
    found
}

#[test]
fn every_subcommand_says_in_one_line_what_it_does() {
    const VERBS: &[&str] = &[
        "Add", "Check", "Install", "List", "Print", "Remove", "Run", "Serve", "Show", "Stop",
    ];
    let mut checked = 0;
    // (the subcommand's words, the line its parent lists it with)
    let mut pending: Vec<(Vec<String>, Option<String>)> = vec![(Vec::new(), None)];
    while let Some((path, listed)) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = trellis(&args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = text(&out.stdout);
        if let Some(listed) = listed {
            // Its own --help opens with the line it is listed with.
            let own: Vec<&str> = help.lines().take_while(|l| !l.is_empty()).collect();
            assert_eq!(own.join(" "), listed, "{path:?}");
            checked += 1;
        }
        for (name, about) in commands(&help) {
            if name == "help" {
                continue;
            }
            let verb = about.split(' ').next().unwrap_or("");
            assert!(
                VERBS.contains(&verb),
                "`trellis {} {name}`: {about:?} does not start with what it does",
                path.join(" ")
            );
            let mut sub = path.clone();
            sub.push(name);
            pending.push((sub, Some(about)));
        }
    }
    assert!(checked >= 14, "only {checked} subcommands found");
    let demo = text(&trellis(&["demo", "--help"], None).stdout);
    assert!(
        demo.lines().next().is_some_and(
            |l| l.starts_with("Run the bundled demo mesh") && l.contains("live traffic")
        ),
        "{demo}"
    );
}

/// Each demo mesh gets an address block of its own and ports the OS picks, but a mesh
/// is a dozen processes and these tests count failed requests: one at a time.
static ONE_MESH: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn demo_runs_the_mesh_and_reports_where_requests_go() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let block = common::address_block();
    let out = trellis(
        &[
            "demo",
            "--duration",
            "3",
            "--rate",
            "40",
            "--gateway-port",
            "0",
            "--control-plane-port",
            "0",
            "--address-block",
            &block.arg(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("mesh ready"), "{stdout}");
    assert!(stdout.contains("reviews for everyone"), "{stdout}");
    assert!(stdout.contains("reviews for beta"), "{stdout}");
    assert!(stdout.contains("failed requests: 0"), "{stdout}");
    let printed = trellis(&["demo", "--print"], None);
    let check = trellis(&["validate", "-f", "-"], Some(&text(&printed.stdout)));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
}

/// A Ctrl-C at a terminal reaches the whole process group: the apps die with the demo.
/// That is a clean stop, not crashes to restart or failed requests to report.
#[test]
fn demo_stops_cleanly_when_its_whole_process_group_is_interrupted() {
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let block = common::address_block();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "demo",
            "--rate",
            "40",
            "--gateway-port",
            "0",
            "--control-plane-port",
            "0",
            "--address-block",
            &block.arg(),
        ])
        .env("NO_COLOR", "1")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let pgid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut lines = Vec::new();
    while std::time::Instant::now() < deadline
        && !lines.iter().any(|l: &String| l.contains("mesh ready"))
    {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    assert!(lines.iter().any(|l| l.contains("mesh ready")), "{lines:?}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-s", "INT", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Whatever happened, nothing of this group outlives the test.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
        lines.push(line);
    }
    let errors = errors.join().expect("stderr");
    assert!(
        status.is_some(),
        "the demo did not stop: {lines:?} {errors:?}"
    );
    assert!(
        !errors.iter().any(|l| l.contains("restarting")),
        "a stop is not a crash: {errors:?}"
    );
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains("failed requests:"))
        .unwrap_or_else(|| panic!("a final summary: {lines:?}"));
    assert!(last.contains("failed requests: 0"), "{last}");
}

#[test]
fn manifest_generate_prints_the_crds_as_yaml_documents_or_a_json_list() {
    let yaml = trellis(&["manifest", "generate", "--crds-only"], None);
    assert_eq!(yaml.status.code(), Some(0), "{}", text(&yaml.stderr));
    let documents = trellis_api::yaml::parse(&text(&yaml.stdout)).expect("valid YAML");
    let from_yaml: Vec<serde_json::Value> = documents
        .iter()
        .map(|d| d.root.to_json())
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(from_yaml.len(), 10);
    assert!(
        from_yaml
            .iter()
            .all(|d| d["kind"] == "CustomResourceDefinition")
    );
    let vs = from_yaml
        .iter()
        .find(|d| d["metadata"]["name"] == "virtualservices.networking.istio.io")
        .expect("VirtualService's CRD");
    assert_eq!(vs["spec"]["names"]["shortNames"], serde_json::json!(["vs"]));

    let json = trellis(&["manifest", "generate", "--crds-only", "-o", "json"], None);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"], serde_json::Value::Array(from_yaml));

    // The whole install: the CRDs first, then the profile's objects.
    let all = trellis(
        &[
            "manifest",
            "generate",
            "--set",
            "profile=demo",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(all.status.code(), Some(0), "{}", text(&all.stderr));
    let list: serde_json::Value = serde_json::from_slice(&all.stdout).expect("JSON");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(kinds[..10], ["CustomResourceDefinition"; 10]);
    for kind in [
        "Namespace",
        "ClusterRole",
        "Deployment",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let bad = trellis(&["manifest", "generate", "--set", "profile=huge"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("known: default, demo"),
        "{}",
        text(&bad.stderr)
    );

    let help = trellis(&["manifest", "generate", "--help"], None);
    assert!(text(&help.stdout).contains("kubectl apply"));
}
