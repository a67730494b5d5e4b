//! What an injected pod gains: `istio-init` (capture: `trellis proxy init` with
//! NET_ADMIN and NET_RAW), then `istio-proxy` as a native sidecar (an init container
//! with `restartPolicy: Always`, Kubernetes ≥ 1.29: started and ready before the app,
//! stopped after it, and a Job still completes), the `istio-ca` service-account token
//! and the mesh root as volumes, Istio's labels and the `sidecar.istio.io/status`
//! annotation. Everything else in the pod is kept as it was, byte for byte in JSON.

use serde_json::{Map, Value, json};

use super::{InjectError, InjectSettings, Overrides};

/// The sidecar's container name (Istio's).
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The capture init container's name (Istio's).
pub const INIT_CONTAINER: &str = "istio-init";
/// The proxy's user: capture leaves its own traffic alone.
pub const PROXY_UID: i64 = 1337;
/// Where captured outbound and inbound connections are redirected.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PORT: u16 = 15006;
/// Istio's health port: `/healthz/ready` for the probes, served by the proxy's status
/// port from before its first config (503 until ready, and again while draining).
pub const HEALTH_PORT: u16 = 15021;
/// Istio's merged metrics port (the proxy's `/stats/prometheus`).
pub const STATS_PORT: u16 = 15020;
/// Marks an injected pod, naming what was added (Istio's key).
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

const TOKEN_VOLUME: &str = "istio-token";
const ROOT_VOLUME: &str = "istiod-ca-cert";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_DIR: &str = "/var/run/secrets/istio";

/// Returns `pod` (a Pod, or a pod template: `metadata` and `spec`) with its sidecar.
/// `workload` names the pod's workload (its Deployment, say) for the canonical-name
/// label; `None`: derived from the pod ([`workload_name`]). The decision is the
/// caller's (`super::decide`).
pub fn inject_pod(
    pod: &Value,
    workload: Option<&str>,
    settings: &InjectSettings,
) -> Result<Value, InjectError> {
    let mut out = pod.clone();
    let Some(spec) = out.get("spec").filter(|s| s.is_object()) else {
        return Err(InjectError::Shape("the pod has no `spec`".into()));
    };
    let app_containers: Vec<Value> = match spec.get("containers") {
        Some(Value::Array(c)) if !c.is_empty() => c.clone(),
        _ => {
            return Err(InjectError::Shape(
                "the pod has no `spec.containers`".into(),
            ));
        }
    };
    let overrides = Overrides::read(&pod["metadata"])?;
    let workload = workload
        .map(str::to_string)
        .unwrap_or_else(|| workload_name(&pod["metadata"]));
    let labels = &pod["metadata"]["labels"];
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k).and_then(Value::as_str))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let canonical_name = label(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload.clone());
    let canonical_revision = label(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());

    let names: Vec<&str> = app_containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let image = overrides.image.clone().unwrap_or(settings.image.clone());
    let init = init_container(&image, &overrides);
    let mut proxy = proxy_container(&image, &overrides, settings, &workload, labels, &names);
    // The app's HTTP probes, asked through the sidecar (captured inbound traffic would
    // refuse the kubelet's plaintext under STRICT).
    let mut rewritten = app_containers.clone();
    let probers = super::probes::wanted(&pod["metadata"])
        .then(|| super::probes::rewrite(&mut rewritten))
        .flatten();
    if let (Some(probers), Some(Value::Array(env))) = (&probers, proxy.get_mut("env")) {
        env.push(json!({"name": "ISTIO_KUBE_APP_PROBERS", "value": probers}));
    }

    let spec = object(&mut out, "spec")?;
    if probers.is_some() {
        spec.insert("containers".into(), Value::Array(rewritten));
    }
    let mut init_containers = match spec.remove("initContainers") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    init_containers.splice(0..0, [init, proxy]);
    spec.insert("initContainers".into(), Value::Array(init_containers));
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(volumes) = volumes {
        volumes.push(
            json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": crate::token_review::ISTIO_CA_AUDIENCE,
            "expirationSeconds": 43200, "path": "istio-token"}}]}}),
        );
        volumes.push(
            json!({"name": ROOT_VOLUME, "configMap": {"name": crate::root_cert::CONFIG_MAP}}),
        );
    }

    let meta = object(&mut out, "metadata")?;
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if let Value::Object(labels) = labels {
        labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
        labels
            .entry("service.istio.io/canonical-name")
            .or_insert(json!(canonical_name));
        labels
            .entry("service.istio.io/canonical-revision")
            .or_insert(json!(canonical_revision));
    }
    let status = json!({
        "initContainers": [INIT_CONTAINER, PROXY_CONTAINER],
        "containers": [],
        "volumes": [TOKEN_VOLUME, ROOT_VOLUME],
        "imagePullSecrets": null,
        "revision": settings.revision,
    });
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Value::Object(annotations) = annotations {
        annotations.insert(STATUS_ANNOTATION.into(), json!(status.to_string()));
        if let Some(first) = names.first() {
            annotations
                .entry("kubectl.kubernetes.io/default-container")
                .or_insert(json!(first));
        }
    }
    Ok(out)
}

/// `value[key]` as a map, made when missing.
fn object<'a>(value: &'a mut Value, key: &str) -> Result<&'a mut Map<String, Value>, InjectError> {
    let map = value
        .as_object_mut()
        .ok_or_else(|| InjectError::Shape("the pod is not an object".into()))?;
    map.entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| InjectError::Shape(format!("the pod's `{key}` is not an object")))
}

/// The workload a pod belongs to, as Istio names it: a ReplicaSet's pod
/// (`reviews-v1-5d8f7c9b4-`, label `pod-template-hash: 5d8f7c9b4`) belongs to
/// `reviews-v1`; else the generateName without its dash; else the pod's name.
pub fn workload_name(metadata: &Value) -> String {
    let generated = metadata["generateName"]
        .as_str()
        .map(|g| g.trim_end_matches('-'))
        .filter(|g| !g.is_empty());
    if let Some(generated) = generated {
        if let Some(hash) = metadata["labels"]["pod-template-hash"].as_str()
            && let Some(name) = generated.strip_suffix(&format!("-{hash}"))
        {
            return name.to_string();
        }
        return generated.to_string();
    }
    metadata["name"].as_str().unwrap_or("unknown").to_string()
}

fn init_container(image: &str, o: &Overrides) -> Value {
    let mut args = vec![
        "proxy".to_string(),
        "init".into(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--outbound-port".into(),
        OUTBOUND_PORT.to_string(),
        "--inbound-port".into(),
        INBOUND_PORT.to_string(),
        // Istio's defaults: everything captured but the proxy's own ports.
        "--include-outbound-ip-ranges".into(),
        o.include_outbound_ip_ranges.clone().unwrap_or("*".into()),
        "--include-inbound-ports".into(),
        o.include_inbound_ports.clone().unwrap_or("*".into()),
    ];
    let own = format!("{STATS_PORT},{HEALTH_PORT}");
    let exclude_inbound = match &o.exclude_inbound_ports {
        Some(p) if !p.is_empty() => format!("{own},{p}"),
        _ => own,
    };
    args.extend(["--exclude-inbound-ports".into(), exclude_inbound]);
    if o.dns_capture {
        // Istio's DNS proxying: queries to port 53 reach the sidecar's answerer.
        args.push("--redirect-dns".into());
    }
    for (flag, value) in [
        (
            "--exclude-outbound-ip-ranges",
            &o.exclude_outbound_ip_ranges,
        ),
        ("--exclude-outbound-ports", &o.exclude_outbound_ports),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": image,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "10Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"}},
        // Root with only the capabilities iptables needs, in the pod's own namespace.
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
            "privileged": false, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
    })
}

fn proxy_container(
    image: &str,
    o: &Overrides,
    settings: &InjectSettings,
    workload: &str,
    labels: &Value,
    app_containers: &[&str],
) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("HOST_IP", "status.hostIP"),
        json!({"name": "TRUST_DOMAIN", "value": settings.trust_domain}),
        json!({"name": "ISTIO_META_WORKLOAD_NAME", "value": workload}),
        json!({"name": "ISTIO_META_APP_CONTAINERS", "value": app_containers.join(",")}),
        json!({"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"}),
        json!({"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}),
    ];
    if let Some(level) = &o.log_level {
        env.push(json!({"name": "TRELLIS_LOG", "value": level}));
    }
    if let Some(config) = &o.proxy_config {
        env.push(json!({"name": "PROXY_CONFIG", "value": config}));
    }
    let mut label_list: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default();
    label_list.sort();
    let mut args: Vec<String> = [
        "proxy",
        "--control-plane",
        &settings.control_plane,
        "--role",
        "sidecar",
        "--id",
        "$(POD_NAME).$(POD_NAMESPACE)",
        "--name",
        workload,
        "--namespace",
        "$(POD_NAMESPACE)",
        "--service-account",
        "$(SERVICE_ACCOUNT)",
        "--pod-ip",
        "$(INSTANCE_IP)",
        "--token-file",
        "/var/run/secrets/tokens/istio-token",
        "--ca-root",
        "/var/run/secrets/istio/root-cert.pem",
    ]
    .map(str::to_string)
    .to_vec();
    // The init container's rules send the app's traffic to the capture listeners
    // (15001 outbound, 15006 inbound), which read each connection's original
    // destination; the explicit HTTP-proxy listener is not bound then.
    args.push("--capture".into());
    args.extend(["--listen".into(), format!("127.0.0.1:{OUTBOUND_PORT}")]);
    args.extend(["--stats".into(), format!("0.0.0.0:{STATS_PORT}")]);
    args.extend(["--status-port".into(), HEALTH_PORT.to_string()]);
    if !label_list.is_empty() {
        args.extend(["--labels".into(), label_list.join(",")]);
    }
    let mut requests = Map::new();
    requests.insert("cpu".into(), json!(o.cpu.as_deref().unwrap_or("100m")));
    requests.insert(
        "memory".into(),
        json!(o.memory.as_deref().unwrap_or("128Mi")),
    );
    let mut limits = Map::new();
    limits.insert("cpu".into(), json!(o.cpu_limit.as_deref().unwrap_or("2")));
    limits.insert(
        "memory".into(),
        json!(o.memory_limit.as_deref().unwrap_or("1Gi")),
    );
    let probe = |period: u32, failures: u32| {
        json!({"httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
            "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": failures})
    };
    json!({
        "name": PROXY_CONTAINER,
        "image": image,
        "args": args,
        // A native sidecar: runs beside the app containers for the pod's whole life.
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "http-health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        // The app starts once this passes (up to 10 minutes), then readiness takes over.
        "startupProbe": probe(1, 600),
        "readinessProbe": probe(15, 4),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "privileged": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": ROOT_VOLUME, "mountPath": ROOT_DIR, "readOnly": true},
        ],
    })
}

#[cfg(test)]
#[path = "sidecar_tests.rs"]
mod tests;
