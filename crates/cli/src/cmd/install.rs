//! `trellis install` and `trellis uninstall`, in istioctl's shapes: a profile and
//! `--set` values, a plan shown and confirmed (or `-y`), progress while objects are
//! applied and Deployments become ready, and what is missing when they do not. The
//! work is crates/kube's (`trellis_kube::install`); this prints.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis_kube::install::{self, Values};

use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis install                                 the default profile, after a confirmation
  trellis install --set profile=demo -y           a laptop cluster: one control-plane replica,
                                                  ingress and egress gateways, no questions
  trellis install --set hub=registry.example/me --set tag=dev -y
  trellis manifest generate --set profile=demo    the same objects, printed instead of applied

Profiles (istioctl's): default (two control-plane replicas, a PodDisruptionBudget, the
ingress gateway), demo (one replica, ingress and egress gateways, small requests),
minimal (the control plane only), empty (the namespace and the CRDs only).
Objects are applied with server-side apply, so installing again updates in place.
Exit codes: 0 installed and ready, 1 failed or not ready in time (what is missing is
listed), 2 bad usage or no cluster.")]
pub struct InstallArgs {
    /// A setting, KEY=VALUE (repeatable): profile=default|demo|minimal|empty,
    /// hub=REGISTRY, tag=TAG, namespace=NS, meshConfig.trustDomain=DOMAIN.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
    /// How long to wait for the Deployments to become ready.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub readiness_timeout: Duration,
    #[command(flatten)]
    pub cluster: KubeArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis uninstall -y                 remove the control plane, gateways, RBAC and webhook;
                                       keep the CRDs (and so every Istio resource in them)
  trellis uninstall --purge -y         remove the CRDs too, and every Istio resource with them

Exit codes: 0 removed, 1 failed, 2 bad usage or no cluster.")]
pub struct UninstallArgs {
    /// Also delete the CustomResourceDefinitions, and with them every Istio resource.
    #[arg(long)]
    pub purge: bool,
    /// Settings the install used (only `namespace` matters here).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
    #[command(flatten)]
    pub cluster: KubeArgs,
}

/// The cluster to talk to, as kubectl finds it.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// The kubeconfig (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    /// The client, or `None` once the reason is printed.
    async fn client(&self) -> Option<kube::Client> {
        match trellis_kube::connect::client(self.kubeconfig.as_deref(), self.context.as_deref())
            .await
        {
            Ok(c) => Some(c),
            Err(e) => {
                error(&e);
                None
            }
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    trellis_api::values::Duration::parse(text)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

fn error(message: &dyn std::fmt::Display) {
    let _ = writeln!(
        anstream::stderr(),
        "{s}error{s:#}: {message}",
        s = output::ERROR
    );
}

fn step(message: &str) {
    let _ = writeln!(anstream::stdout(), "  {s}✔{s:#} {message}", s = output::OK);
}

/// Asks "Proceed? (y/N)" unless `yes`; without a terminal, refuses (scripts pass -y).
fn confirm(yes: bool, question: &str) -> bool {
    if yes {
        return true;
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        error(&"not confirmed: standard input is not a terminal (pass -y to proceed)");
        return false;
    }
    let _ = write!(anstream::stdout(), "{question} Proceed? (y/N) ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            error(&e);
            None
        }
    }
}

pub fn install(args: &InstallArgs) -> i32 {
    let values = match Values::default().with_sets(args.set.iter().map(String::as_str)) {
        Ok(v) => v,
        Err(e) => {
            error(&e);
            return 2;
        }
    };
    let objects = match install::all_objects(&values) {
        Ok(o) => o,
        Err(e) => {
            error(&e);
            return 1;
        }
    };
    let deployments = objects.iter().filter(|o| o["kind"] == "Deployment").count();
    let question = format!(
        "This will install the Trellis {} profile ({} objects: {} CRDs, {} Deployments, image {}) into the cluster.",
        values.profile,
        objects.len(),
        objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .count(),
        deployments,
        values.image()
    );
    if !confirm(args.yes, &question) {
        return 1;
    }
    let Some(runtime) = runtime() else { return 1 };
    runtime.block_on(async {
        let Some(client) = args.cluster.client().await else {
            return 2;
        };
        let started = Instant::now();
        let mut applied = 0;
        let result = install::apply(&client, &objects, |_| applied += 1).await;
        if let Err(e) = result {
            error(&e);
            return 1;
        }
        step(&format!(
            "{} objects applied ({} CRDs established) in {:.1?}",
            objects.len(),
            objects.len() - applied,
            started.elapsed()
        ));
        if deployments > 0 {
            let _ = writeln!(
                anstream::stdout(),
                "  waiting for {deployments} Deployments to become ready (up to {:?})…",
                args.readiness_timeout
            );
        }
        match install::wait_ready(&client, &objects, args.readiness_timeout, step).await {
            Ok(()) => {
                let _ = writeln!(
                    anstream::stdout(),
                    "{s}✔ Installation complete{s:#}: profile {}, namespace {}, in {:.1?}. Next: label a namespace \
                     (kubectl label namespace default istio-injection=enabled) and apply your Istio YAML.",
                    values.profile,
                    values.namespace,
                    started.elapsed(),
                    s = output::OK
                );
                0
            }
            Err(e) => {
                error(&e);
                1
            }
        }
    })
}

pub fn uninstall(args: &UninstallArgs) -> i32 {
    let values = match Values::default().with_sets(args.set.iter().map(String::as_str)) {
        Ok(v) => v,
        Err(e) => {
            error(&e);
            return 2;
        }
    };
    let question = if args.purge {
        format!(
            "This will remove Trellis from namespace {} and delete the Istio CRDs, with every Istio resource in the cluster.",
            values.namespace
        )
    } else {
        format!(
            "This will remove Trellis from namespace {} (the Istio CRDs and your resources stay).",
            values.namespace
        )
    };
    if !confirm(args.yes, &question) {
        return 1;
    }
    let Some(runtime) = runtime() else { return 1 };
    runtime.block_on(async {
        let Some(client) = args.cluster.client().await else {
            return 2;
        };
        match install::uninstall(&client, &values, args.purge, step).await {
            Ok(removed) => {
                let _ = writeln!(
                    anstream::stdout(),
                    "{s}✔ Removed{s:#} {} objects.",
                    removed.deleted.len(),
                    s = output::OK
                );
                if !removed.kept.is_empty() {
                    let _ = writeln!(
                        anstream::stdout(),
                        "  kept {} CRDs (your Istio resources live in them; --purge removes them)",
                        removed.kept.len()
                    );
                }
                0
            }
            Err(e) => {
                error(&e);
                1
            }
        }
    })
}
