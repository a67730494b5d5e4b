//! The proxy end to end on loopback: real upstream servers, a real proxy, real HTTP.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::*;
use trellis_model::*;

/// Allowed deviation from an expected count: `k` binomial standard deviations.
fn within(count: usize, n: usize, p: f64, k: f64) -> bool {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - n as f64 * p).abs() <= k * sd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_route_splits_ninety_ten_and_header_match_wins() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let port = 0; // the OS picks; `start` says which
    let routes = vec![
        Route {
            name: "beta".into(),
            matches: vec![RouteMatch {
                headers: vec![HeaderMatch {
                    name: "x-user-type".into(),
                    value: Some(StringMatch::Exact("beta".into())),
                    invert: false,
                }],
                ..Default::default()
            }],
            action: forward(&[("v2", 100)]),
            ..Default::default()
        },
        Route {
            name: "canary".into(),
            action: forward(&[("v1", 90), ("v2", 10)]),
            ..Default::default()
        },
    ];
    let clusters = vec![
        cluster("v1", vec![endpoint(v1.addr, "v1")]),
        cluster("v2", vec![endpoint(v2.addr, "v2")]),
    ];
    let (_proxy, addr) = start(config(port, routes, clusters), false).await;
    let mut client = Client::new(addr);
    let n = 2000;
    let mut to_v2 = 0;
    for _ in 0..n {
        let r = client.get("reviews:9080", "/", &[]).await.expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        to_v2 += usize::from(r.upstream == "v2");
    }
    assert!(within(to_v2, n, 0.10, 4.5), "v2 got {to_v2} of {n}");
    for _ in 0..50 {
        let r = client
            .get("reviews", "/", &[("x-user-type", "beta")])
            .await
            .expect("request");
        assert_eq!(r.upstream, "v2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_host_is_404_with_nr() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let r = Client::new(addr)
        .get("nowhere", "/", &[])
        .await
        .expect("request");
    assert_eq!((r.status, r.flags.as_str()), (404, "NR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_lands_near_its_percentages() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let route = Route {
        action: forward(&[("v1", 100)]),
        fault: Some(Fault {
            delay: Some(FaultDelay {
                percent: 10.0,
                delay_ms: 20,
            }),
            abort: Some(FaultAbort {
                percent: 5.0,
                http_status: Some(500),
                grpc_status: None,
            }),
        }),
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![route],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    let n = 2000;
    let (mut aborted, mut delayed) = (0, 0);
    for _ in 0..n {
        let r = client.get("reviews", "/", &[]).await.expect("request");
        if r.status == 500 {
            aborted += 1;
            assert!(r.flags.contains("FI"), "{r:?}");
        }
        delayed += usize::from(r.flags.contains("DI"));
    }
    assert!(within(aborted, n, 0.05, 4.5), "aborted {aborted} of {n}");
    assert!(within(delayed, n, 0.10, 4.5), "delayed {delayed} of {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_uf_and_retries_exhaust_with_urx() {
    let port = 0; // the OS picks; `start` says which
    let (_held, dead) = refused_addr();
    let plain = Route {
        name: "plain".into(),
        matches: vec![RouteMatch {
            uri: Some(StringMatch::Prefix("/plain".into())),
            ..Default::default()
        }],
        action: forward(&[("dead", 100)]),
        ..Default::default()
    };
    let retried = Route {
        name: "retried".into(),
        action: forward(&[("dead", 100)]),
        retry: Some(RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: vec!["connect-failure".into()],
            retriable_status_codes: vec![],
        }),
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![plain, retried],
            vec![cluster("dead", vec![endpoint(dead, "v1")])],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    let r = client.get("reviews", "/plain", &[]).await.expect("request");
    assert_eq!((r.status, r.flags.as_str()), (503, "UF"), "{r:?}");
    let r = client.get("reviews", "/x", &[]).await.expect("request");
    assert_eq!((r.status, r.flags.as_str()), (503, "UF,URX"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_upstream() {
    let bad = Upstream::start("bad");
    bad.forced_status.store(503, Ordering::Relaxed);
    let good = Upstream::start("good");
    let port = 0; // the OS picks; `start` says which
    let route = Route {
        action: forward(&[("both", 100)]),
        retry: Some(RetryPolicy {
            attempts: 3,
            per_try_timeout_ms: None,
            retry_on: vec!["5xx".into()],
            retriable_status_codes: vec![],
        }),
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![route],
            vec![cluster(
                "both",
                vec![endpoint(bad.addr, "v1"), endpoint(good.addr, "v2")],
            )],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    for _ in 0..40 {
        let r = client.get("reviews", "/", &[]).await.expect("request");
        assert_eq!((r.status, r.upstream.as_str()), (200, "good"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_brings_it_back() {
    let bad = Upstream::start("bad");
    bad.forced_status.store(500, Ordering::Relaxed);
    let good = Upstream::start("good");
    let port = 0; // the OS picks; `start` says which
    let mut c = cluster(
        "both",
        vec![endpoint(bad.addr, "v1"), endpoint(good.addr, "v2")],
    );
    c.outlier = Some(OutlierDetection {
        consecutive_5xx: 3,
        consecutive_gateway_errors: 0,
        interval_ms: 100,
        base_ejection_ms: 500,
        max_ejection_percent: 50,
        min_health_percent: 0,
    });
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("both", 100)]),
                ..Default::default()
            }],
            vec![c],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    let mut errors = 0;
    for _ in 0..20 {
        errors += usize::from(
            client
                .get("reviews", "/", &[])
                .await
                .expect("request")
                .status
                == 500,
        );
    }
    assert_eq!(
        errors, 3,
        "exactly the three errors that trip ejection reach the client"
    );
    let before = bad.hits.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(
            client
                .get("reviews", "/", &[])
                .await
                .expect("request")
                .upstream,
            "good"
        );
    }
    assert_eq!(
        bad.hits.load(Ordering::Relaxed),
        before,
        "ejected endpoint gets nothing"
    );
    bad.forced_status.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut back = false;
    for _ in 0..20 {
        back |= client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .upstream
            == "bad";
    }
    assert!(back, "after baseEjectionTime the endpoint serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_overflow_with_uo() {
    let slow = Upstream::start("slow");
    let port = 0; // the OS picks; `start` says which
    let mut c = cluster("slow", vec![endpoint(slow.addr, "v1")]);
    c.pool.max_connections = 1;
    c.pool.max_pending_requests = 1;
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("slow", 100)]),
                ..Default::default()
            }],
            vec![c],
        ),
        false,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(tokio::spawn(async move {
            Client::new(addr).get("reviews", "/delay/300", &[]).await
        }));
    }
    let mut overflowed = 0;
    let mut ok = 0;
    for t in tasks {
        let r = t.await.expect("join").expect("request");
        if r.status == 503 {
            assert_eq!(r.flags, "UO", "{r:?}");
            overflowed += 1;
        } else {
            ok += 1;
        }
    }
    assert!(overflowed >= 3, "{overflowed} overflowed, {ok} served");
    assert!(ok >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_is_504_with_ut() {
    let slow = Upstream::start("slow");
    let port = 0; // the OS picks; `start` says which
    let route = Route {
        action: forward(&[("slow", 100)]),
        timeout_ms: Some(100),
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![route],
            vec![cluster("slow", vec![endpoint(slow.addr, "v1")])],
        ),
        false,
    )
    .await;
    let started = Instant::now();
    let r = Client::new(addr)
        .get("reviews", "/delay/2000", &[])
        .await
        .expect("request");
    assert_eq!((r.status, r.flags.as_str()), (504, "UT"));
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_swaps_under_load_lose_nothing() {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let port = 0; // the OS picks; `start` says which
    let clusters = || {
        vec![
            cluster("v1", vec![endpoint(v1.addr, "v1")]),
            cluster("v2", vec![endpoint(v2.addr, "v2")]),
        ]
    };
    let (proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 50), ("v2", 50)]),
                ..Default::default()
            }],
            clusters(),
        ),
        false,
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            let (mut ok, mut failed) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match client.get("reviews", "/", &[]).await {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..100u64 {
        let w = (i % 10) as u32 * 10;
        let mut cfg = config(
            port,
            vec![Route {
                action: forward(&[("v1", w), ("v2", 100 - w)]),
                ..Default::default()
            }],
            clusters(),
        );
        cfg.version = i + 2;
        proxy.update(cfg).expect("update accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for t in load {
        let (o, f) = t.await.expect("join");
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 100, "traffic flowed during the swaps ({ok})");
    assert_eq!(proxy.version(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_old_one_stays() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let (proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let mut bad = config(
        port,
        vec![Route {
            action: forward(&[("missing", 100)]),
            ..Default::default()
        }],
        vec![],
    );
    bad.version = 9;
    assert!(proxy.update(bad).is_err());
    assert_eq!(proxy.version(), 1);
    assert_eq!(
        Client::new(addr)
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_metrics_are_served_in_prometheus_text() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let (proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        true,
    )
    .await;
    let mut client = Client::new(addr);
    for _ in 0..5 {
        client.get("reviews", "/", &[]).await.expect("request");
    }
    client
        .get("reviews", "/status/503", &[])
        .await
        .expect("request");
    let stats_addr = proxy.stats_addr().expect("stats served");
    let mut text = String::new();
    let found = eventually(Duration::from_secs(3), async || {
        text = Client::new(stats_addr)
            .get("localhost", "/stats/prometheus", &[])
            .await
            .map(|r| r.body)
            .unwrap_or_default();
        text.contains("response_code=\"503\"")
    })
    .await;
    assert!(found, "{text}");
    assert!(
        text.contains(
            "istio_requests_total{reporter=\"source\",source_workload=\"productpage-v1\""
        ),
        "{text}"
    );
    assert!(text.contains("destination_version=\"v1\""), "{text}");
    assert!(
        text.contains("response_code=\"200\",grpc_response_status=\"-\",response_flags=\"-\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket"),
        "{text}"
    );
    assert!(text.contains("istio_response_bytes_sum"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_over_h2() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..10 {
        let req = http::Request::builder()
            .uri("http://reviews/h2")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let r = read_reply(sender.send_request(req).await.expect("response")).await;
        assert_eq!((r.status, r.upstream.as_str()), (200, "v1"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_edited_and_uri_rewritten() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let route = Route {
        matches: vec![RouteMatch {
            uri: Some(StringMatch::Prefix("/old".into())),
            ..Default::default()
        }],
        action: Action::Forward(Forward {
            clusters: vec![WeightedCluster {
                cluster: "v1".into(),
                weight: 100,
                ..Default::default()
            }],
            rewrite: Some(Rewrite {
                uri: Some("/new".into()),
                ..Default::default()
            }),
        }),
        request_headers: HeaderOps {
            set: vec![("x-echo-set".into(), "yes".into())],
            ..Default::default()
        },
        response_headers: HeaderOps {
            add: vec![("x-added".into(), "1".into())],
            remove: vec!["x-echo-set".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![route],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let r = Client::new(addr)
        .get("reviews", "/old/page", &[])
        .await
        .expect("request");
    assert!(r.body.starts_with("v1 /new/page"), "{r:?}");
    assert_eq!(
        r.headers.get("x-added").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        r.headers.get("x-echo-set").is_none(),
        "response header removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_and_responses_carry_the_origin() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let route = Route {
        action: forward(&[("v1", 100)]),
        cors: Some(CorsPolicy {
            allow_origins: vec![StringMatch::Exact("https://shop.example.com".into())],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-token".into()],
            expose_headers: vec![],
            max_age_secs: Some(600),
            allow_credentials: Some(true),
        }),
        ..Default::default()
    };
    let (_proxy, addr) = start(
        config(
            port,
            vec![route],
            vec![cluster("v1", vec![endpoint(v1.addr, "v1")])],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    let preflight = http::Request::builder()
        .method("OPTIONS")
        .uri("/cart")
        .header("host", "reviews")
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let before = v1.hits.load(Ordering::Relaxed);
    let r = client.send(preflight).await.expect("preflight");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers
            .get("access-control-allow-methods")
            .map(|v| v.as_bytes()),
        Some(&b"GET,POST"[..])
    );
    assert_eq!(
        r.headers
            .get("access-control-max-age")
            .map(|v| v.as_bytes()),
        Some(&b"600"[..])
    );
    assert_eq!(
        v1.hits.load(Ordering::Relaxed),
        before,
        "the proxy answers the preflight itself"
    );
    let r = client
        .get(
            "reviews",
            "/cart",
            &[("origin", "https://shop.example.com")],
        )
        .await
        .expect("request");
    assert_eq!(
        r.headers
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"https://shop.example.com"[..])
    );
    let r = client
        .get(
            "reviews",
            "/cart",
            &[("origin", "https://evil.example.com")],
        )
        .await
        .expect("request");
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_until_their_idle_timeout() {
    let v1 = Upstream::start("v1");
    let port = 0; // the OS picks; `start` says which
    let mut c = cluster("v1", vec![endpoint(v1.addr, "v1")]);
    c.pool.idle_timeout_ms = 300;
    let (_proxy, addr) = start(
        config(
            port,
            vec![Route {
                action: forward(&[("v1", 100)]),
                ..Default::default()
            }],
            vec![c],
        ),
        false,
    )
    .await;
    let mut client = Client::new(addr);
    for _ in 0..5 {
        assert_eq!(
            client
                .get("reviews", "/", &[])
                .await
                .expect("request")
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        v1.connections.load(Ordering::Relaxed),
        1,
        "back-to-back requests share one upstream connection"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        client
            .get("reviews", "/", &[])
            .await
            .expect("request")
            .status,
        200
    );
    assert_eq!(
        v1.connections.load(Ordering::Relaxed),
        2,
        "an idle connection past its timeout is not reused"
    );
}
