//! The matrix, continued: rules on the request's identity and attributes — JWT claims
//! and request principals, IP blocks, hosts and headers, and the exact-principal
//! shortcut keeping Istio's semantics.

use super::*;

#[test]
fn jwt_claims_and_request_principals() {
    let yaml = [
        ap(
            "allow-admins",
            "  rules:\n  - to:\n    - operation:\n        paths: [\"/admin*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [\"admins\"]\n  - from:\n    - source:\n        requestPrincipals: [\"https://issuer.example/alice\"]\n    to:\n    - operation:\n        paths: [\"/reports/*\"]\n",
        ),
        ap(
            "require-jwt",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/reports/*\"]\n",
        ),
    ]
    .concat();
    let admins = serde_json::json!({"groups": ["dev", "admins"]});
    let devs = serde_json::json!({"groups": "dev"});
    run(
        &yaml,
        &[
            (
                "claim in a list",
                get("/admin/users").jwt("bob", admins.clone()),
                Allow,
            ),
            (
                "claim missing the value",
                get("/admin/users").jwt("bob", devs),
                NotAllowed,
            ),
            ("no token, no claim", get("/admin/users"), NotAllowed),
            (
                "request principal alice",
                get("/reports/q3").jwt("alice", serde_json::json!({})),
                Allow,
            ),
            (
                "request principal bob",
                get("/reports/q3").jwt("bob", admins),
                NotAllowed,
            ),
            (
                "no token hits notRequestPrincipals",
                get("/reports/q3"),
                DeniedBy("production/require-jwt"),
            ),
        ],
    );
}

#[test]
fn ip_blocks_hosts_and_headers() {
    let yaml = [
        ap(
            "deny-blocked",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.9.0.0/16\"]\n  - from:\n    - source:\n        remoteIpBlocks: [\"203.0.113.0/24\"]\n",
        ),
        ap(
            "allow-tenant",
            "  rules:\n  - to:\n    - operation:\n        hosts: [\"backend.production.svc.cluster.local\"]\n    when:\n    - key: request.headers[x-tenant]\n      values: [\"acme\", \"globex*\"]\n      notValues: [\"acme-test\"]\n",
        ),
    ]
    .concat();
    let tenant = || get("/x").header("x-tenant", "acme");
    run(
        &yaml,
        &[
            ("tenant header and host", tenant(), Allow),
            (
                "host without port, any case",
                tenant().host("Backend.Production.svc.cluster.local"),
                Allow,
            ),
            ("another host", tenant().host("evil.example"), NotAllowed),
            (
                "prefix header value",
                get("/x").header("x-tenant", "globex-eu"),
                Allow,
            ),
            ("missing header", get("/x"), NotAllowed),
            (
                "unlisted header value",
                get("/x").header("x-tenant", "initech"),
                NotAllowed,
            ),
            (
                "blocked source address",
                tenant().source_ip("10.9.3.4"),
                DeniedBy("production/deny-blocked"),
            ),
            (
                "blocked original client",
                tenant().remote("203.0.113.50"),
                DeniedBy("production/deny-blocked"),
            ),
            (
                "address outside the block",
                tenant().source_ip("10.8.3.4"),
                Allow,
            ),
        ],
    );
}

#[test]
fn exact_principal_shortcuts_keep_the_semantics() {
    let yaml = ap(
        "allow-mixed",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/frontend\", \"cluster.local/ns/production/sa/batch\"]\n    - source:\n        namespaces: [\"ops\"]\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/web\"]\n        notPrincipals: [\"cluster.local/ns/production/sa/web\"]\n",
    );
    let batch = Some("spiffe://cluster.local/ns/production/sa/batch");
    let ops = Some("spiffe://cluster.local/ns/ops/sa/anyone");
    let web = Some("spiffe://cluster.local/ns/production/sa/web");
    run(
        &yaml,
        &[
            ("first of two exact principals", get("/x"), Allow),
            (
                "second of two exact principals",
                get("/x").peer(batch),
                Allow,
            ),
            ("the other entry, by namespace", get("/x").peer(ops), Allow),
            (
                "a filter hit still runs every check",
                get("/x").peer(web),
                NotAllowed,
            ),
        ],
    );
}
