//! The model is the proxy's trust boundary: whatever ProxyConfig arrives, applying it
//! never panics; a config it cannot use is refused and the one in force stays.

use proptest::prelude::*;
use trellis_model::*;
use trellis_proxy::{Options, Proxy};

fn string_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        "[a-z/]{0,8}".prop_map(StringMatch::Exact),
        "[a-z/]{0,8}".prop_map(StringMatch::Prefix),
        // Valid and invalid regexes alike.
        prop_oneof![
            Just("/api/v[0-9]+".to_string()),
            Just("(".to_string()),
            Just("[z-a]".to_string()),
            "[a-z.*+?()]{0,6}"
        ]
        .prop_map(StringMatch::Regex),
    ]
}

fn route(clusters: Vec<String>) -> impl Strategy<Value = Route> {
    let pick = proptest::sample::select(clusters);
    (
        proptest::collection::vec((pick.clone(), 0u32..200), 0..4),
        proptest::option::of(string_match()),
        proptest::collection::vec(
            (
                "[a-z-]{1,6}",
                proptest::option::of(string_match()),
                any::<bool>(),
            ),
            0..3,
        ),
        proptest::option::of(0u64..5_000),
        proptest::option::of((0.0f64..150.0, 0u64..10)),
        proptest::option::of(("\\PC{0,6}", "\\PC{0,6}")),
        proptest::collection::vec(pick, 0..2),
    )
        .prop_map(
            |(weighted, uri, headers, timeout, fault, regex_rewrite, mirrors)| Route {
                name: "r".into(),
                matches: vec![RouteMatch {
                    uri,
                    headers: headers
                        .into_iter()
                        .map(|(name, value, invert)| HeaderMatch {
                            name,
                            value,
                            invert,
                        })
                        .collect(),
                    ..Default::default()
                }],
                action: Action::Forward(Forward {
                    clusters: weighted
                        .into_iter()
                        .map(|(cluster, weight)| WeightedCluster {
                            cluster,
                            weight,
                            ..Default::default()
                        })
                        .collect(),
                    rewrite: regex_rewrite.map(|r| Rewrite {
                        uri_regex: Some(r),
                        ..Default::default()
                    }),
                }),
                timeout_ms: timeout,
                fault: fault.map(|(percent, delay_ms)| Fault {
                    delay: Some(FaultDelay { percent, delay_ms }),
                    abort: None,
                }),
                mirrors: mirrors
                    .into_iter()
                    .map(|cluster| Mirror {
                        cluster,
                        percent: 50.0,
                    })
                    .collect(),
                request_headers: HeaderOps {
                    set: vec![("bad header\n".into(), "x".into())],
                    ..Default::default()
                },
                ..Default::default()
            },
        )
}

fn config() -> impl Strategy<Value = ProxyConfig> {
    let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    let referenced = names
        .iter()
        .cloned()
        .chain(["missing".to_string()])
        .collect::<Vec<_>>();
    (
        proptest::collection::vec(route(referenced), 0..5),
        proptest::collection::vec(("[a-z*.]{0,8}", any::<bool>()), 0..4),
        0usize..4,
        prop_oneof![
            Just(LoadBalancer::RoundRobin),
            Just(LoadBalancer::LeastRequest),
            Just(LoadBalancer::Random),
            Just(LoadBalancer::ConsistentHash(HashPolicy {
                key: HashKey::SourceIp,
                algorithm: HashAlgorithm::Maglev
            })),
            Just(LoadBalancer::ConsistentHash(HashPolicy {
                key: HashKey::Header("x".into()),
                algorithm: HashAlgorithm::RingHash
            })),
        ],
        proptest::collection::vec(1u16..65535, 0..3),
    )
        .prop_map(move |(routes, domains, clusters, lb, ports)| ProxyConfig {
            version: 2,
            node: Node::default(),
            listeners: vec![Listener {
                name: "l".into(),
                bind: None,
                route_table: Some("t".into()),
                ..Default::default()
            }],
            route_tables: vec![RouteTable {
                name: "t".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "v".into(),
                    domains: domains.into_iter().map(|(d, _)| d).collect(),
                    routes,
                }],
            }],
            clusters: names[..clusters]
                .iter()
                .map(|n| Cluster {
                    name: n.clone(),
                    lb: lb.clone(),
                    endpoints: ports
                        .iter()
                        .map(|p| Endpoint {
                            address: Some(([127, 0, 0, 1], *p).into()),
                            weight: u32::from(*p % 3),
                            ..Default::default()
                        })
                        .collect(),
                    outlier: Some(OutlierDetection {
                        consecutive_5xx: 1,
                        max_ejection_percent: 300,
                        min_health_percent: 150,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            security: Default::default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_config_is_applied_or_refused_without_panicking(cfg in config()) {
        static PROXY: std::sync::OnceLock<Proxy> = std::sync::OnceLock::new();
        let proxy = PROXY.get_or_init(|| Proxy::start(ProxyConfig::default(), Options::default()).expect("empty config starts"));
        proxy.update(ProxyConfig { version: 1, ..Default::default() }).expect("the empty config applies");
        match proxy.update(cfg) {
            Ok(()) => prop_assert_eq!(proxy.version(), 2),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(proxy.version(), 1, "a refused config leaves the old one in force");
            }
        }
    }
}
