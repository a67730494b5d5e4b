//! A real Kubernetes control plane for tests: etcd, kube-apiserver and (optionally)
//! kube-controller-manager, built by `fixtures/kube/build.sh` and started on
//! 127.0.0.1 with ports of their own. Everything is stopped when the [`Cluster`] drops.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The built binaries (kube-apiserver, kube-controller-manager, kubectl, etcd).
#[derive(Debug, Clone)]
pub struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    /// Finds or builds the fixtures: `$TRELLIS_KUBE_FIXTURES` when set, else the
    /// project's fixture script (cached by version; minutes only the first time).
    /// `None`, with a line saying why, where Go is missing.
    pub fn find() -> Option<Fixtures> {
        static FOUND: std::sync::OnceLock<Option<Fixtures>> = std::sync::OnceLock::new();
        FOUND
            .get_or_init(|| {
                if let Some(dir) = std::env::var_os("TRELLIS_KUBE_FIXTURES") {
                    return Some(Fixtures { dir: dir.into() });
                }
                let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../fixtures/kube/build.sh")
                    .canonicalize()
                    .expect("fixtures/kube/build.sh is in the checkout");
                let out = Command::new("bash")
                    .arg(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("bash runs");
                match out.status.code() {
                    Some(0) => {
                        let text = String::from_utf8_lossy(&out.stdout);
                        let dir = text.lines().last().unwrap_or_default().trim().to_string();
                        Some(Fixtures { dir: dir.into() })
                    }
                    Some(3) => None,
                    _ => panic!("{} failed: {:?}", script.display(), out.status),
                }
            })
            .clone()
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Prints the line a test shows when it cannot run here, and says whether to go on.
pub fn fixtures_or_skip(test: &str) -> Option<Fixtures> {
    let found = Fixtures::find();
    if found.is_none() {
        eprintln!(
            "skipped {test}: Go is missing, so the real kube-apiserver and etcd cannot be built (fixtures/kube/build.sh)"
        );
    }
    found
}

/// The admin's bearer token (in the API server's token file, group system:masters).
pub const ADMIN_TOKEN: &str = "trellis-test-admin-token";

/// A running etcd + kube-apiserver (+ controller-manager).
pub struct Cluster {
    pub fixtures: Fixtures,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The API server's self-signed serving certificate (PEM).
    pub ca_file: PathBuf,
    /// A kubeconfig for the admin (context `trellis-test`).
    pub kubeconfig: PathBuf,
    /// The service-account signing key (PEM, for the controller-manager).
    pub sa_key: PathBuf,
    dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
    /// The API server's flags, to start it again the same way.
    apiserver_args: Vec<String>,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// The controller-manager: default ServiceAccounts, Deployments → Pods,
    /// EndpointSlices, namespace deletion, garbage collection.
    pub controller_manager: bool,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            controller_manager: true,
        }
    }
}

fn unused_port() -> u16 {
    // The processes take their ports as flags; the one the kernel hands out is
    // free at that moment (a clash makes start fail and retry).
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl Cluster {
    /// Starts a cluster, or `None` (with a line saying why) where Go is missing.
    pub async fn start(test: &str) -> Option<Cluster> {
        Cluster::start_with(test, ClusterOptions::default()).await
    }

    pub async fn start_with(test: &str, options: ClusterOptions) -> Option<Cluster> {
        let fixtures = fixtures_or_skip(test)?;
        let mut last = String::new();
        for _ in 0..3 {
            match Cluster::try_start(&fixtures, options).await {
                Ok(c) => return Some(c),
                Err(e) => last = e,
            }
        }
        panic!("the test cluster did not start: {last}");
    }

    async fn try_start(fixtures: &Fixtures, options: ClusterOptions) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        let sa_key = d.join("sa.key");
        let sa_pub = d.join("sa.pub");
        make_sa_keys(&sa_key, &sa_pub)?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n"),
        )
        .map_err(|e| e.to_string())?;
        let mut cluster = Cluster {
            fixtures: fixtures.clone(),
            url: String::new(),
            ca_file: d.join("certs/apiserver.crt"),
            kubeconfig: d.join("kubeconfig"),
            sa_key: sa_key.clone(),
            children: Vec::new(),
            apiserver_args: Vec::new(),
            dir,
        };
        let d = cluster.dir.path().to_path_buf();
        let (client_port, peer_port) = (unused_port(), unused_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let etcd = Command::new(fixtures.bin("etcd"))
            .args([
                "--name=trellis-test",
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=trellis-test=http://127.0.0.1:{peer_port}"),
                &format!("--data-dir={}", d.join("etcd").display()),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ])
            .stdout(log_file(&d, "etcd"))
            .stderr(log_file(&d, "etcd"))
            .spawn()
            .map_err(|e| format!("etcd: {e}"))?;
        cluster.children.push(("etcd", etcd));
        let api_port = unused_port();
        cluster.url = format!("https://127.0.0.1:{api_port}");
        cluster.apiserver_args = [
            &format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            "--advertise-address=127.0.0.1",
            &format!("--cert-dir={}", d.join("certs").display()),
            &format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC",
            &format!("--service-account-key-file={}", sa_pub.display()),
            &format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            // Webhooks and aggregated APIs reached through their Service's endpoints
            // (there is no kube-proxy to route a ClusterIP here).
            "--enable-aggregator-routing=true",
        ]
        .map(str::to_string)
        .to_vec();
        let apiserver = cluster.spawn_apiserver()?;
        cluster.children.push(("kube-apiserver", apiserver));
        cluster.wait_ready(Duration::from_secs(60)).await?;
        cluster.write_kubeconfig()?;
        if options.controller_manager {
            let cm = Command::new(fixtures.bin("kube-controller-manager"))
                .args([
                    &format!("--kubeconfig={}", cluster.kubeconfig.display()),
                    &format!(
                        "--service-account-private-key-file={}",
                        cluster.sa_key.display()
                    ),
                    &format!("--root-ca-file={}", cluster.ca_file.display()),
                    "--leader-elect=false",
                    "--controllers=*,-nodelifecycle",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    // Pods made by the test's Deployments are scheduled at once.
                    "--concurrent-deployment-syncs=5",
                    "--concurrent-replicaset-syncs=5",
                ])
                .stdout(log_file(&d, "kube-controller-manager"))
                .stderr(log_file(&d, "kube-controller-manager"))
                .spawn()
                .map_err(|e| format!("kube-controller-manager: {e}"))?;
            cluster.children.push(("kube-controller-manager", cm));
        }
        Ok(cluster)
    }

    fn spawn_apiserver(&self) -> Result<Child, String> {
        let d = self.dir.path();
        // Appended to: a restarted API server's log follows the first one's.
        let log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join("kube-apiserver.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        };
        Command::new(self.fixtures.bin("kube-apiserver"))
            .args(&self.apiserver_args)
            .stdout(log())
            .stderr(log())
            .spawn()
            .map_err(|e| format!("kube-apiserver: {e}"))
    }

    /// Kills the API server (as a crash would: every connection and watch to it
    /// breaks) and starts it again on the same port with the same certificate and
    /// etcd, with `extra_args` added to its flags (an audit log, say; kept for later
    /// restarts); returns once it is ready again. Clients see the restart as such:
    /// their watches must resume or relist.
    pub async fn restart_apiserver(&mut self, extra_args: &[&str]) -> Result<(), String> {
        let Some(slot) = self
            .children
            .iter()
            .position(|(name, _)| *name == "kube-apiserver")
        else {
            return Err("the API server is not running".into());
        };
        let (_, child) = &mut self.children[slot];
        let _ = child.kill();
        let _ = child.wait();
        self.apiserver_args
            .extend(extra_args.iter().map(|a| a.to_string()));
        // The port is free once the process is gone; a new one may take a moment.
        let mut last = String::new();
        for _ in 0..3 {
            self.children[slot].1 = self.spawn_apiserver()?;
            match self.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            let (_, child) = &mut self.children[slot];
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(format!("the API server did not come back: {last}"))
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited ({status}): {}", self.log_tail(name)));
            }
            if self.ca_file.exists() {
                let ok = Command::new(self.fixtures.bin("kubectl"))
                    .args([
                        "--server",
                        &self.url,
                        "--certificate-authority",
                        &self.ca_file.display().to_string(),
                        "--token",
                        ADMIN_TOKEN,
                        "get",
                        "--raw",
                        "/readyz",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "not ready after {limit:?}: {}",
                    self.log_tail("kube-apiserver")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn write_kubeconfig(&self) -> Result<(), String> {
        write_kubeconfig(&self.url, &self.ca_file, ADMIN_TOKEN, &self.kubeconfig)
    }

    /// A kubeconfig at `file` that reaches this cluster with `token` (a service
    /// account's, as a pod's client would; default namespace `default`).
    pub fn kubeconfig_for(&self, token: &str, file: &Path) -> Result<(), String> {
        write_kubeconfig(&self.url, &self.ca_file, token, file)
    }

    /// The last lines a process logged (for failure messages).
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for the admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .expect("the test kubeconfig reads");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("the test kubeconfig is valid");
        kube::Client::try_from(config).expect("a client")
    }

    /// `kubectl` for the admin.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.fixtures.bin("kubectl"));
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Runs kubectl with `args` (and `stdin`), returning (success, stdout, stderr).
    pub fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            let _ = pipe.write_all(text.as_bytes());
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl finishes");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stops the controller-manager, the API server, then etcd.
    pub fn stop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn make_sa_keys(key: &Path, public: &Path) -> Result<(), String> {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let (k, p) = (key.display().to_string(), public.display().to_string());
    run(&["genrsa", "-out", &k, "2048"])?;
    run(&["rsa", "-in", &k, "-pubout", "-out", &p])
}

/// Writes a kubeconfig for the API server at `url` (serving certificate `ca_file`)
/// and the bearer `token` to `file`.
pub fn write_kubeconfig(url: &str, ca_file: &Path, token: &str, file: &Path) -> Result<(), String> {
    let ca = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: trellis-test
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: user
  user:
    token: {token}
contexts:
- name: trellis-test
  context: {{cluster: trellis-test, user: user, namespace: default}}
current-context: trellis-test
",
        ca = base64(&ca),
    );
    std::fs::write(file, text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Writes a kubeconfig naming an API server that is not there (a loopback port that
/// was free a moment ago), for tests of what a client says when it cannot reach one.
/// Returns that port.
pub fn write_unreachable_kubeconfig(file: &Path) -> Result<u16, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: closed
  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}
users:
- name: someone
  user: {{token: not-a-token}}
contexts:
- name: closed
  context: {{cluster: closed, user: someone}}
current-context: closed
"
    );
    std::fs::write(file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(port)
}

/// Standard base64 (for kubeconfig data fields).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
