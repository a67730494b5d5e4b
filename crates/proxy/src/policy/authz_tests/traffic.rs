//! The matrix, continued: TCP connections (HTTP-only ALLOW rules never allow, DENY
//! rules lose their HTTP parts), AUDIT and dry-run, and conditions Trellis cannot
//! evaluate.

use super::*;

#[test]
fn tcp_connections_are_decided_by_tcp_fields() {
    let yaml = [
        ap(
            "allow-db",
            "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/frontend\"]\n    to:\n    - operation:\n        ports: [\"5432\"]\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/reporting\"]\n    to:\n    - operation:\n        ports: [\"5432\"]\n        methods: [\"GET\"]\n",
        ),
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-db-outsiders\n  namespace: istio-system\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        notNamespaces: [\"production\"]\n    to:\n    - operation:\n        ports: [\"5432\"]\n".to_string(),
    ]
    .concat();
    let reporting = Some("spiffe://cluster.local/ns/production/sa/reporting");
    let outsider = Some("spiffe://cluster.local/ns/default/sa/frontend");
    run(
        &yaml,
        &[
            (
                "principal and port allow TCP",
                get("/").tcp().port(5432),
                Allow,
            ),
            ("other port: no rule", get("/").tcp().port(6379), NotAllowed),
            // The second rule names a method: on TCP it is gone, it never allows.
            (
                "HTTP-only ALLOW rule never allows TCP",
                get("/").tcp().port(5432).peer(reporting),
                NotAllowed,
            ),
            (
                "the same rule allows HTTP",
                get("/q").port(5432).peer(reporting),
                Allow,
            ),
            (
                "mesh-wide DENY by namespace on TCP",
                get("/").tcp().port(5432).peer(outsider),
                DeniedBy("istio-system/deny-db-outsiders"),
            ),
            (
                "no peer is outside production too",
                get("/").tcp().port(5432).peer(None),
                DeniedBy("istio-system/deny-db-outsiders"),
            ),
        ],
    );
    let deny_delete = ap(
        "deny-delete",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"staging\"]\n    to:\n    - operation:\n        methods: [\"DELETE\"]\n",
    );
    let staging = Some("spiffe://cluster.local/ns/staging/sa/tool");
    run(
        &deny_delete,
        &[
            (
                "HTTP GET from staging passes",
                get("/x").peer(staging),
                Allow,
            ),
            (
                "HTTP DELETE from staging denied",
                get("/x").method("DELETE").peer(staging),
                DeniedBy("production/deny-delete"),
            ),
            // On TCP the method is dropped: the rule keeps its namespace and denies.
            (
                "TCP from staging denied conservatively",
                get("/").tcp().peer(staging),
                DeniedBy("production/deny-delete"),
            ),
            ("TCP from elsewhere passes", get("/").tcp(), Allow),
        ],
    );
}

#[test]
fn audit_records_and_dry_run_reports_without_deciding() {
    let yaml = [
        ap(
            "audit-writes",
            "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        methods: [\"POST\"]\n",
        ),
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: trial-deny\n  namespace: production\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/*\"]\n".to_string(),
    ]
    .concat();
    let authz = compile(&yaml);
    let (verdict, audit) = decide(&authz, &get("/api/x").method("POST"));
    assert_eq!((verdict, audit), (Allow, true));
    let (verdict, audit) = decide(&authz, &get("/api/x"));
    assert_eq!((verdict, audit), (Allow, false));
    let attrs = RequestAttributes {
        http: Some(HttpAttributes {
            host: "h",
            method: "GET",
            path: "/api/x",
            headers: &HeaderMap::new(),
            jwt: None,
        }),
        ..Default::default()
    };
    let d = authorize(&authz, &attrs);
    assert!(d.allowed());
    assert_eq!(
        d.dry_run,
        Some(Verdict::Deny {
            policy: Some("production/trial-deny")
        })
    );
}

#[test]
fn unsupported_conditions_fail_closed() {
    let yaml = [
        ap(
            "allow-mysql",
            "  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n",
        ),
        ap(
            "deny-admin",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin\"]\n    when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n",
        ),
    ]
    .concat();
    run(
        &yaml,
        &[
            ("an ALLOW rule with it never allows", get("/x"), NotAllowed),
            (
                "a DENY rule ignores it",
                get("/admin"),
                DeniedBy("production/deny-admin"),
            ),
        ],
    );
}
