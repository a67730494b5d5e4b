//! Selection and precedence: which PeerAuthentication, AuthorizationPolicy and
//! RequestAuthentication reach a workload, and what they compile to.

use std::collections::BTreeMap;

use trellis_model::security::*;

use super::{PolicyTarget, parse_rfc3339, security};
use crate::mesh::Mesh;

fn mesh(yaml: &str) -> Mesh {
    let loaded = trellis_api::resource::load_str("t.yaml", yaml);
    assert!(
        loaded.diagnostics.is_empty(),
        "load: {:?}",
        loaded.diagnostics
    );
    Mesh::new(&loaded.resources, vec![])
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sidecar<'a>(
    ns: &'a str,
    labels: &'a BTreeMap<String, String>,
    ports: &'a [u16],
) -> PolicyTarget<'a> {
    PolicyTarget {
        namespace: ns,
        labels,
        gateway: false,
        ports,
    }
}

fn pa(ns: &str, name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}

fn ap(ns: &str, name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}

const BACKEND: &[(&str, &str)] = &[("app", "backend"), ("version", "v1")];

#[test]
fn nothing_applies_means_permissive() {
    let m = mesh(&pa("other", "strict", "  mtls:\n    mode: STRICT\n"));
    let l = labels(BACKEND);
    let (s, notes) = security(&m, &sidecar("production", &l, &[8080]));
    assert_eq!(s.mtls.mode, MtlsMode::Permissive);
    assert_eq!(s.mtls.mode_for(8080), MtlsMode::Permissive);
    assert!(s.mtls.from.is_empty() && s.authorization.is_empty() && notes.is_empty());
}

#[test]
fn namespace_overrides_mesh_and_workload_overrides_namespace() {
    let yaml = [
        pa("istio-system", "mesh", "  mtls:\n    mode: STRICT\n"),
        pa("production", "ns", "  mtls:\n    mode: PERMISSIVE\n"),
        pa(
            "production",
            "backend",
            "  selector:\n    matchLabels:\n      app: backend\n  mtls:\n    mode: DISABLE\n",
        ),
    ]
    .concat();
    let m = mesh(&yaml);
    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &backend, &[]));
    assert_eq!(s.mtls.mode, MtlsMode::Disable);
    assert_eq!(
        s.mtls.from,
        ["istio-system/mesh", "production/ns", "production/backend"]
    );
    let other = labels(&[("app", "frontend")]);
    let (s, _) = security(&m, &sidecar("production", &other, &[]));
    assert_eq!(s.mtls.mode, MtlsMode::Permissive);
    let (s, _) = security(&m, &sidecar("staging", &other, &[]));
    assert_eq!(s.mtls.mode, MtlsMode::Strict, "the mesh-wide policy");
}

#[test]
fn unset_inherits_from_the_scope_above() {
    let yaml = [
        pa("istio-system", "mesh", "  mtls:\n    mode: STRICT\n"),
        pa("production", "ns", "  mtls:\n    mode: UNSET\n"),
        pa(
            "production",
            "backend",
            "  selector:\n    matchLabels:\n      app: backend\n",
        ),
    ]
    .concat();
    let m = mesh(&yaml);
    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &backend, &[8080]));
    assert_eq!(s.mtls.mode, MtlsMode::Strict);
    assert_eq!(s.mtls.mode_for(8080), MtlsMode::Strict);
}

#[test]
fn port_level_mtls_overrides_per_workload_port_and_unset_takes_the_workload_mode() {
    let yaml = [
        pa("production", "ns", "  mtls:\n    mode: STRICT\n"),
        pa(
            "production",
            "backend",
            "  selector:\n    matchLabels:\n      app: backend\n  mtls:\n    mode: PERMISSIVE\n  portLevelMtls:\n    \"8080\":\n      mode: DISABLE\n    \"9090\":\n      mode: UNSET\n",
        ),
    ]
    .concat();
    let m = mesh(&yaml);
    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &backend, &[8080, 9090, 7070]));
    assert_eq!(s.mtls.mode, MtlsMode::Permissive);
    assert_eq!(s.mtls.mode_for(8080), MtlsMode::Disable);
    assert_eq!(s.mtls.mode_for(9090), MtlsMode::Permissive);
    assert_eq!(s.mtls.mode_for(7070), MtlsMode::Permissive);
    assert_eq!(s.mtls.ports.len(), 3, "every inbound port is listed");
}

#[test]
fn among_equal_scopes_the_oldest_wins_then_the_name() {
    let yaml = [
        pa(
            "production",
            "b-old",
            "  selector:\n    matchLabels:\n      app: backend\n  mtls:\n    mode: STRICT\n",
        )
        .replace(
            "namespace: production",
            "namespace: production\n  creationTimestamp: \"2024-01-01T00:00:00Z\"",
        ),
        pa(
            "production",
            "a-new",
            "  selector:\n    matchLabels:\n      version: v1\n  mtls:\n    mode: DISABLE\n",
        )
        .replace(
            "namespace: production",
            "namespace: production\n  creationTimestamp: \"2025-01-01T00:00:00Z\"",
        ),
    ]
    .concat();
    let m = mesh(&yaml);
    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &backend, &[]));
    assert_eq!(s.mtls.mode, MtlsMode::Strict, "the older policy wins");
    // Without timestamps, the name decides.
    let m = mesh(&yaml.replace("  creationTimestamp:", "  x-ignored:"));
    let (s, _) = security(&m, &sidecar("production", &backend, &[]));
    assert_eq!(
        s.mtls.mode,
        MtlsMode::Disable,
        "`a-new` sorts before `b-old`"
    );
}

#[test]
fn root_namespace_selector_peer_authentication_is_ignored() {
    let m = mesh(&pa(
        "istio-system",
        "sel",
        "  selector:\n    matchLabels:\n      app: backend\n  mtls:\n    mode: STRICT\n",
    ));
    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &backend, &[]));
    assert_eq!(s.mtls.mode, MtlsMode::Permissive);
}

#[test]
fn authorization_scopes_root_namespace_and_selector() {
    let yaml = [
        ap("istio-system", "mesh-deny", "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin*\"]\n"),
        ap("istio-system", "root-selected", "  selector:\n    matchLabels:\n      app: backend\n  rules:\n  - {}\n"),
        ap("production", "ns-wide", "  rules:\n  - {}\n"),
        ap("production", "allow-frontend", "  selector:\n    matchLabels:\n      app: backend\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/frontend\"]\n    to:\n    - operation:\n        methods: [\"GET\", \"POST\"]\n        paths: [\"/api/*\"]\n"),
        ap("staging", "elsewhere", "  rules:\n  - {}\n"),
    ]
    .concat();
    let m = mesh(&yaml);
    let backend = labels(BACKEND);
    let names = |ns: &str, l: &BTreeMap<String, String>| -> Vec<String> {
        security(&m, &sidecar(ns, l, &[]))
            .0
            .authorization
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(
        names("production", &backend),
        [
            "istio-system/mesh-deny",
            "istio-system/root-selected",
            "production/allow-frontend",
            "production/ns-wide"
        ]
    );
    let frontend = labels(&[("app", "frontend")]);
    assert_eq!(
        names("production", &frontend),
        ["istio-system/mesh-deny", "production/ns-wide"]
    );
    assert_eq!(
        names("staging", &backend),
        [
            "istio-system/mesh-deny",
            "istio-system/root-selected",
            "staging/elsewhere"
        ]
    );

    let (s, _) = security(&m, &sidecar("production", &backend, &[]));
    let allow = &s.authorization[2];
    assert_eq!(allow.action, AuthzAction::Allow);
    let rule = &allow.rules[0];
    assert_eq!(
        rule.from[0].principals,
        [StringPattern::Exact(
            "cluster.local/ns/production/sa/frontend".into()
        )]
    );
    assert_eq!(
        rule.to[0].paths,
        [PathPattern::Pattern(StringPattern::Prefix("/api/".into()))]
    );
    assert_eq!(s.authorization[0].action, AuthzAction::Deny);
}

#[test]
fn empty_rules_and_an_empty_rule_are_kept_apart() {
    let yaml = [
        ap("production", "nothing", "  {}\n"),
        ap("production", "empty-list", "  rules: []\n"),
        ap("production", "everything", "  rules:\n  - {}\n"),
    ]
    .concat();
    let m = mesh(&yaml);
    let l = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &l, &[]));
    let rules: Vec<usize> = s.authorization.iter().map(|p| p.rules.len()).collect();
    assert_eq!(
        rules,
        [0, 1, 0],
        "sorted by name: empty-list, everything, nothing"
    );
    assert_eq!(s.authorization[1].rules[0], AuthzRule::default());
}

#[test]
fn target_ref_reaches_the_gateway_and_not_sidecars() {
    let gateway = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: public\n  namespace: istio-system\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: 80\n      name: http\n      protocol: HTTP\n    hosts: [\"*\"]\n";
    let yaml = [
        gateway.to_string(),
        ap("istio-system", "at-gateway", "  targetRefs:\n  - group: networking.istio.io\n    kind: Gateway\n    name: public\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/private*\"]\n"),
        ap("istio-system", "at-k8s-gateway", "  targetRef:\n    group: gateway.networking.k8s.io\n    kind: Gateway\n    name: web\n  rules:\n  - {}\n"),
        ap("istio-system", "at-service", "  targetRef:\n    kind: Service\n    group: \"\"\n    name: backend\n  rules:\n  - {}\n"),
    ]
    .concat();
    let m = mesh(&yaml);
    let gw_labels = labels(&[("istio", "ingressgateway")]);
    let gw = PolicyTarget {
        namespace: "istio-system",
        labels: &gw_labels,
        gateway: true,
        ports: &[],
    };
    let names: Vec<String> = security(&m, &gw)
        .0
        .authorization
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["istio-system/at-gateway"]);

    let k8s_labels = labels(&[("gateway.networking.k8s.io/gateway-name", "web")]);
    let k8s = PolicyTarget {
        namespace: "istio-system",
        labels: &k8s_labels,
        gateway: true,
        ports: &[],
    };
    let names: Vec<String> = security(&m, &k8s)
        .0
        .authorization
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["istio-system/at-k8s-gateway"]);

    let backend = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("istio-system", &backend, &[]));
    assert!(
        s.authorization.is_empty(),
        "a targetRef never reaches a sidecar"
    );
}

#[test]
fn custom_is_compiled_with_a_note() {
    let m = mesh(&ap(
        "production",
        "ext",
        "  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin\"]\n",
    ));
    let l = labels(BACKEND);
    let (s, notes) = security(&m, &sidecar("production", &l, &[]));
    assert_eq!(s.authorization[0].action, AuthzAction::Custom);
    assert_eq!(s.authorization[0].provider.as_deref(), Some("opa"));
    assert!(
        notes
            .iter()
            .any(|n| n.message == super::CUSTOM_NOT_SUPPORTED),
        "{notes:?}"
    );
}

#[test]
fn conditions_are_typed_by_key() {
    let m = mesh(&ap(
        "production",
        "conds",
        "  rules:\n  - when:\n    - key: request.headers[X-Tenant]\n      values: [\"acme\"]\n    - key: request.auth.claims[groups]\n      values: [\"admins\"]\n    - key: source.ip\n      notValues: [\"10.0.0.0/8\"]\n    - key: destination.port\n      values: [\"8080\"]\n    - key: request.auth.principal\n      values: [\"https://issuer.example/alice\"]\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n",
    ));
    let l = labels(BACKEND);
    let (s, notes) = security(&m, &sidecar("production", &l, &[]));
    let when = &s.authorization[0].rules[0].when;
    assert!(matches!(&when[0], Condition::RequestHeader { name, .. } if name == "x-tenant"));
    assert!(matches!(&when[1], Condition::RequestClaim { claim, .. } if claim == &["groups"]));
    assert!(
        matches!(&when[2], Condition::SourceIp(v) if v.not_values[0].to_string() == "10.0.0.0/8")
    );
    assert!(matches!(&when[3], Condition::DestinationPort(v) if v.values == [8080]));
    assert!(
        matches!(&when[4], Condition::RequestPrincipal(v) if v.values[0].subject == StringPattern::Exact("alice".into()))
    );
    assert!(matches!(&when[5], Condition::Unsupported { .. }));
    assert!(
        notes
            .iter()
            .any(|n| n.message.contains("not supported by Trellis"))
    );
}

#[test]
fn request_authentication_rules_merge_with_default_locations() {
    let yaml = "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: mesh\n  namespace: istio-system\nspec:\n  jwtRules:\n  - issuer: https://z.example\n    jwksUri: https://z.example/jwks\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: backend\n  namespace: production\nspec:\n  selector:\n    matchLabels:\n      app: backend\n  jwtRules:\n  - issuer: https://a.example\n    jwks: '{\"keys\": []}'\n    fromHeaders:\n    - name: X-Token\n    outputClaimToHeaders:\n    - header: X-Group\n      claim: group\n";
    let m = mesh(yaml);
    let l = labels(BACKEND);
    let (s, _) = security(&m, &sidecar("production", &l, &[]));
    let issuers: Vec<&str> = s.jwt_rules.iter().map(|r| r.issuer.as_str()).collect();
    assert_eq!(issuers, ["https://a.example", "https://z.example"]);
    let a = &s.jwt_rules[0];
    assert_eq!(
        a.from_headers,
        [JwtHeader {
            name: "x-token".into(),
            prefix: String::new()
        }]
    );
    assert!(a.from_params.is_empty());
    assert_eq!(a.output_claim_to_headers[0].header, "x-group");
    let z = &s.jwt_rules[1];
    assert_eq!(z.from_headers[0].name, "authorization");
    assert_eq!(z.from_params, ["access_token"]);
    assert!(matches!(
        &z.jwks,
        Jwks::Remote {
            state: JwksFetch::Pending,
            ..
        }
    ));
    let other = labels(&[("app", "frontend")]);
    let (s, _) = security(&m, &sidecar("production", &other, &[]));
    assert_eq!(s.jwt_rules.len(), 1, "only the mesh-wide rule");
}

#[test]
fn sidecar_and_gateway_configs_carry_their_security() {
    let m = mesh(&pa("production", "ns", "  mtls:\n    mode: STRICT\n"));
    let who = crate::ProxyIdentity {
        name: "backend".into(),
        namespace: "production".into(),
        labels: labels(BACKEND),
        ..Default::default()
    };
    let inbound = [crate::Inbound {
        listen: "127.0.1.1:8080".parse().expect("addr"),
        app: "127.0.2.1:8080".parse().expect("addr"),
        port: 8080,
    }];
    let (config, _) = crate::sidecar(
        &m,
        &who,
        "127.0.1.1:15001".parse().expect("addr"),
        &inbound,
        1,
    );
    assert_eq!(config.security.mtls.mode_for(8080), MtlsMode::Strict);
    assert!(config.check().is_ok());
    let (config, _) = crate::gateway(&m, &who, &BTreeMap::new(), 1);
    assert_eq!(config.security.mtls.mode, MtlsMode::Strict);
}

#[test]
fn timestamps_read_as_seconds() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
    assert_eq!(
        parse_rfc3339("2024-01-01T02:00:00.25+02:00"),
        Some(1_704_067_200)
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}
