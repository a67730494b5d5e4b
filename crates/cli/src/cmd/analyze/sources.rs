//! Where `trellis analyze` reads resources, decided once from the flags: files alone
//! (`-f` with no kubeconfig around, or `--use-kube=false`: exactly as before), a
//! cluster through the kubeconfig kubectl would use (with `-f`, the files are laid on
//! top of it, as if applied), or, with neither, the local mesh `trellis up` runs
//! (then a pod's own cluster, when run in one).
//! What is read from a running mesh is scoped to the selected namespaces (`scope.rs`).

use std::collections::{BTreeSet, HashSet};

use trellis_api::{Diagnostic, Loaded, Resource, Severity};

use super::Args;
use super::live::{self, Live};
use super::scope::Scope;

/// Where the resources come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The files alone; no cluster is read.
    Files,
    /// A Kubernetes cluster (the files, if any, on top).
    Cluster,
    /// The local control plane `trellis up` runs.
    ControlPlane,
}

/// What is analyzed, and which of its messages are shown.
pub struct Input {
    pub origin: Origin,
    pub resources: Vec<Resource>,
    /// What could not be read: files that do not load, objects that do not type.
    pub problems: Vec<Diagnostic>,
    pub scope: Scope,
    /// Given to file resources that name no namespace.
    pub default_namespace: String,
    /// Where a running mesh was read (its API server's or control plane's URL).
    pub read_from: Option<String>,
}

/// Why nothing could be analyzed (a usage error, or the mesh cannot be read).
pub type InputError = String;

/// Reads what the flags point at.
pub fn read(args: &Args) -> Result<Input, InputError> {
    let origin = origin(args)?;
    let files = if args.files.is_empty() {
        Loaded::default()
    } else {
        crate::inputs::load(&args.files).0
    };
    if origin == Origin::Files {
        return Ok(Input {
            origin,
            resources: files.resources,
            problems: errors(files.diagnostics),
            scope: Scope::All,
            default_namespace: args.namespace.clone().unwrap_or_else(|| "default".into()),
            read_from: None,
        });
    }
    let live = match origin {
        Origin::ControlPlane => live::control_plane(&args.control_plane)?,
        _ => live::cluster(
            args.kubeconfig.as_deref(),
            args.context.as_deref(),
            &args.istio_namespace,
        )?,
    };
    Ok(on_top(origin, live, files, args))
}

/// Decides where to read from.
fn origin(args: &Args) -> Result<Origin, InputError> {
    let cluster_named = args.kubeconfig.is_some() || args.context.is_some();
    match (args.use_kube, args.files.is_empty()) {
        (Some(false), true) => Err(
            "nothing to analyze: --use-kube=false reads no cluster; give files with -f PATH".into(),
        ),
        (Some(false), false) => Ok(Origin::Files),
        (Some(true), _) => Ok(Origin::Cluster),
        (None, _) if cluster_named || trellis_kube::connect::kubeconfig_found() => {
            Ok(Origin::Cluster)
        }
        (None, false) => Ok(Origin::Files),
        (None, true) if live::control_plane_running(&args.control_plane) => {
            Ok(Origin::ControlPlane)
        }
        // In a pod, the service account's view of the cluster.
        (None, true) if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            Ok(Origin::Cluster)
        }
        (None, true) => Err(format!(
            "nothing to analyze: no -f PATH, no kubeconfig (--kubeconfig, $KUBECONFIG or \
             ~/.kube/config) to read a cluster through, and no local mesh answering at {}",
            args.control_plane.control_plane
        )),
    }
}

/// A resource's identity when files replace what the mesh holds.
type Key = (String, String, String, String);

fn key(r: &Resource) -> Key {
    (
        r.group().to_string(),
        r.kind.clone(),
        r.meta.namespace.clone().unwrap_or_default(),
        r.meta.name.clone(),
    )
}

/// The mesh's resources with the files' laid on top (a file's resource replaces the
/// one of the same kind, namespace and name), scoped to the selected namespaces and
/// those the files write to.
fn on_top(origin: Origin, live: Live, files: Loaded, args: &Args) -> Input {
    let default_namespace = args.namespace.clone().unwrap_or(live.namespace);
    let scope = if args.all_namespaces {
        Scope::All
    } else {
        Scope::namespace(&default_namespace)
    };
    let mut written = files.resources;
    for r in &mut written {
        if r.meta.namespace.is_none() && !trellis_analyze::is_cluster_scoped(&r.kind) {
            r.meta.namespace = Some(default_namespace.clone());
        }
    }
    let replaced: HashSet<Key> = written.iter().map(key).collect();
    let touched: BTreeSet<String> = written
        .iter()
        .filter_map(|r| r.meta.namespace.clone())
        .collect();
    let mut resources: Vec<Resource> = live
        .resources
        .into_iter()
        .filter(|r| !replaced.contains(&key(r)))
        .collect();
    resources.extend(written);
    let scope = scope.with(touched);
    let mut problems: Vec<Diagnostic> = live
        .problems
        .into_iter()
        .filter(|(namespace, _)| scope.contains(namespace.as_deref()))
        .map(|(_, d)| d)
        .collect();
    problems.extend(errors(files.diagnostics));
    Input {
        origin,
        resources,
        problems,
        scope,
        default_namespace,
        read_from: Some(live.url),
    }
}

fn errors(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}
