//! The cost of authorization per request: 100 rules over 10 policies (DENY, ALLOW and
//! AUDIT; principals, namespaces, paths, methods, hosts, headers, IP blocks, a JWT
//! claim), evaluated for requests that pass every DENY rule and match the last ALLOW
//! rule, match none, or arrive as TCP connections. Prints criterion's figures; the
//! target is under 1 µs per evaluation. Run: `cargo bench -p trellis-proxy --bench authz`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use trellis_model::security::*;
use trellis_proxy::policy::{
    CompiledAuthz, HttpAttributes, JwtIdentity, RequestAttributes, authorize,
};

fn exact(s: &str) -> StringPattern {
    StringPattern::Exact(s.to_string())
}

/// Ten policies of ten rules: two DENY, seven ALLOW, one AUDIT. With `by_principal`,
/// each rule names its peer exactly (the proxy then refuses most rules at once);
/// without, only by namespace pattern, so every rule runs its checks.
fn policies(by_principal: bool) -> Vec<AuthzPolicy> {
    (0..10)
        .map(|p| {
            let action = match p {
                0 | 1 => AuthzAction::Deny,
                9 => AuthzAction::Audit,
                _ => AuthzAction::Allow,
            };
            let rules = (0..10)
                .map(|r| {
                    let n = p * 10 + r;
                    AuthzRule {
                        from: vec![Source {
                            principals: if by_principal {
                                vec![exact(&format!("cluster.local/ns/team-{n}/sa/client-{n}"))]
                            } else {
                                vec![]
                            },
                            namespaces: vec![StringPattern::Prefix(format!("team-{n}"))],
                            not_ip_blocks: vec!["192.0.2.0/24".parse().expect("cidr")],
                            ..Default::default()
                        }],
                        to: vec![Operation {
                            methods: vec![exact("GET"), exact("POST")],
                            paths: vec![
                                PathPattern::Pattern(StringPattern::Prefix(format!("/api/v{n}/"))),
                                PathPattern::Template {
                                    template: format!("/items/{n}/{{*}}"),
                                },
                            ],
                            hosts: vec![StringPattern::Suffix(".svc.cluster.local".into())],
                            ..Default::default()
                        }],
                        when: vec![
                            Condition::RequestHeader {
                                name: "x-tenant".into(),
                                values: Values {
                                    values: vec![exact(&format!("tenant-{n}"))],
                                    not_values: vec![],
                                },
                            },
                            Condition::RequestClaim {
                                claim: vec!["groups".into()],
                                values: Values {
                                    values: vec![exact("engineers")],
                                    not_values: vec![],
                                },
                            },
                        ],
                    }
                })
                .collect();
            AuthzPolicy {
                name: format!("bench/policy-{p}"),
                action,
                provider: None,
                dry_run: false,
                rules,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let authz = CompiledAuthz::compile(&policies(true)).expect("compiles");
    let by_namespace = CompiledAuthz::compile(&policies(false)).expect("compiles");
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("tenant-89"));
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let jwt = JwtIdentity {
        issuer: "https://issuer.example".into(),
        subject: "alice".into(),
        claims: serde_json::from_str(r#"{"groups":["dev","engineers"]}"#).expect("claims"),
    };
    let attrs = |principal: &'static str, path: &'static str| {
        RequestAttributes {
            source_ip: "10.1.0.7".parse().ok(),
            remote_ip: "10.1.0.7".parse().ok(),
            destination_ip: "10.1.0.9".parse().ok(),
            destination_port: 8080,
            http: Some(HttpAttributes {
                host: "backend.production.svc.cluster.local",
                method: "GET",
                path,
                headers: &headers,
                jwt: Some(&jwt),
            }),
            ..Default::default()
        }
        .with_peer(Some(principal))
    };
    // Matches the last rule of the last ALLOW policy: every DENY rule and every
    // earlier ALLOW rule is evaluated first.
    let last = attrs(
        "spiffe://cluster.local/ns/team-89/sa/client-89",
        "/api/v89/orders?x=1",
    );
    assert!(authorize(&authz, &last).allowed());
    let none = attrs(
        "spiffe://cluster.local/ns/outside/sa/nobody",
        "/api/v89/orders",
    );
    assert!(!authorize(&authz, &none).allowed());
    let mut tcp = last;
    tcp.http = None;
    assert!(authorize(&by_namespace, &last).allowed());

    c.bench_function("authorize 100 rules, last ALLOW rule matches", |b| {
        b.iter(|| authorize(black_box(&authz), black_box(&last)))
    });
    c.bench_function("authorize 100 rules, nothing matches (denied)", |b| {
        b.iter(|| authorize(black_box(&authz), black_box(&none)))
    });
    c.bench_function("authorize 100 rules, TCP connection", |b| {
        b.iter(|| authorize(black_box(&authz), black_box(&tcp)))
    });
    c.bench_function(
        "authorize 100 rules by namespace pattern, last ALLOW rule matches",
        |b| b.iter(|| authorize(black_box(&by_namespace), black_box(&last))),
    );
    c.bench_function(
        "authorize 100 rules by namespace pattern, nothing matches",
        |b| b.iter(|| authorize(black_box(&by_namespace), black_box(&none))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
