//! `trellis kube-inject`: istioctl's manual injection. Reads Kubernetes YAML, adds to
//! every pod and pod template what the injection webhook would (crates/kube's
//! `inject`), and writes YAML with every other field and document unchanged. The
//! namespace's label is not consulted (as istioctl's); a pod's opt-out is honoured.

use std::io::{Read, Write};
use std::path::PathBuf;

use trellis_kube::inject::{InjectSettings, inject_document};

use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # inject the sidecar into a Deployment and apply it
  trellis kube-inject -f samples/bookinfo/platform/kube/bookinfo.yaml | kubectl apply -f -

  # write the injected manifests to a file
  trellis kube-inject -f deployment.yaml -o deployment-injected.yaml

  # from stdin, with the proxy image of another registry and tag
  kubectl get deployment reviews-v1 -o yaml | trellis kube-inject -f - --hub example.org/mesh --tag 1.2.3

  # proxies following the discovery address and trust domain of a MeshConfig
  kubectl -n istio-system get configmap istio -o jsonpath='{.data.mesh}' > mesh.yaml
  trellis kube-inject -f deployment.yaml --mesh-config-file mesh.yaml

Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets,
ReplicationControllers, Jobs and CronJobs get the `istio-init` capture container and the
`istio-proxy` native sidecar (an init container with restartPolicy Always, Kubernetes
1.29 or later), as the webhook would add them. A pod annotated or labelled
`sidecar.istio.io/inject: \"false\"` and every other kind pass through unchanged. Comments
and key order are not kept.")]
pub struct Args {
    /// The manifests to inject (`-` for standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: PathBuf,
    /// Where to write the result (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The proxy image's registry and repository prefix (`{hub}/trellis:{tag}`).
    #[arg(long, default_value = "ghcr.io/trellis-mesh")]
    pub hub: String,
    /// The proxy image's tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// The control plane's namespace (proxies follow `istiod.NS.svc:15012`).
    #[arg(short = 'i', long, default_value = "istio-system", value_name = "NS")]
    pub istio_namespace: String,
    /// The control plane revision whose sidecar this is (`istio.io/rev`).
    #[arg(long, default_value = "default")]
    pub revision: String,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// A MeshConfig file (the `mesh` key of the `istio` ConfigMap): its `trustDomain` and
    /// `defaultConfig.discoveryAddress` are used.
    #[arg(long, alias = "meshConfigFile", value_name = "FILE")]
    pub mesh_config_file: Option<PathBuf>,
}

/// `trustDomain` and `defaultConfig.discoveryAddress` from a MeshConfig file.
fn mesh_config(settings: &mut InjectSettings, path: &std::path::Path) -> Result<(), String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let docs = trellis_api::yaml::parse(&text)
        .map_err(|e| format!("{shown}:{}: {}", e.line, e.message))?;
    let Some(mesh) = docs.first().map(|d| d.root.to_json()) else {
        return Ok(());
    };
    let text_at = |pointer: &str| -> Result<Option<String>, String> {
        match mesh.pointer(pointer) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "{shown}: {}: {other} is not a non-empty string",
                pointer.trim_start_matches('/').replace('/', ".")
            )),
        }
    };
    if let Some(domain) = text_at("/trustDomain")? {
        settings.trust_domain = domain;
    }
    if let Some(address) = text_at("/defaultConfig/discoveryAddress")? {
        settings.control_plane = address;
    }
    Ok(())
}

pub fn run(args: &Args) -> i32 {
    let mut err = anstream::stderr();
    let mut fail = |code: i32, message: String| {
        let _ = writeln!(err, "{s}error{s:#}: {message}", s = output::ERROR);
        code
    };
    let name = args.filename.display().to_string();
    let text = if args.filename.as_os_str() == "-" {
        let mut text = String::new();
        match std::io::stdin().read_to_string(&mut text) {
            Ok(_) => text,
            Err(e) => return fail(2, format!("standard input: {e}")),
        }
    } else {
        match std::fs::read_to_string(&args.filename) {
            Ok(text) => text,
            Err(e) => return fail(2, format!("{name}: {e}")),
        }
    };
    let documents = match trellis_api::yaml::parse(&text) {
        Ok(d) => d,
        Err(e) => return fail(2, format!("{name}:{}: {}", e.line, e.message)),
    };
    let mut settings = InjectSettings {
        revision: args.revision.clone(),
        trust_domain: args.trust_domain.clone(),
        ..InjectSettings::for_control_plane(
            &args.istio_namespace,
            "istiod",
            &format!("{}/trellis:{}", args.hub.trim_end_matches('/'), args.tag),
        )
    };
    if let Some(path) = &args.mesh_config_file
        && let Err(e) = mesh_config(&mut settings, path)
    {
        return fail(2, e);
    }
    let mut out = Vec::with_capacity(documents.len());
    for document in &documents {
        match inject_document(&document.root.to_json(), &settings) {
            Ok((injected, _)) => out.push(injected),
            Err(e) => return fail(1, format!("{name}:{}: {e}", document.line)),
        }
    }
    let yaml = trellis_api::yaml::to_yaml_documents(&out);
    let written = match &args.output {
        Some(path) => std::fs::write(path, yaml).map_err(|e| format!("{}: {e}", path.display())),
        None => std::io::stdout()
            .write_all(yaml.as_bytes())
            .map_err(|e| format!("standard output: {e}")),
    };
    match written {
        Ok(()) => 0,
        Err(e) => fail(1, e),
    }
}
