//! How long `validate` and `analyze` take on 10,000 generated resources, on one core.
//!
//! Run: `cargo bench -p trellis-analyze --bench ten_thousand` (add `-- N` for another size).
//! Prints the median of 5 runs for each phase; it measures and never fails on timing.

use std::time::{Duration, Instant};

use trellis_analyze::{Options, analyze};
use trellis_api::load_str;

/// One application: Service, two Deployments (v1, v2), DestinationRule, VirtualService.
fn app(i: usize, ns: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: app{i}, namespace: {ns}, labels: {{app: app{i}}}}}
spec:
  selector: {{app: app{i}}}
  ports:
  - {{name: http, port: 9080, targetPort: 9080}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app{i}-v1, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: app{i}, version: v1}}}}
  template:
    metadata: {{labels: {{app: app{i}, version: v1}}}}
    spec:
      containers:
      - {{name: app, image: example/app:1, ports: [{{containerPort: 9080}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app{i}-v2, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: app{i}, version: v2}}}}
  template:
    metadata: {{labels: {{app: app{i}, version: v2}}}}
    spec:
      containers:
      - {{name: app, image: example/app:1, ports: [{{containerPort: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: app{i}, namespace: {ns}}}
spec:
  host: app{i}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 100}}, http: {{http1MaxPendingRequests: 100}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s, maxEjectionPercent: 50}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app{i}, namespace: {ns}}}
spec:
  hosts: [app{i}]
  http:
  - match:
    - headers: {{x-user-type: {{exact: beta}}}}
      uri: {{prefix: /api/}}
    route:
    - destination: {{host: app{i}, subset: v2}}
    timeout: 5s
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: 5xx}}
  - route:
    - destination: {{host: app{i}, subset: v1}}
      weight: 90
    - destination: {{host: app{i}, subset: v2}}
      weight: 10
"
    )
}

fn generate(resources: usize) -> String {
    let mut text = String::new();
    for i in 0..resources.div_ceil(5) {
        if !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(&app(i, &format!("team{}", i % 50)));
    }
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let size: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let text = generate(size);
    let (mut load_t, mut validate_t, mut analyze_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = (0, 0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        let loaded = load_str("generated.yaml", &text);
        load_t.push(t.elapsed());

        let t = Instant::now();
        let problems: usize = loaded.resources.iter().map(|r| r.validate().len()).sum();
        validate_t.push(t.elapsed());

        let t = Instant::now();
        let messages = analyze(&loaded.resources, &Options::default()).expect("default analyzers");
        analyze_t.push(t.elapsed());
        counts = (
            loaded.resources.len(),
            problems + loaded.diagnostics.len(),
            messages.len(),
        );
    }
    let (l, v, a) = (median(load_t), median(validate_t), median(analyze_t));
    println!(
        "{} resources ({} KiB of YAML), one thread, median of 5:\n  load (parse + type) {:>8.1} ms\n  validate            {:>8.1} ms\n  analyze             {:>8.1} ms\n  total               {:>8.1} ms\n  ({} validation problems, {} analyzer messages)",
        counts.0,
        text.len() / 1024,
        l.as_secs_f64() * 1e3,
        v.as_secs_f64() * 1e3,
        a.as_secs_f64() * 1e3,
        (l + v + a).as_secs_f64() * 1e3,
        counts.1,
        counts.2
    );
}
