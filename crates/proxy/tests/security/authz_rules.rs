//! Istio's evaluation order and rule forms on top of the seed's policy, each through a
//! real backend sidecar over real mutual TLS: CUSTOM (no provider: denies what it
//! matches), then DENY, then ALLOW; `notPaths` with prefix and suffix forms; an ALLOW
//! policy with no rules, alone (denies all) and beside another ALLOW (which still
//! allows).

use crate::common::*;
use crate::support::Upstream;

fn policy(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: production\nspec:\n  selector:\n    matchLabels:\n      app: backend\n{spec}"
    )
}

fn with_seed(extra: &str) -> String {
    format!("{SEED_POLICY}{extra}{}", peer_authentication("PERMISSIVE"))
}

#[tokio::test]
async fn deny_is_decided_before_allow() {
    use Expect::{Allowed, Denied};
    let deny = policy(
        "deny-admin",
        "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/admin/*\"]\n  - from:\n    - source:\n        namespaces: [\"staging\"]\n",
    );
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &with_seed(&deny), app.addr).await;
    let frontend = pki.who(NS, "frontend");
    let cases = vec![
        Case::new(
            "DENY: frontend GET /api/books still allowed",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        ),
        Case::new(
            "DENY: frontend GET /api/admin/users (ALLOW matches too)",
            &frontend,
            "GET",
            "/api/admin/users",
            Denied,
        ),
        Case::new(
            "DENY: frontend POST /api/admin/x",
            &frontend,
            "POST",
            "/api/admin/x",
            Denied,
        ),
        Case::new(
            "DENY: ns/staging GET /api/books",
            &pki.who("staging", "frontend"),
            "GET",
            "/api/books",
            Denied,
        ),
    ];
    run_cases(backend.addr, &app.hits, &cases).await;
}

#[tokio::test]
async fn not_paths_exclude_what_they_name() {
    use Expect::{Allowed, Denied};
    let allow = policy(
        "allow-but-private",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/production/sa/frontend\"]\n    to:\n    - operation:\n        methods: [\"GET\"]\n        notPaths: [\"/api/private/*\", \"*.secret\"]\n",
    );
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(
        &pki,
        &format!("{allow}{}", peer_authentication("STRICT")),
        app.addr,
    )
    .await;
    let frontend = pki.who(NS, "frontend");
    let cases = vec![
        Case::new(
            "notPaths: GET /api/public",
            &frontend,
            "GET",
            "/api/public",
            Allowed,
        ),
        Case::new(
            "notPaths: GET / (any other path)",
            &frontend,
            "GET",
            "/",
            Allowed,
        ),
        Case::new(
            "notPaths: GET /api/private/x (prefix form)",
            &frontend,
            "GET",
            "/api/private/x",
            Denied,
        ),
        Case::new(
            "notPaths: GET /keys/db.secret (suffix form)",
            &frontend,
            "GET",
            "/keys/db.secret",
            Denied,
        ),
        Case::new(
            "notPaths: POST /api/public (method)",
            &frontend,
            "POST",
            "/api/public",
            Denied,
        ),
        Case::new(
            "notPaths: sa/admin GET /api/public",
            &pki.who(NS, "admin"),
            "GET",
            "/api/public",
            Denied,
        ),
    ];
    run_cases(backend.addr, &app.hits, &cases).await;
}

#[tokio::test]
async fn an_allow_policy_with_no_rules_denies_everything_unless_another_allows() {
    use Expect::{Allowed, Denied};
    let nothing = policy("allow-nothing", "  action: ALLOW\n  rules: []\n");
    let pki = Pki::new();
    let frontend = pki.who(NS, "frontend");

    let app = Upstream::start("backend");
    let alone = backend(
        &pki,
        &format!("{nothing}{}", peer_authentication("PERMISSIVE")),
        app.addr,
    )
    .await;
    let cases = vec![
        Case::new(
            "empty ALLOW: frontend GET /api/books",
            &frontend,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "empty ALLOW: sa/admin GET /",
            &pki.who(NS, "admin"),
            "GET",
            "/",
            Denied,
        ),
        Case::new(
            "empty ALLOW: plaintext GET /",
            &Who::Plain,
            "GET",
            "/",
            Denied,
        ),
    ];
    run_cases(alone.addr, &app.hits, &cases).await;

    // ALLOW policies add up: the seed's still lets frontend in.
    let app = Upstream::start("backend");
    let beside = backend(&pki, &with_seed(&nothing), app.addr).await;
    let cases = vec![
        Case::new(
            "empty ALLOW + seed: frontend GET /api/books",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        ),
        Case::new(
            "empty ALLOW + seed: frontend PUT /api/books",
            &frontend,
            "PUT",
            "/api/books",
            Denied,
        ),
    ];
    run_cases(beside.addr, &app.hits, &cases).await;
}

#[tokio::test]
async fn a_custom_policy_denies_what_it_matches_before_any_allow() {
    use Expect::{Allowed, Denied};
    let custom = policy(
        "ext-authz",
        "  action: CUSTOM\n  provider:\n    name: my-ext-authz\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/custom/*\"]\n",
    );
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &with_seed(&custom), app.addr).await;
    let frontend = pki.who(NS, "frontend");
    let cases = vec![
        Case::new(
            "CUSTOM: frontend GET /api/books (not matched)",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        ),
        Case::new(
            "CUSTOM: frontend GET /api/custom/x (matched)",
            &frontend,
            "GET",
            "/api/custom/x",
            Denied,
        ),
        Case::new(
            "CUSTOM: frontend POST /api/custom/x",
            &frontend,
            "POST",
            "/api/custom/x",
            Denied,
        ),
    ];
    run_cases(backend.addr, &app.hits, &cases).await;
}
