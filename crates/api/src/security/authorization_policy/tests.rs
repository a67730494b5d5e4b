//! AuthorizationPolicy validation, end to end: each test loads a policy from YAML and
//! checks the findings (message and field path) Istio's validation would give.

use crate::security::test_support::{assert_clean, assert_error, errors, warnings};

fn ap(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: shop\nspec:\n{spec}"
    )
}

fn rule_from(source: &str) -> String {
    ap(&format!("  rules:\n  - from:\n    - source:\n{source}"))
}

fn rule_to(operation: &str) -> String {
    ap(&format!("  rules:\n  - to:\n    - operation:\n{operation}"))
}

fn rule_when(condition: &str) -> String {
    ap(&format!("  rules:\n  - when:\n    - {condition}\n"))
}

#[test]
fn allow_nothing_and_allow_all_are_valid() {
    assert_clean(&ap("  {}\n"));
    assert_clean(&ap("  rules:\n  - {}\n"));
}

#[test]
fn custom_action_requires_provider() {
    assert_error(
        &ap("  action: CUSTOM\n  rules:\n  - {}\n"),
        "`provider.name` must not be empty",
    );
    assert_error(
        &ap("  action: CUSTOM\n  provider: {}\n  rules:\n  - {}\n"),
        "`provider.name` must not be empty",
    );
    assert_clean(&ap(
        "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - {}\n",
    ));
}

#[test]
fn provider_requires_custom_action() {
    assert_error(
        &ap("  provider:\n    name: ext\n  rules:\n  - {}\n"),
        "`provider` must not be with non CUSTOM action, found ALLOW",
    );
}

#[test]
fn deny_and_custom_need_rules() {
    assert_error(&ap("  action: DENY\n"), "DENY action without `rules`");
    assert_error(
        &ap("  action: CUSTOM\n  provider:\n    name: ext\n"),
        "CUSTOM action without `rules`",
    );
    let audit = ap("  action: AUDIT\n");
    assert_clean(&audit);
    assert_eq!(warnings(&audit).len(), 1);
}

#[test]
fn custom_action_refuses_identity_fields() {
    assert_error(
        &ap(
            "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - from:\n    - source:\n        principals: [a]\n",
        ),
        "From.Principals is currently not supported with CUSTOM action",
    );
    assert_error(
        &ap(
            "  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - when:\n    - key: request.auth.claims[iss]\n      values: [x]\n",
        ),
        "request.auth.claims[iss] is currently not supported with CUSTOM action",
    );
}

#[test]
fn unknown_action_suggests_the_nearest() {
    assert_error(&ap("  action: DENNY\n"), "did you mean `DENY`?");
}

#[test]
fn empty_from_source_and_operation_are_rejected() {
    assert_error(
        &ap("  rules:\n  - from: []\n"),
        "`from` must not be empty, found at rule 0",
    );
    assert_error(
        &ap("  rules:\n  - from:\n    - {}\n"),
        "`from.source` must not be nil",
    );
    assert_error(
        &ap("  rules:\n  - from:\n    - source: {}\n"),
        "`from.source` must not be empty",
    );
    assert_error(&ap("  rules:\n  - to: []\n"), "`to` must not be empty");
    assert_error(
        &ap("  rules:\n  - to:\n    - {}\n"),
        "`to.operation` must not be nil",
    );
    assert_error(
        &ap("  rules:\n  - to:\n    - operation: {}\n"),
        "`to.operation` must not be empty",
    );
}

#[test]
fn ip_blocks_must_be_ips_or_cidrs() {
    assert_error(
        &rule_from("        ipBlocks: [10.20.0.0/33]\n"),
        "bad CIDR range (10.20.0.0/33)",
    );
    assert_error(
        &rule_from("        notRemoteIpBlocks: [not-an-ip]\n"),
        "bad IP address (not-an-ip)",
    );
    assert_clean(&rule_from(
        "        ipBlocks: [1.2.3.4, 5.6.0.0/16, \"2001:db8::/32\"]\n",
    ));
}

#[test]
fn ports_must_be_numeric() {
    let errs = errors(&rule_to("        ports: [https]\n"));
    assert!(
        errs.iter()
            .any(|e| e.contains("bad port (https)") && e.contains("ports[0]")),
        "{errs:?}"
    );
    assert_error(
        &rule_to("        notPorts: [\"70000\"]\n"),
        "bad port (70000)",
    );
    assert_clean(&rule_to("        ports: [\"8080\"]\n"));
}

#[test]
fn empty_values_are_rejected() {
    assert_error(
        &rule_from("        principals: [\"\"]\n"),
        "empty value not allowed, found in principals",
    );
    assert_error(
        &rule_from("        namespaces: [\"\"]\n"),
        "empty value not allowed, found in namespaces",
    );
    assert_error(
        &rule_to("        methods: [\"\"]\n"),
        "empty value not allowed, found in methods",
    );
}

#[test]
fn service_accounts_exclude_principals_and_namespaces() {
    assert_error(
        &rule_from("        serviceAccounts: [shop/checkout]\n        namespaces: [shop]\n"),
        "cannot set serviceAccounts with namespaces or principals",
    );
    assert_error(
        &rule_from("        notServiceAccounts: [a]\n        principals: [b]\n"),
        "cannot set serviceAccounts with namespaces or principals",
    );
    assert_error(
        &rule_from("        serviceAccounts: [a/b/c]\n"),
        "`namespace/name`",
    );
    assert_clean(&rule_from("        serviceAccounts: [shop/checkout, sa]\n"));
}

#[test]
fn path_templates_are_limited() {
    assert_clean(&rule_to("        paths: [\"/a/{*}\", \"/{**}/b\"]\n"));
    assert_error(
        &rule_to("        paths: [\"/a/{*}/{name}\"]\n"),
        "unsupported path template",
    );
    assert_error(
        &rule_to("        paths: [\"/{*}/*/b\"]\n"),
        "unsupported path template",
    );
}

#[test]
fn condition_needs_values() {
    assert_error(
        &rule_when("key: request.headers[x-tenant]"),
        "at least one of `values` or `notValues` must be set for key request.headers[x-tenant]",
    );
}

#[test]
fn condition_keys_must_be_known() {
    assert_error(
        &rule_when("key: request.body\n      values: [x]"),
        "unknown attribute: request.body",
    );
    assert_error(
        &rule_when("key: source.principle\n      values: [x]"),
        "did you mean `source.principal`?",
    );
    assert_error(
        &rule_when("key: destination.namespace\n      values: [x]"),
        "replaced by the metadata.namespace",
    );
    assert_error(
        &rule_when("key: destination.labels[app]\n      values: [x]"),
        "replaced by the workload selector",
    );
    assert_error(
        &rule_when("key: request.headers\n      values: [x]"),
        "should have format request.headers[name]",
    );
    assert_error(
        &rule_when("key: \"\"\n      values: [x]"),
        "`key` must not be empty",
    );
}

#[test]
fn condition_values_follow_the_key() {
    assert_error(
        &rule_when("key: source.ip\n      values: [10.0.0.0/40]"),
        "invalid value for key source.ip",
    );
    assert_error(
        &rule_when("key: destination.port\n      notValues: [http]"),
        "invalid value for key destination.port",
    );
    for key in [
        "request.headers[:method]",
        "request.auth.claims[nested1][nested2]",
        "experimental.envoy.filters.a.b[c]",
        "source.trustDomain",
        "connection.sni",
    ] {
        assert_clean(&rule_when(&format!("key: \"{key}\"\n      values: [x]")));
    }
}

#[test]
fn selector_and_target_ref_are_exclusive() {
    assert_error(
        &ap(
            "  selector:\n    matchLabels:\n      app: cart\n  targetRef:\n    group: gateway.networking.k8s.io\n    kind: Gateway\n    name: edge\n  rules:\n  - {}\n",
        ),
        "only one of `selector`, `targetRef` or `targetRefs` can be set",
    );
}

#[test]
fn target_ref_kind_and_namespace_are_checked() {
    assert_error(
        &ap("  targetRef:\n    group: apps\n    kind: Deployment\n    name: cart\n"),
        "targetRef must be to one of",
    );
    assert_error(
        &ap(
            "  targetRef:\n    group: \"\"\n    kind: Service\n    name: cart\n    namespace: billing\n",
        ),
        "targetRef namespace must not be set",
    );
    assert_error(
        &ap("  targetRefs:\n  - group: \"\"\n    kind: Service\n"),
        "targetRef name must be set",
    );
    assert_clean(&ap(
        "  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: cart\n  - group: gateway.networking.k8s.io\n    kind: GatewayClass\n    name: waypoint\n",
    ));
}

#[test]
fn dry_run_needs_allow_or_deny_and_a_boolean() {
    let with = |value: &str, action: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: \"{value}\"\nspec:\n  action: {action}\n  provider:\n    name: ext\n  rules:\n  - {{}}\n"
        )
    };
    assert_error(
        &with("true", "CUSTOM"),
        "only supports action ALLOW or DENY",
    );
    let allow = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: \"maybe\"\nspec:\n  rules:\n  - {}\n";
    assert_error(allow, "invalid value `maybe`");
}

#[test]
fn deny_with_only_http_fields_warns_about_tcp() {
    let doc = ap("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n");
    assert_clean(&doc);
    assert!(warnings(&doc).iter().any(|w| w.contains("TCP ports")));
    let with_port = ap(
        "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n        ports: [\"80\"]\n",
    );
    assert!(warnings(&with_port).is_empty());
}

#[test]
fn errors_point_at_the_field() {
    let errs = errors(&rule_from("        ipBlocks: [1.2.3.4, bad]\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.rules[0].from[0].source.ipBlocks[1]:")),
        "{errs:?}"
    );
}

#[test]
fn custom_action_warns_that_it_denies_what_it_matches() {
    let doc = ap("  action: CUSTOM\n  provider:\n    name: ext\n  rules:\n  - {}\n");
    assert_clean(&doc);
    assert_eq!(
        warnings(&doc),
        [format!("spec: {}", super::CUSTOM_NOT_SUPPORTED)]
    );
}

#[test]
fn experimental_envoy_filter_keys_are_accepted_with_a_warning() {
    let doc = rule_when(
        "key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]",
    );
    assert_clean(&doc);
    let w = warnings(&doc);
    assert!(
        w.len() == 1
            && w[0].contains("not supported by Trellis")
            && w[0].starts_with("spec.rules[0].when[0].key"),
        "{w:?}"
    );
}

#[test]
fn target_ref_may_name_a_classic_gateway() {
    assert_clean(&ap(
        "  targetRef:\n    group: networking.istio.io\n    kind: Gateway\n    name: public\n  rules:\n  - {}\n",
    ));
}
