//! Compiling the seed's configuration: what the proxies are told to do.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use trellis_compile::{Mesh, ProxyIdentity, gateway, sidecar};
use trellis_model::{Action, LoadBalancer, ProxyConfig, TlsMode};

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.11, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.0.12, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-user-type: {exact: beta}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100}
      http: {h2UpgradePolicy: DEFAULT, http1MaxPendingRequests: 100, http2MaxRequests: 1000}
    outlierDetection: {consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        http: {http2MaxRequests: 500}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: app-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [app-gateway]
  http:
  - route:
    - destination: {host: reviews}
"#;

fn mesh() -> Mesh {
    let loaded = trellis_api::load_str("app.yaml", APP);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    Mesh::new(&loaded.resources, vec![])
}

fn who(labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        name: "productpage-v1".into(),
        namespace: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "bookinfo-productpage".into(),
        bind_ip: None,
    }
}

fn outbound(config: &ProxyConfig) -> &trellis_model::VirtualHost {
    config.route_tables[0]
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "reviews:9080"))
        .expect("reviews vhost")
}

#[test]
fn sidecar_gets_the_header_route_then_the_ninety_ten_split() {
    let outbound_addr: SocketAddr = "127.0.0.1:15001".parse().expect("addr");
    let (config, notes) = sidecar(
        &mesh(),
        &who(&[("app", "productpage")]),
        outbound_addr,
        &[],
        1,
    );
    assert!(notes.is_empty(), "{notes:?}");
    config.check().expect("references resolve");
    let vh = outbound(&config);
    assert!(
        vh.domains.contains(&"reviews".to_string()),
        "port-less alias for the only HTTP port: {:?}",
        vh.domains
    );
    assert_eq!(vh.routes.len(), 2);
    assert_eq!(vh.routes[0].matches[0].headers[0].name, "x-user-type");
    let Action::Forward(split) = &vh.routes[1].action else {
        panic!("forward expected")
    };
    let weights: Vec<(&str, u32)> = split
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|9080|v1|reviews.default.svc.cluster.local", 90),
            ("outbound|9080|v2|reviews.default.svc.cluster.local", 10)
        ]
    );
}

#[test]
fn subsets_select_their_endpoints_and_merge_their_policy() {
    let (config, _) = sidecar(
        &mesh(),
        &who(&[]),
        "127.0.0.1:15001".parse().expect("addr"),
        &[],
        1,
    );
    let v1 = config
        .cluster("outbound|9080|v1|reviews.default.svc.cluster.local")
        .expect("v1");
    let v2 = config
        .cluster("outbound|9080|v2|reviews.default.svc.cluster.local")
        .expect("v2");
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(
        v1.endpoints[0].address,
        Some("127.0.0.11:9080".parse().expect("addr"))
    );
    assert_eq!(v2.endpoints[0].workload.version, "v2");
    assert_eq!(
        (
            v1.pool.max_connections,
            v1.pool.max_pending_requests,
            v1.pool.max_requests
        ),
        (100, 100, 1000)
    );
    // The subset's connectionPool replaces the rule's as a whole, as in Istio.
    assert_eq!((v2.pool.max_connections, v2.pool.max_requests), (0, 500));
    let outlier = v1.outlier.as_ref().expect("outlier detection");
    assert_eq!(
        (
            outlier.consecutive_5xx,
            outlier.base_ejection_ms,
            outlier.max_ejection_percent
        ),
        (5, 30_000, 50)
    );
    assert_eq!(v1.lb, LoadBalancer::LeastRequest);
}

#[test]
fn gateway_listens_on_its_server_port_for_its_hosts() {
    let ports = BTreeMap::from([(80u16, 18080u16)]);
    let (config, notes) = gateway(&mesh(), &who(&[("istio", "ingressgateway")]), &ports, 1);
    assert!(notes.is_empty(), "{notes:?}");
    config.check().expect("references resolve");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].bind.map(|a| a.port()), Some(18080));
    let vh = &config.route_tables[0].virtual_hosts[0];
    assert!(vh.domains.contains(&"app.example.com".to_string()));
    let (other, _) = gateway(&mesh(), &who(&[("istio", "egressgateway")]), &ports, 1);
    assert!(
        other.listeners.is_empty(),
        "a gateway whose labels no Gateway selects gets nothing"
    );
}

#[test]
fn seed_canary_and_fault_examples_compile() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seed/examples");
    if !dir.exists() {
        println!("skipping: ../shared/seed is absent");
        return;
    }
    let mut resources = trellis_api::load_str("app.yaml", APP).resources;
    let file = "04-virtualservice-fault.yaml";
    let text = std::fs::read_to_string(dir.join(file)).expect("read");
    resources.extend(trellis_api::load_str(file, &text).resources);
    resources.extend(
        trellis_api::load_str(
            "ratings.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n",
        )
        .resources,
    );
    let (config, _) = sidecar(
        &Mesh::new(&resources, vec![]),
        &who(&[]),
        "127.0.0.1:15001".parse().expect("addr"),
        &[],
        1,
    );
    let vh = config.route_tables[0]
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "ratings"))
        .expect("ratings");
    let fault = vh.routes[0].fault.as_ref().expect("fault");
    assert_eq!(
        fault.delay.as_ref().map(|d| (d.percent, d.delay_ms)),
        Some((10.0, 5000))
    );
    assert_eq!(
        fault.abort.as_ref().map(|a| (a.percent, a.http_status)),
        Some((5.0, Some(500)))
    );
}

#[test]
fn sidecar_egress_and_export_to_scope_what_a_proxy_sees() {
    let extra = r#"
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: finance}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: secret
  namespace: default
  annotations: {networking.istio.io/exportTo: "."}
spec:
  selector: {app: secret}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
"#;
    let mut resources = trellis_api::load_str("app.yaml", APP).resources;
    let loaded = trellis_api::load_str("extra.yaml", extra);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    resources.extend(loaded.resources);
    let mesh = Mesh::new(&resources, vec![]);
    let domains = |who: &ProxyIdentity| -> Vec<String> {
        let (config, _) = sidecar(&mesh, who, "127.0.0.1:15001".parse().expect("addr"), &[], 1);
        config.route_tables[0]
            .virtual_hosts
            .iter()
            .flat_map(|v| v.domains.clone())
            .collect()
    };
    let in_default = domains(&who(&[]));
    assert!(
        in_default.iter().any(|d| d == "reviews:9080"),
        "{in_default:?}"
    );
    assert!(
        in_default.iter().any(|d| d == "secret:8080"),
        "exported to its own namespace: {in_default:?}"
    );
    assert!(
        !in_default.iter().any(|d| d.starts_with("billing")),
        "the Sidecar's egress hides other namespaces: {in_default:?}"
    );
    let mut elsewhere = who(&[]);
    elsewhere.namespace = "finance".into();
    let in_finance = domains(&elsewhere);
    assert!(
        in_finance.iter().any(|d| d == "billing:8080"),
        "{in_finance:?}"
    );
    assert!(
        !in_finance.iter().any(|d| d.starts_with("secret")),
        "exportTo '.' hides it from other namespaces: {in_finance:?}"
    );
}

const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

fn tls_mesh(extra: &str) -> Mesh {
    let text = format!(
        r#"{APP}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-app, protocol: HTTPS}}
    hosts: [app.example.com]
    tls: {{mode: SIMPLE, credentialName: app-tls}}
  - port: {{number: 443, name: https-api, protocol: HTTPS}}
    hosts: ["*.api.example.com"]
    tls: {{mode: SIMPLE, credentialName: api-tls}}
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [secure.example.com]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [app.example.com, "*.api.example.com"]
  gateways: [secure]
  http:
  - route:
    - destination: {{host: reviews}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app-tls, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {cert}
  tls.key: {key}
{extra}"#,
        cert = b64(FAKE_CERT),
        key = b64(FAKE_KEY),
    );
    let loaded = trellis_api::load_str("tls.yaml", &text);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    Mesh::new(&loaded.resources, vec![])
}

fn b64(text: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn https_server_gets_a_tls_listener_with_certificates_by_sni() {
    let api = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: api-tls, namespace: default}\nstringData: {tls.crt: \"-----BEGIN CERTIFICATE-----\\nAPI\\n-----END CERTIFICATE-----\\n\", tls.key: \"-----BEGIN EC PRIVATE KEY-----\\nK\\n-----END EC PRIVATE KEY-----\\n\"}\n";
    let ports = BTreeMap::from([(80u16, 8080u16), (443u16, 8443u16)]);
    let (config, notes) = gateway(
        &tls_mesh(api),
        &who(&[("istio", "ingressgateway")]),
        &ports,
        1,
    );
    assert!(notes.is_empty(), "{notes:?}");
    config.check().expect("references resolve");
    let https = config
        .listeners
        .iter()
        .find(|l| l.bind.map(|a| a.port()) == Some(8443))
        .expect("443 listener on 8443");
    let tls = https.tls.as_ref().expect("TLS on 443");
    assert_eq!(tls.mode, TlsMode::Simple);
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.certificates[0].sni_hosts, ["app.example.com"]);
    assert_eq!(tls.certificates[0].cert_chain_pem, FAKE_CERT);
    assert_eq!(tls.certificates[0].private_key_pem, FAKE_KEY);
    assert_eq!(tls.certificates[1].sni_hosts, ["*.api.example.com"]);
    assert!(tls.certificates[1].cert_chain_pem.contains("API"));
    let table = config
        .route_tables
        .iter()
        .find(|t| Some(&t.name) == https.route_table.as_ref())
        .expect("443 table");
    let app = table
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "app.example.com"))
        .expect("app vhost");
    assert!(matches!(app.routes[0].action, Action::Forward(_)));

    // Port 80 redirects secure.example.com to https.
    let http = config
        .listeners
        .iter()
        .find(|l| l.bind.map(|a| a.port()) == Some(8080))
        .expect("80 listener");
    assert!(http.tls.is_none());
    let table = config
        .route_tables
        .iter()
        .find(|t| Some(&t.name) == http.route_table.as_ref())
        .expect("80 table");
    let secure = table
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "secure.example.com"))
        .expect("redirect vhost, even without a VirtualService");
    let Action::Redirect(r) = &secure.routes[0].action else {
        panic!("{secure:?}");
    };
    assert_eq!((r.scheme.as_deref(), r.status), (Some("https"), 301));
}

#[test]
fn missing_secret_skips_only_that_server_with_a_note() {
    let ports = BTreeMap::new();
    let (config, notes) = gateway(
        &tls_mesh(""),
        &who(&[("istio", "ingressgateway")]),
        &ports,
        1,
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].resource, "Gateway default/secure");
    assert!(notes[0].message.contains("443"), "{notes:?}");
    assert!(notes[0].message.contains("api-tls"), "{notes:?}");
    config.check().expect("references resolve");
    let https = config
        .listeners
        .iter()
        .find(|l| l.bind.map(|a| a.port()) == Some(443))
        .expect("443 still served for app.example.com");
    let tls = https.tls.as_ref().expect("TLS");
    assert_eq!(tls.certificates.len(), 1);
    // The HTTP servers of both Gateways are kept.
    assert!(
        config
            .listeners
            .iter()
            .any(|l| l.bind.map(|a| a.port()) == Some(80))
    );
}

#[test]
fn mutual_tls_takes_the_ca_from_a_cacert_secret() {
    let extra = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: mtls, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [mtls.example.com]\n    tls: {{mode: MUTUAL, credentialName: app-tls}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: app-tls-cacert, namespace: default}}\ndata: {{ca.crt: {}}}\n",
        b64(FAKE_CERT)
    );
    let (config, notes) = gateway(
        &tls_mesh(&extra),
        &who(&[("istio", "ingressgateway")]),
        &BTreeMap::new(),
        1,
    );
    assert!(
        notes.iter().all(|n| !n.resource.contains("mtls")),
        "{notes:?}"
    );
    let tls = config
        .listeners
        .iter()
        .find(|l| l.bind.map(|a| a.port()) == Some(8443))
        .and_then(|l| l.tls.as_ref())
        .expect("mTLS listener");
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert_eq!(tls.client_ca_pem.as_deref(), Some(FAKE_CERT));
}

#[test]
fn passthrough_server_routes_tls_rules_by_sni_hosts() {
    let extra = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [\"*.example.org\"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [\"*.example.org\"]
  gateways: [pass]
  tls:
  - match: [{port: 9443, sniHosts: [a.example.org]}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
";
    let (config, _) = gateway(
        &tls_mesh(extra),
        &who(&[("istio", "ingressgateway")]),
        &BTreeMap::new(),
        1,
    );
    config.check().expect("references resolve");
    let l = config
        .listeners
        .iter()
        .find(|l| l.bind.map(|a| a.port()) == Some(9443))
        .expect("passthrough listener");
    assert_eq!(l.protocol, trellis_model::ListenerProtocol::Tcp);
    assert!(l.tls.is_none(), "passthrough does not terminate");
    assert_eq!(l.tcp_routes.len(), 1);
    assert_eq!(l.tcp_routes[0].sni, ["a.example.org"]);
    assert!(l.tcp_routes[0].clusters[0].cluster.contains("reviews"));
}

#[test]
fn destination_rule_tls_becomes_cluster_tls_origination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let text = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments, namespace: default}}
spec:
  hosts: [api.payments.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: http-tls, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.50}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payments, namespace: default}}
spec:
  host: api.payments.example
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [pay.example]}}
  subsets:
  - name: mesh
    labels: {{}}
    trafficPolicy:
      tls: {{mode: ISTIO_MUTUAL}}
  - name: partner
    labels: {{}}
    trafficPolicy:
      tls: {{mode: MUTUAL, clientCertificate: /nonexistent/client.pem, privateKey: /nonexistent/key.pem}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: payments, namespace: default}}
spec:
  hosts: [api.payments.example]
  http:
  - match: [{{headers: {{x-route: {{exact: mesh}}}}}}]
    route: [{{destination: {{host: api.payments.example, subset: mesh}}}}]
  - match: [{{headers: {{x-route: {{exact: partner}}}}}}]
    route: [{{destination: {{host: api.payments.example, subset: partner}}}}]
  - route: [{{destination: {{host: api.payments.example}}}}]
"#,
        ca = ca.display()
    );
    let mut resources = trellis_api::load_str("app.yaml", APP).resources;
    let loaded = trellis_api::load_str("tls.yaml", &text);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    resources.extend(loaded.resources);
    let (config, _) = sidecar(
        &Mesh::new(&resources, vec![]),
        &who(&[]),
        "127.0.0.1:15001".parse().expect("addr"),
        &[],
        1,
    );
    let cluster = |name: &str| {
        config
            .clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    };
    let tls = cluster("outbound|443||api.payments.example")
        .tls
        .as_ref()
        .expect("SIMPLE originates TLS");
    assert_eq!(tls.sni, "api.payments.example", "SNI defaults to the host");
    assert!(
        tls.ca_pem
            .as_deref()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
    );
    assert_eq!(tls.subject_alt_names, ["pay.example"]);
    assert_eq!(tls.problem, None);
    // ISTIO_MUTUAL needs the mesh CA, which does not exist yet: plaintext as today.
    assert_eq!(cluster("outbound|443|mesh|api.payments.example").tls, None);
    // Files that cannot be read: the cluster keeps TLS with the reason, so connections
    // fail saying why instead of going out in plaintext.
    let partner = cluster("outbound|443|partner|api.payments.example")
        .tls
        .as_ref()
        .expect("MUTUAL");
    assert!(
        partner
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("/nonexistent/client.pem")),
        "{partner:?}"
    );
}
