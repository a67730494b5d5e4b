//! The objects an install creates, in the order they are applied, in istioctl's
//! shapes: the namespace, the mesh ConfigMap, least-privilege RBAC (a ClusterRole
//! listing exactly what the control plane watches and writes, a Role for what it
//! writes in its own namespace), the control plane (Deployment, `istiod` Service,
//! PodDisruptionBudget), the webhook configurations (validation, and sidecar
//! injection as Istio's `istio-sidecar-injector`), and the gateways.
//! The CRDs come first, from `crate::crd`.

use serde_json::{Value, json};

use super::profile::{Profile, Values};
use crate::webhook::{
    ConfigurationOptions, INJECTOR_CONFIGURATION, mutating_webhook_configuration,
    validating_webhook_configuration,
};

/// The control plane's service account (proxies pin its SPIFFE id).
pub const CONTROL_PLANE_ACCOUNT: &str = trellis_identity::ca::CONTROL_PLANE_SERVICE_ACCOUNT;
/// The control plane's Deployment and Service (Istio's name, so that configurations
/// written for istiod reach it).
pub const CONTROL_PLANE: &str = "istiod";
/// Marks every object an install makes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "trellis");

fn meta(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut labels = labels;
    labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
    let mut m = json!({"name": name, "labels": labels});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// Everything but the CRDs, in apply order.
pub fn objects(values: &Values) -> Vec<Value> {
    let ns = values.namespace.as_str();
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": meta(ns, None, json!({})),
    })];
    if values.profile == Profile::Empty {
        return out;
    }
    out.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(crate::source::mesh_config::CONFIG_MAP, Some(ns), json!({"istio.io/config": "true"})),
        "data": {crate::source::mesh_config::MESH_KEY: format!("trustDomain: {}\nrootNamespace: {ns}\n", values.trust_domain)},
    }));
    out.extend(rbac(ns));
    out.extend(control_plane(values));
    let mut webhook = serde_json::to_value(validating_webhook_configuration(
        &ConfigurationOptions::in_cluster(ns, CONTROL_PLANE),
    ))
    .unwrap_or(Value::Null);
    if webhook.is_object() {
        webhook["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        webhook["kind"] = json!("ValidatingWebhookConfiguration");
        webhook["metadata"]["labels"][MANAGED_BY.0] = json!(MANAGED_BY.1);
        out.push(webhook);
    }
    let injector = ConfigurationOptions {
        name: INJECTOR_CONFIGURATION.into(),
        ..ConfigurationOptions::in_cluster(ns, CONTROL_PLANE)
    };
    let mut injector = serde_json::to_value(mutating_webhook_configuration(&injector, "default"))
        .unwrap_or(Value::Null);
    if injector.is_object() {
        injector["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        injector["kind"] = json!("MutatingWebhookConfiguration");
        injector["metadata"]["labels"][MANAGED_BY.0] = json!(MANAGED_BY.1);
        out.push(injector);
    }
    match values.profile {
        Profile::Default => out.extend(gateway(values, "ingress")),
        Profile::Demo => {
            out.extend(gateway(values, "ingress"));
            out.extend(gateway(values, "egress"));
        }
        Profile::Minimal | Profile::Empty => {}
    }
    out
}

/// Exactly what the control plane reads and writes.
fn rbac(ns: &str) -> Vec<Value> {
    let istio_kinds: Vec<(String, String)> = crate::source::watched()
        .into_iter()
        .filter(|k| k.custom)
        .map(|k| (k.resource.group, k.resource.plural))
        .collect();
    let mut groups: Vec<&str> = istio_kinds.iter().map(|(g, _)| g.as_str()).collect();
    groups.dedup();
    let plurals: Vec<&str> = istio_kinds.iter().map(|(_, p)| p.as_str()).collect();
    let statuses: Vec<String> = plurals.iter().map(|p| format!("{p}/status")).collect();
    let cluster_rules = json!([
        // The registry: what proxies route to and who they are.
        {"apiGroups": [""], "resources": ["namespaces", "services", "pods", "serviceaccounts"],
         "verbs": ["get", "list", "watch"]},
        // Endpoints of Services without a selector.
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
        // Gateway and DestinationRule credentials, watched one name at a time.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        // The mesh root published in every namespace (istio-ca-root-cert).
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
        // Istio's configuration, and analysis written back as status.
        {"apiGroups": groups, "resources": plurals, "verbs": ["get", "list", "watch"]},
        {"apiGroups": groups, "resources": statuses, "verbs": ["get", "patch", "update"]},
        // Pods' service-account tokens checked for their first certificate.
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        // The webhook configurations (validation, injection) and their caBundles.
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
         "verbs": ["get", "list", "watch", "create", "update"]},
    ]);
    let own_rules = json!([
        // The mesh ConfigMap, read.
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
        // The CA's root, stored once for every replica.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        // Leader election.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    ]);
    let subject =
        json!([{"kind": "ServiceAccount", "name": CONTROL_PLANE_ACCOUNT, "namespace": ns}]);
    let role_name = format!("trellis-control-plane-{ns}");
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(CONTROL_PLANE_ACCOUNT, Some(ns), json!({"app": CONTROL_PLANE}))}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta(&role_name, None, json!({"app": CONTROL_PLANE})), "rules": cluster_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(&role_name, None, json!({"app": CONTROL_PLANE})),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": subject}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta("trellis-control-plane", Some(ns), json!({"app": CONTROL_PLANE})), "rules": own_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta("trellis-control-plane", Some(ns), json!({"app": CONTROL_PLANE})),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trellis-control-plane"},
            "subjects": subject}),
    ]
}

fn restricted() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}})
}

fn control_plane(values: &Values) -> Vec<Value> {
    let ns = values.namespace.as_str();
    let replicas = if values.profile == Profile::Demo {
        1
    } else {
        2
    };
    let (cpu, memory) = if values.profile == Profile::Demo {
        ("10m", "64Mi")
    } else {
        ("100m", "128Mi")
    };
    let labels = json!({"app": CONTROL_PLANE, "istio": "pilot"});
    let mut out = vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(CONTROL_PLANE, Some(ns), labels.clone()),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": CONTROL_PLANE_ACCOUNT,
                    "containers": [{
                        "name": "discovery",
                        "image": values.image(),
                        "args": ["control-plane", "--kubernetes", "--namespace", ns,
                            "--grpc", "0.0.0.0:15012", "--http", "0.0.0.0:15014",
                            "--webhook", "0.0.0.0:15017", "--service", CONTROL_PLANE,
                            "--state-dir", "/var/lib/trellis", "--trust-domain", values.trust_domain,
                            "--inject", "--proxy-image", values.image()],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [
                            {"name": "grpc-xds", "containerPort": 15012, "protocol": "TCP"},
                            {"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"},
                            {"name": "https-webhook", "containerPort": 15017, "protocol": "TCP"},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15014},
                            "periodSeconds": 3, "timeoutSeconds": 5},
                        "resources": {"requests": {"cpu": cpu, "memory": memory}},
                        "securityContext": restricted(),
                        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/trellis"}],
                    }],
                    "volumes": [{"name": "state", "emptyDir": {"medium": "Memory"}}],
                },
            },
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": meta(CONTROL_PLANE, Some(ns), labels.clone()),
        "spec": {"selector": labels, "ports": [
            {"name": "grpc-xds", "port": 15012, "targetPort": 15012},
            {"name": "http-monitoring", "port": 15014, "targetPort": 15014},
            {"name": "https-webhook", "port": 443, "targetPort": 15017},
        ]}}),
    ];
    if replicas > 1 {
        out.push(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(CONTROL_PLANE, Some(ns), labels.clone()),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}),
        );
    }
    out
}

/// `istio-ingressgateway` or `istio-egressgateway`, as istioctl names them.
fn gateway(values: &Values, direction: &str) -> Vec<Value> {
    let ns = values.namespace.as_str();
    let name = format!("istio-{direction}gateway");
    let account = format!("{name}-service-account");
    let labels = json!({"app": name, "istio": format!("{direction}gateway")});
    let label_arg = format!("app={name},istio={direction}gateway");
    let service_type = if direction == "ingress" {
        "LoadBalancer"
    } else {
        "ClusterIP"
    };
    let env = |var: &str, path: &str| json!({"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&account, Some(ns), labels.clone())}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&name, Some(ns), labels.clone()),
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": account,
                    "containers": [{
                        "name": "istio-proxy",
                        "image": values.image(),
                        "args": ["proxy", "--control-plane", format!("{CONTROL_PLANE}.{ns}.svc:15012"),
                            "--role", "gateway", "--name", name, "--labels", label_arg,
                            "--id", "$(POD_NAME).$(POD_NAMESPACE)", "--namespace", "$(POD_NAMESPACE)",
                            "--service-account", account, "--pod-ip", "$(POD_IP)",
                            "--port-map", "80=8080", "--port-map", "443=8443",
                            "--stats", "0.0.0.0:15020"],
                        "env": [env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace"),
                            env("POD_IP", "status.podIP")],
                        "ports": [
                            {"name": "http2", "containerPort": 8080},
                            {"name": "https", "containerPort": 8443},
                            {"name": "http-envoy-prom", "containerPort": 15020},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15020},
                            "periodSeconds": 2},
                        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}},
                        "securityContext": restricted(),
                        "volumeMounts": [
                            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                            {"name": "istio-ca-root-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                            "audience": crate::token_review::ISTIO_CA_AUDIENCE,
                            "expirationSeconds": 43200, "path": "istio-token"}}]}},
                        {"name": "istio-ca-root-cert", "configMap": {"name": crate::root_cert::CONFIG_MAP}},
                    ],
                },
            },
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": meta(&name, Some(ns), labels.clone()),
        "spec": {"type": service_type, "selector": labels, "ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15020},
            {"name": "http2", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443},
        ]}}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(values: &Values) -> Vec<String> {
        objects(values)
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn profiles_carry_what_istioctls_do() {
        let default = kinds(&Values::default());
        for k in [
            "Namespace/istio-system",
            "Deployment/istiod",
            "Service/istiod",
            "PodDisruptionBudget/istiod",
            "ValidatingWebhookConfiguration/trellis-validator-istio-system",
            "MutatingWebhookConfiguration/istio-sidecar-injector",
            "Deployment/istio-ingressgateway",
            "Service/istio-ingressgateway",
            "ClusterRole/trellis-control-plane-istio-system",
        ] {
            assert!(default.contains(&k.to_string()), "{k} in {default:?}");
        }
        assert!(!default.iter().any(|k| k.contains("egress")));
        let demo = kinds(&Values {
            profile: Profile::Demo,
            ..Values::default()
        });
        assert!(demo.contains(&"Deployment/istio-egressgateway".to_string()));
        assert!(!demo.contains(&"PodDisruptionBudget/istiod".to_string()));
        let minimal = kinds(&Values {
            profile: Profile::Minimal,
            ..Values::default()
        });
        assert!(!minimal.iter().any(|k| k.contains("gateway")));
        assert_eq!(
            kinds(&Values {
                profile: Profile::Empty,
                ..Values::default()
            }),
            ["Namespace/istio-system"]
        );
    }

    #[test]
    fn every_object_is_marked_and_images_follow_hub_and_tag() {
        let values = Values::default()
            .with_sets(["hub=example.org/x", "tag=t1"])
            .expect("valid");
        let objects = objects(&values);
        for o in &objects {
            assert_eq!(o["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1, "{o}");
        }
        let deployments: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .collect();
        assert!(!deployments.is_empty());
        for d in deployments {
            assert_eq!(
                d["spec"]["template"]["spec"]["containers"][0]["image"],
                "example.org/x/trellis:t1"
            );
        }
    }
}
