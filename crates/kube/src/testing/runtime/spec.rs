//! A container of a Pod spec as a process: its command line (the Trellis image's
//! entrypoint is the binary under test), its environment (values and the downward
//! API), its user, its volumes (service-account tokens, ConfigMaps, Secrets,
//! emptyDirs, written into the Pod's directory and bind-mounted where the container
//! mounts them, `/run` being the Pod's own), and its probes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret};
use kube::api::Api;

/// What a container runs as, once resolved.
#[derive(Debug, Clone)]
pub struct Process {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: i64,
    pub gid: i64,
    /// `(volume directory, mount path)`.
    pub mounts: Vec<(PathBuf, String)>,
}

/// The command line: `command` (else the image's entrypoint) and `args`; `trellis`
/// is the binary under test.
pub fn argv(container: &Container, trellis: &Path) -> Result<Vec<String>, String> {
    let image = container.image.as_deref().unwrap_or_default();
    let repository = image
        .split('@')
        .next()
        .unwrap_or(image)
        .rsplit('/')
        .next()
        .unwrap_or(image);
    let repository = repository.split(':').next().unwrap_or(repository);
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    if argv.is_empty() {
        if repository == "trellis" {
            argv.push("trellis".into());
        } else {
            return Err(format!(
                "container {}: image {image} has no entrypoint the test knows; give a command",
                container.name
            ));
        }
    }
    argv.extend(container.args.clone().unwrap_or_default());
    if argv[0] == "trellis" || argv[0].ends_with("/trellis") {
        argv[0] = trellis.display().to_string();
    }
    Ok(argv)
}

/// `$(NAME)` in arguments replaced by the container's variable, as the kubelet does
/// (`$$` escapes; an unknown name stays as written).
pub fn expand(argv: Vec<String>, env: &[(String, String)]) -> Vec<String> {
    argv.into_iter()
        .map(|arg| {
            let mut out = String::new();
            let mut rest = arg.as_str();
            while let Some(at) = rest.find('$') {
                out.push_str(&rest[..at]);
                let after = &rest[at + 1..];
                if let Some(tail) = after.strip_prefix('$') {
                    out.push('$');
                    rest = tail;
                } else if let Some((name, tail)) =
                    after.strip_prefix('(').and_then(|a| a.split_once(')'))
                {
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, value)) => out.push_str(value),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = tail;
                } else {
                    out.push('$');
                    rest = after;
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// The environment: plain values and the downward API's fields.
pub fn env(container: &Container, pod: &Pod, ip: Ipv4Addr) -> Vec<(String, String)> {
    let meta = &pod.metadata;
    let field = |path: &str| -> Option<String> {
        let key_of = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
                .map(str::to_string)
        };
        Some(match path {
            "metadata.name" => meta.name.clone()?,
            "metadata.namespace" => meta.namespace.clone()?,
            "metadata.uid" => meta.uid.clone()?,
            "status.podIP" | "status.podIPs" => ip.to_string(),
            "status.hostIP" | "status.hostIPs" => "127.0.0.1".into(),
            "spec.nodeName" => super::super::NODE.into(),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()?
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            _ => {
                if let Some(key) = key_of("metadata.labels") {
                    meta.labels.as_ref()?.get(&key)?.clone()
                } else if let Some(key) = key_of("metadata.annotations") {
                    meta.annotations.as_ref()?.get(&key)?.clone()
                } else {
                    return None;
                }
            }
        })
    };
    let mut out = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => from.field_ref.as_ref().and_then(|f| field(&f.field_path)),
            _ => None,
        };
        if let Some(value) = value {
            out.push((var.name.clone(), value));
        }
    }
    out
}

/// The user and group: the container's security context, else the Pod's, else root.
pub fn user(container: &Container, pod: &Pod) -> (i64, i64) {
    let pod_ctx = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let ctx = container.security_context.as_ref();
    let uid = ctx
        .and_then(|c| c.run_as_user)
        .or_else(|| pod_ctx.and_then(|c| c.run_as_user))
        .unwrap_or(0);
    let gid = ctx
        .and_then(|c| c.run_as_group)
        .or_else(|| pod_ctx.and_then(|c| c.run_as_group))
        .unwrap_or(uid);
    (uid, gid)
}

/// Writes every volume of the Pod under `dir/volumes/NAME` (world-readable: the test's
/// processes run as several users) and returns the directories by volume name.
pub async fn volumes(client: &kube::Client, pod: &Pod, dir: &Path) -> BTreeMap<String, PathBuf> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let mut out = BTreeMap::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let path = dir.join("volumes").join(&volume.name);
        let _ = std::fs::create_dir_all(&path);
        let write = |name: &str, bytes: &[u8]| {
            let file = path.join(name);
            if let Some(parent) = file.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(&file, bytes);
        };
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let audience = token
                        .audience
                        .as_deref()
                        .unwrap_or("https://kubernetes.default.svc");
                    if let Some(t) =
                        super::super::pod_token(client, pod, &service_account, audience).await
                    {
                        write(&token.path, t.as_bytes());
                    }
                }
                if let Some(cm) = &source.config_map {
                    let items = cm.items.clone().unwrap_or_default();
                    config_map(client, &namespace, &cm.name, &items, &write).await;
                }
                if let Some(downward) = &source.downward_api {
                    for item in downward.items.iter().flatten() {
                        if item.field_ref.as_ref().map(|f| f.field_path.as_str())
                            == Some("metadata.namespace")
                        {
                            write(&item.path, namespace.as_bytes());
                        }
                    }
                }
            }
        }
        if let Some(cm) = &volume.config_map {
            let items = cm.items.clone().unwrap_or_default();
            config_map(client, &namespace, &cm.name, &items, &write).await;
        }
        if let Some(secret) = &volume.secret {
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let found = match &secret.secret_name {
                Some(name) => api.get_opt(name).await.ok().flatten(),
                None => None,
            };
            for (k, v) in found.and_then(|s| s.data).unwrap_or_default() {
                write(&k, &v.0);
            }
        }
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&path)
            .status();
        out.insert(volume.name.clone(), path);
    }
    out
}

/// A ConfigMap's keys (or the listed items) as files; waited for a little, since the
/// control plane publishes `istio-ca-root-cert` as namespaces appear.
async fn config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    items: &[k8s_openapi::api::core::v1::KeyToPath],
    write: &impl Fn(&str, &[u8]),
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for _ in 0..100 {
        if let Ok(Some(cm)) = api.get_opt(name).await {
            let data = cm.data.unwrap_or_default();
            if items.is_empty() {
                for (k, v) in &data {
                    write(k, v.as_bytes());
                }
            } else {
                for item in items {
                    if let Some(v) = data.get(&item.key) {
                        write(&item.path, v.as_bytes());
                    }
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(%namespace, %name, "test kubelet: ConfigMap never appeared; its volume is empty");
}

/// The container's mounts: volume directories and where they go.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Vec<(PathBuf, String)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let mut dir = volumes.get(&m.name)?.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                dir = dir.join(sub);
            }
            Some((dir, m.mount_path.clone()))
        })
        .collect()
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Starts `process` in the Pod's network namespace: its own mount namespace (from
/// `ip netns exec`, which also shows `/etc/netns/NS/hosts` as `/etc/hosts`), the
/// Pod's `run` directory over `/run`, its volumes bind-mounted (paths outside `/run`
/// only where they exist), then the user switched and the program run.
pub fn spawn(netns: &str, run_dir: &Path, process: &Process, log: &Path) -> std::io::Result<Child> {
    let mut script = format!(
        "set -e\nmount --bind {} /run\n",
        quote(&run_dir.display().to_string())
    );
    for (dir, path) in &process.mounts {
        let (dir, target) = (quote(&dir.display().to_string()), quote(path));
        if path.starts_with("/run/") || path.starts_with("/var/run/") {
            script.push_str(&format!("mkdir -p {target}\nmount --bind {dir} {target}\n"));
        } else {
            script.push_str(&format!(
                "if [ -d {target} ]; then mount --bind {dir} {target}; fi\n"
            ));
        }
    }
    if process.uid == 0 {
        script.push_str("exec \"$@\"\n");
    } else {
        script.push_str(&format!(
            "exec setpriv --reuid={} --regid={} --clear-groups -- \"$@\"\n",
            process.uid, process.gid
        ));
    }
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", &script, "sh"])
        .args(&process.argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(process.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

/// Whether `probe` passes against the Pod at `ip` (HTTP GET, TCP connect; an exec
/// probe is taken as passing: the test runs no exec).
pub fn probe(probe: &Probe, container: &Container, ip: Ipv4Addr) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port_of = |port: &IntOrString| -> Option<u16> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    };
    let timeout = Duration::from_secs(1);
    if let Some(get) = &probe.http_get {
        let Some(port) = port_of(&get.port) else {
            return false;
        };
        let addr = SocketAddr::from((ip, port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let path = get.path.as_deref().unwrap_or("/");
        if write!(stream, "GET {path} HTTP/1.0\r\nhost: {ip}:{port}\r\n\r\n").is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        return stream.read_exact(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.")
            && (b'2'..=b'3').contains(&head[9]);
    }
    if let Some(tcp) = &probe.tcp_socket {
        return port_of(&tcp.port).is_some_and(|port| {
            TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout).is_ok()
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn arguments_expand_variables_as_the_kubelet_does() {
        let env = vec![
            ("POD_NAME".to_string(), "web-1".to_string()),
            ("POD_NAMESPACE".to_string(), "shop".to_string()),
        ];
        let out = expand(
            vec![
                "$(POD_NAME).$(POD_NAMESPACE)".into(),
                "$$(POD_NAME)".into(),
                "$(UNKNOWN)".into(),
                "cost: $5".into(),
            ],
            &env,
        );
        assert_eq!(out, ["web-1.shop", "$(POD_NAME)", "$(UNKNOWN)", "cost: $5"]);
    }
}
