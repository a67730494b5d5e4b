//! The generated CustomResourceDefinitions on a real API server: accepted and
//! Established; users' Istio YAML (the seed examples, unchanged) applies and reads back
//! whole, in every version Istio serves, and so does every Istio resource of the corpus
//! that Trellis finds valid; unknown fields are kept (so they reach the webhook) while
//! typed ones are still checked; and Istio's own CRDs and ours replace each other in
//! either order, so a cluster that has Istio's is fine.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_kube::testing::{Cluster, ClusterOptions, corpus, isolate};

/// Our definitions as `trellis manifest generate` prints them.
fn our_crds() -> String {
    let crds = trellis_kube::crd::definitions().expect("the definitions");
    trellis_api::yaml::to_yaml_documents(&crds)
}

fn crd_names() -> Vec<String> {
    trellis_kube::crd::definitions()
        .expect("the definitions")
        .iter()
        .map(|crd| format!("crd/{}", crd["metadata"]["name"].as_str().unwrap_or("")))
        .collect()
}

async fn start(test: &str) -> Option<Cluster> {
    let options = ClusterOptions {
        controller_manager: false,
    };
    Cluster::start_with(test, options).await
}

/// `kubectl apply -f -` of `yaml` (or `-f path`), retried while kubectl's discovery has
/// not seen new kinds yet; returns stderr (warnings).
fn apply(cluster: &Cluster, args: &[&str], yaml: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut command = vec!["apply"];
    command.extend_from_slice(args);
    loop {
        let (ok, _, err) = cluster.kubectl_run(&command, yaml);
        if ok {
            return err;
        }
        let retry =
            err.contains("no matches for kind") || err.contains("ensure CRDs are installed");
        assert!(
            retry && Instant::now() < deadline,
            "kubectl {command:?} failed: {err}\n{}",
            cluster.log_tail("kube-apiserver")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn established(cluster: &Cluster) {
    let names = crd_names();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    let (ok, _, err) = cluster.kubectl_run(&args, None);
    assert!(ok, "CRDs not Established: {err}");
}

/// `kubectl get RESOURCE NAME -n NAMESPACE -o json`.
fn get(cluster: &Cluster, resource: &str, namespace: &str, name: &str) -> Value {
    let (ok, out, err) = cluster.kubectl_run(
        &["get", resource, name, "-n", namespace, "-o", "json"],
        None,
    );
    assert!(ok, "kubectl get {resource} {namespace}/{name}: {err}");
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

/// Numbers as floats: `10` and `10.0` are the same number to the API server.
fn same_numbers(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(same_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), same_numbers(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies `text` and reads every document of it back (`resource` from its
/// apiVersion, so older versions are read in their own version): the spec is whole.
fn round_trip(cluster: &Cluster, text: &str, file: Option<&Path>) {
    let stderr = match file {
        Some(path) => apply(cluster, &["-f", &path.display().to_string()], None),
        None => apply(cluster, &["-f", "-"], Some(text)),
    };
    assert!(
        !stderr.to_lowercase().contains("unknown field"),
        "kubectl warned: {stderr}"
    );
    let documents = trellis_api::yaml::parse(text).expect("YAML");
    for sent in documents.iter().map(|d| d.root.to_json()) {
        let Some(api_version) = sent["apiVersion"].as_str() else {
            continue;
        };
        let (group, version) = api_version.split_once('/').expect("group/version");
        let kind = sent["kind"].as_str().expect("kind").to_ascii_lowercase();
        let resource = format!("{kind}.{version}.{group}");
        let name = sent["metadata"]["name"].as_str().expect("name");
        let namespace = sent["metadata"]["namespace"].as_str().unwrap_or("default");
        let stored = get(cluster, &resource, namespace, name);
        assert_eq!(stored["apiVersion"], json!(api_version));
        assert_eq!(
            same_numbers(&without_nulls(&stored["spec"])),
            same_numbers(&without_nulls(&sent["spec"])),
            "{resource} {namespace}/{name} read back differently"
        );
    }
}

/// Older versions, with fields Trellis does not know at several depths.
const OLDER_VERSIONS: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-old, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh]
  hostss: [typo]
  http:
  - timeoutt: 1s
    route:
    - destination: {host: reviews, subset: v1, portt: 9080}
      wieght: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews-old, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 10}}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: old, namespace: default}
spec:
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {\"8080\": {mode: DISABLE}}
  selector: {matchLabels: {app: reviews}}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: old, namespace: default}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}], to: [{operation: {methods: [GET], ports: [\"9080\"]}}]}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: old, namespace: default}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
";

/// Empty values (`mode:` is null in YAML), which Istio's definitions drop: taken too.
const NULLS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: nulls, namespace: default}
spec:
  host: reviews
  exportTo:
  trafficPolicy:
    loadBalancer:
    tls:
      mode:
    portLevelSettings:
    - port: {number: 80}
      tls: {mode: null, sni: null}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: nulls, namespace: default}
spec:
  selector:
  mtls: {mode: }
";

#[test]
fn istio_yaml_applies_unchanged_and_reads_back_whole() {
    const NAME: &str = "istio_yaml_applies_unchanged_and_reads_back_whole";
    if !isolate(NAME) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(cluster) = runtime.block_on(start(NAME)) else {
        return;
    };
    apply(&cluster, &["-f", "-"], Some(&our_crds()));
    established(&cluster);

    match corpus::seed_examples() {
        None => eprintln!("skipped the seed examples: ../shared/seed/examples is absent"),
        Some(dir) => {
            let files = corpus::yaml_files(&dir);
            assert!(!files.is_empty());
            let (ok, _, err) = cluster.kubectl_run(&["create", "namespace", "production"], None);
            assert!(ok, "{err}");
            for file in &files {
                let text = std::fs::read_to_string(file).expect("a seed example");
                round_trip(&cluster, &text, Some(file));
            }
        }
    }

    match corpus::istio_corpus() {
        None => eprintln!("skipped Istio's examples: ../shared/corpus/istio is absent"),
        Some(dir) => corpus_applies_whole(&cluster, &dir),
    }

    round_trip(&cluster, OLDER_VERSIONS, None);
    round_trip(&cluster, NULLS, None);
    let vs = get(&cluster, "vs", "default", "reviews-old");
    assert_eq!(vs["apiVersion"], json!("networking.istio.io/v1"));
    assert_eq!(vs["spec"]["http"][0]["route"][0]["wieght"], json!(90));

    let (ok, table, err) = cluster.kubectl_run(&["get", "vs", "reviews-old"], None);
    assert!(ok, "{err}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        ["NAME", "GATEWAYS", "HOSTS", "AGE"]
            .iter()
            .all(|c| header.contains(c)),
        "{table}"
    );

    // Typed fields are still checked by the API server.
    let wrong_type = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong, namespace: default}
spec: {hosts: reviews}
";
    let (ok, _, err) = cluster.kubectl_run(&["apply", "-f", "-"], Some(wrong_type));
    assert!(!ok && err.contains("spec.hosts"), "{err}");
}

/// Every Istio resource of the corpus that Trellis finds valid, in the version it is
/// written in, is taken by the API server (a server-side dry run) with nothing pruned.
fn corpus_applies_whole(cluster: &Cluster, corpus: &Path) {
    let ours: Vec<(&str, &str)> = trellis_api::resource::istio_kinds()
        .map(|k| (k.group(), k.kind()))
        .collect();
    let mut sent = Vec::new();
    for folder in [
        "samples",
        "config-examples",
        "validation/valid",
        "analyzers/testdata",
    ] {
        for file in corpus::yaml_files(&corpus.join(folder)) {
            let text = std::fs::read_to_string(&file).expect("a corpus file");
            let loaded = trellis_api::load_str(&file.display().to_string(), &text);
            for resource in &loaded.resources {
                let valid = resource
                    .validate()
                    .iter()
                    .all(|d| d.severity != trellis_api::Severity::Error);
                let group = resource.api_version.split('/').next().unwrap_or_default();
                if valid && ours.contains(&(group, resource.kind.as_str())) {
                    let mut object = (*resource.raw).clone();
                    object["metadata"] = json!({"name": format!("corpus-{}", sent.len())});
                    sent.push(object);
                }
            }
        }
    }
    assert!(sent.len() > 100, "only {} corpus resources", sent.len());
    let stream = trellis_api::yaml::to_yaml_documents(&sent);
    let args = ["apply", "--dry-run=server", "-o", "json", "-f", "-"];
    let (ok, out, err) = cluster.kubectl_run(&args, Some(&stream));
    assert!(ok, "the API server refused some of Istio's examples: {err}");
    assert!(!err.to_lowercase().contains("unknown field"), "{err}");
    let answer: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    let items = answer["items"].as_array().expect("a List");
    assert_eq!(items.len(), sent.len());
    for (object, stored) in sent.iter().zip(items) {
        assert_eq!(
            same_numbers(&without_nulls(&stored["spec"])),
            same_numbers(&without_nulls(&object["spec"])),
            "{} {} changed on the way in",
            object["apiVersion"],
            object["kind"]
        );
    }
    eprintln!("{} resources of Istio's corpus applied whole", sent.len());
}

/// The API server drops `field: null` (Trellis's loader does too).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn istio_crds_and_ours_replace_each_other() {
    const NAME: &str = "istio_crds_and_ours_replace_each_other";
    let Some(istio_file) = corpus::istio_crd_file() else {
        eprintln!("skipped {NAME}: Istio's crd-all.gen.yaml is not in the corpus");
        return;
    };
    if !isolate(NAME) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(cluster) = runtime.block_on(start(NAME)) else {
        return;
    };
    let istio = istio_file.display().to_string();
    apply(&cluster, &["-f", &istio], None);
    established(&cluster);
    let before = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: before, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
";
    round_trip(&cluster, before, None);

    apply(&cluster, &["-f", "-"], Some(&our_crds()));
    established(&cluster);
    assert_eq!(
        get(&cluster, "vs", "default", "before")["spec"]["hosts"],
        json!(["reviews"])
    );
    let misspelt = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: misspelt, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, wieght: 100}]}]
";
    round_trip(&cluster, misspelt, None);

    apply(&cluster, &["-f", &istio], None);
    established(&cluster);
    for name in ["before", "misspelt"] {
        assert_eq!(
            get(&cluster, "vs", "default", name)["spec"]["hosts"],
            json!(["reviews"])
        );
    }
    round_trip(&cluster, &before.replace("before", "after"), None);
}
