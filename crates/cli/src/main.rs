//! The `trellis` binary: argument parsing and wiring only. Every role of the mesh
//! is a subcommand, so one install gives the control plane, the proxy and the CLI.

mod apps;
mod cmd;
mod home;
mod inputs;
mod local;
mod output;
mod signals;

use clap::{Parser, Subcommand};

/// Trellis: a service mesh that runs your Istio configuration unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    about,
    after_help = "Examples:
  trellis validate -f reviews-vs.yaml     check resources one by one (Istio's rules, and misspelt fields)
  trellis analyze -f manifests/           check how resources fit together (Istio's IST0xxx codes)
  trellis demo                            run the bookstore demo mesh with live traffic (Ctrl-C stops)
  trellis manifest generate               what cluster mode installs (| kubectl apply -f -)
  trellis kube-inject -f deployment.yaml  add the sidecar to pod templates (| kubectl apply -f -)
  trellis x precheck                      is the current cluster ready for an install?
  trellis echo --listen 127.0.0.1:8080    a test workload that echoes requests as JSON
  trellis bookinfo productpage            one service of the bookstore demo application"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resources one by one: types, field names, and Istio's validation rules.
    Validate(cmd::validate::Args),
    /// Check how resources fit together, reporting Istio's analyzer codes (IST0xxx).
    Analyze(cmd::analyze::Args),
    /// Run the bundled demo mesh (a bookstore with a 90/10 canary) with live traffic, until Ctrl-C.
    Demo(cmd::demo::Args),
    /// Run a directory of manifests as a local mesh of processes, each with a sidecar.
    Up(cmd::up::Args),
    /// Stop the mesh that `trellis up` started.
    Down(cmd::up::DownArgs),
    /// Run the data plane (sidecar or gateway) from a directory of YAML, a control plane or a compiled config.
    Proxy(Box<cmd::proxy::Args>),
    /// Run the control plane: watch manifests, compile per-proxy config, push it over gRPC.
    ControlPlane(Box<cmd::control::ControlPlaneArgs>),
    /// Add or change resources in the running mesh (refused whole if any is invalid).
    Apply(cmd::control::ApplyArgs),
    /// Remove resources from the running mesh.
    Delete(cmd::control::ApplyArgs),
    /// List or show the resources the control plane holds.
    Get(cmd::control::GetArgs),
    /// Show whether each proxy runs the configuration last pushed to it (SYNCED / STALE / NOT SENT).
    ProxyStatus(cmd::control::ProxyStatusArgs),
    /// Show a proxy's listeners, routes, clusters or endpoints as last pushed.
    ProxyConfig(cmd::control::ProxyConfigArgs),
    /// Install the mesh into a Kubernetes cluster (CRDs, control plane, gateways) and wait until it is ready.
    Install(cmd::install::InstallArgs),
    /// Remove what `trellis install` put into a cluster (the CRDs too with --purge).
    Uninstall(cmd::install::UninstallArgs),
    /// Add the sidecar to the pods and pod templates of Kubernetes YAML, as the injection webhook would.
    KubeInject(cmd::kube_inject::Args),
    /// Print what `trellis install` applies, to review or pipe into `kubectl apply -f -`.
    Manifest(cmd::manifest::Args),
    /// Run experimental commands (istioctl's `x`): precheck, before an install.
    X(cmd::x::Args),
    /// Run an HTTP/1.1 and h2c server that answers every request with JSON about it.
    Echo(apps::echo::Args),
    /// Run one service of the bookstore demo application (productpage, details, reviews, ratings).
    Bookinfo(apps::bookinfo::Args),
    /// Run the httpbin endpoints Istio's samples call (/get, /headers, /status/418, /delay/N).
    Httpbin(apps::httpbin::Args),
}

fn main() {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Up(args) => cmd::up::run(args),
        Command::Down(args) => cmd::up::down(args),
        Command::ControlPlane(args) => cmd::control::control_plane(args),
        Command::Apply(args) => cmd::control::apply(args, false),
        Command::Delete(args) => cmd::control::apply(args, true),
        Command::Get(args) => cmd::control::get(args),
        Command::ProxyStatus(args) => cmd::control::proxy_status(args),
        Command::ProxyConfig(args) => cmd::control::proxy_config(args),
        Command::Install(args) => cmd::install::install(args),
        Command::Uninstall(args) => cmd::install::uninstall(args),
        Command::Manifest(args) => cmd::manifest::run(args),
        Command::KubeInject(args) => cmd::kube_inject::run(args),
        Command::X(args) => cmd::x::run(args),
        Command::Echo(args) => apps::echo::run(args),
        Command::Bookinfo(args) => apps::bookinfo::run(args),
        Command::Httpbin(args) => apps::httpbin::run(args),
    };
    std::process::exit(code);
}
