//! The evaluation matrix: the seed's policy (only `cluster.local/ns/production/sa/frontend`
//! may GET and POST `/api/*` on `app: backend`) and policies around it, from YAML
//! through `trellis_compile` to a decision, as a proxy would see them.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::{CompiledAuthz, HttpAttributes, JwtIdentity, RequestAttributes, Verdict, authorize};

/// `../shared/seed/examples/07-authorizationpolicy.yaml`, as written there (a test
/// below checks they still agree when the seed is beside the checkout).
const SEED: &str = "# From the seed document: authorization policy
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend
  namespace: production
spec:
  selector:
    matchLabels:
      app: backend
  rules:
  - from:
    - source:
        principals:
        - \"cluster.local/ns/production/sa/frontend\"
    to:
    - operation:
        methods: [\"GET\", \"POST\"]
        paths: [\"/api/*\"]
";
const FRONTEND: &str = "spiffe://cluster.local/ns/production/sa/frontend";

/// Compiles `yaml` for the `app: backend` workload in `production`.
fn compile(yaml: &str) -> CompiledAuthz {
    let loaded = trellis_api::resource::load_str("policies.yaml", yaml);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    for r in &loaded.resources {
        let errors: Vec<_> = r
            .validate()
            .into_iter()
            .filter(|d| d.severity == trellis_api::check::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    let mesh = trellis_compile::Mesh::new(&loaded.resources, vec![]);
    let labels = BTreeMap::from([("app".to_string(), "backend".to_string())]);
    let target = trellis_compile::PolicyTarget {
        namespace: "production",
        labels: &labels,
        gateway: false,
        ports: &[8080],
    };
    let (security, _) = trellis_compile::security(&mesh, &target);
    CompiledAuthz::compile(&security.authorization).expect("compiles")
}

/// One request (or, with `tcp`, one connection).
#[derive(Clone)]
struct Req {
    peer: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    jwt: Option<JwtIdentity>,
    source_ip: &'static str,
    remote_ip: Option<&'static str>,
    port: u16,
    tcp: bool,
}

fn get(path: &'static str) -> Req {
    Req {
        peer: Some(FRONTEND),
        method: "GET",
        path,
        host: "backend.production.svc.cluster.local:8080",
        headers: vec![],
        jwt: None,
        source_ip: "10.1.0.7",
        remote_ip: None,
        port: 8080,
        tcp: false,
    }
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn peer(mut self, p: Option<&'static str>) -> Self {
        self.peer = p;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn host(mut self, h: &'static str) -> Self {
        self.host = h;
        self
    }
    fn source_ip(mut self, ip: &'static str) -> Self {
        self.source_ip = ip;
        self
    }
    fn remote(mut self, ip: &'static str) -> Self {
        self.remote_ip = Some(ip);
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }
    fn jwt(mut self, sub: &str, claims: serde_json::Value) -> Self {
        let mut map = claims.as_object().cloned().unwrap_or_default();
        map.insert("iss".into(), "https://issuer.example".into());
        map.insert("sub".into(), sub.into());
        self.jwt = Some(JwtIdentity {
            issuer: "https://issuer.example".into(),
            subject: sub.into(),
            claims: map,
        });
        self
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Allow,
    /// Denied by this CUSTOM or DENY policy.
    DeniedBy(&'static str),
    /// Denied because no ALLOW policy matched.
    NotAllowed,
}

fn decide(authz: &CompiledAuthz, r: &Req) -> (Expect, bool) {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    let source_ip = r.source_ip.parse().ok();
    let attrs = RequestAttributes {
        source_ip,
        remote_ip: r.remote_ip.and_then(|ip| ip.parse().ok()).or(source_ip),
        destination_ip: "10.1.0.9".parse().ok(),
        destination_port: r.port,
        http: (!r.tcp).then_some(HttpAttributes {
            host: r.host,
            method: r.method,
            path: r.path,
            headers: &headers,
            jwt: r.jwt.as_ref(),
        }),
        ..Default::default()
    }
    .with_peer(r.peer);
    let d = authorize(authz, &attrs);
    let verdict = match d.verdict {
        Verdict::Allow => Expect::Allow,
        Verdict::Deny { policy: None } => Expect::NotAllowed,
        Verdict::Deny { policy: Some(p) } => Expect::DeniedBy(match p {
            "production/deny-admin" => "production/deny-admin",
            "production/ext-authz" => "production/ext-authz",
            "production/deny-delete" => "production/deny-delete",
            "production/deny-blocked" => "production/deny-blocked",
            "production/require-jwt" => "production/require-jwt",
            "istio-system/deny-db-outsiders" => "istio-system/deny-db-outsiders",
            other => panic!("unexpected policy {other}"),
        }),
    };
    (verdict, d.audit)
}

/// Runs a table of cases against one policy set; every failure is reported at once.
fn run(yaml: &str, cases: &[(&str, Req, Expect)]) -> usize {
    let authz = compile(yaml);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(what, req, want)| {
            let (got, _) = decide(&authz, req);
            (got != *want).then(|| format!("{what}: want {want:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    cases.len()
}

fn ap(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: production\nspec:\n{spec}"
    )
}

use Expect::*;

#[test]
fn the_seed_policy_allows_only_frontend_get_and_post_under_api() {
    let other = Some("spiffe://cluster.local/ns/production/sa/other");
    let staging = Some("spiffe://cluster.local/ns/staging/sa/frontend");
    run(
        SEED,
        &[
            ("frontend GET /api/orders", get("/api/orders"), Allow),
            (
                "frontend POST /api/orders",
                get("/api/orders").method("POST"),
                Allow,
            ),
            ("query string ignored", get("/api/orders?page=2"), Allow),
            ("PUT refused", get("/api/orders").method("PUT"), NotAllowed),
            (
                "DELETE refused",
                get("/api/orders/1").method("DELETE"),
                NotAllowed,
            ),
            (
                "lowercase method is another method",
                get("/api/x").method("get"),
                NotAllowed,
            ),
            ("outside /api/", get("/admin"), NotAllowed),
            ("/api without the slash", get("/api"), NotAllowed),
            ("paths are case-sensitive", get("/API/orders"), NotAllowed),
            (
                "another service account",
                get("/api/orders").peer(other),
                NotAllowed,
            ),
            (
                "frontend of another namespace",
                get("/api/orders").peer(staging),
                NotAllowed,
            ),
            (
                "no peer identity (plaintext)",
                get("/api/orders").peer(None),
                NotAllowed,
            ),
            (
                "TCP never matches an HTTP-only ALLOW rule",
                get("/").tcp(),
                NotAllowed,
            ),
        ],
    );
}

#[test]
fn deny_wins_over_allow() {
    let yaml = format!(
        "{SEED}{}",
        ap(
            "deny-admin",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/admin/*\"]\n",
        )
    );
    run(
        &yaml,
        &[
            ("allowed path still allowed", get("/api/orders"), Allow),
            (
                "DENY before ALLOW",
                get("/api/admin/users"),
                DeniedBy("production/deny-admin"),
            ),
            (
                "DENY matches any principal",
                get("/api/admin/x").peer(None),
                DeniedBy("production/deny-admin"),
            ),
            // The DENY rule has only an HTTP field: on TCP it matches everything.
            (
                "HTTP-only DENY denies TCP",
                get("/").tcp(),
                DeniedBy("production/deny-admin"),
            ),
        ],
    );
}

#[test]
fn not_paths_and_namespaces() {
    let yaml = ap(
        "allow-health",
        "  rules:\n  - from:\n    - source:\n        namespaces: [\"production\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        notPaths: [\"/api/*\"]\n",
    );
    let web = Some("spiffe://cluster.local/ns/production/sa/web");
    let outside = Some("spiffe://cluster.local/ns/default/sa/web");
    run(
        &yaml,
        &[
            (
                "same namespace, not under /api",
                get("/healthz").peer(web),
                Allow,
            ),
            (
                "notPaths excludes /api/*",
                get("/api/orders").peer(web),
                NotAllowed,
            ),
            (
                "namespace must match",
                get("/healthz").peer(outside),
                NotAllowed,
            ),
        ],
    );
}

#[test]
fn an_allow_policy_without_rules_denies_everything_and_an_empty_rule_allows_everything() {
    let none = ap("allow-nothing", "  rules: []\n");
    run(
        &none,
        &[
            ("empty ALLOW denies HTTP", get("/api/orders"), NotAllowed),
            ("empty ALLOW denies TCP", get("/").tcp(), NotAllowed),
        ],
    );
    let all = ap("allow-all", "  rules:\n  - {}\n");
    run(
        &all,
        &[
            ("{} allows HTTP", get("/anything").peer(None), Allow),
            ("{} allows TCP", get("/").tcp().peer(None), Allow),
        ],
    );
    run("", &[("no policy allows", get("/x").peer(None), Allow)]);
}

#[test]
fn custom_matches_are_denied_before_anything_else() {
    let yaml = format!(
        "{SEED}{}",
        ap(
            "ext-authz",
            "  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/payments/*\"]\n",
        )
    );
    run(
        &yaml,
        &[
            (
                "CUSTOM match denied (fail closed)",
                get("/api/payments/1"),
                DeniedBy("production/ext-authz"),
            ),
            ("CUSTOM no match: ALLOW decides", get("/api/orders"), Allow),
        ],
    );
}

#[test]
fn the_seed_policy_here_is_the_seeds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/seed/examples/07-authorizationpolicy.yaml"
    );
    match std::fs::read_to_string(path) {
        Ok(text) => assert_eq!(text.trim(), SEED.trim()),
        Err(_) => println!("skipping: {path} is absent (the seed ships beside the checkout)"),
    }
}

mod attributes;
mod traffic;
