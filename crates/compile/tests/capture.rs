//! Capture mode's config: the capture listeners, what each original destination is
//! served by, and what destinations the mesh does not know get.

use std::collections::BTreeMap;

use trellis_compile::{
    CaptureOptions, Mesh, ProxyIdentity, VIRTUAL_INBOUND, VIRTUAL_INBOUND_V6, VIRTUAL_OUTBOUND,
    VIRTUAL_OUTBOUND_V6, capture, inbound_ports, sidecar,
};
use trellis_model::{Direction, ListenerProtocol, ProxyConfig};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
  - {name: tcp-db, port: 5432, targetPort: 15432}
  - {name: plain, port: 7000, targetPort: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: headless}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.1]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;

fn mesh(extra: &str) -> Mesh {
    let loaded = trellis_api::load_str("mesh.yaml", &format!("{MESH}{extra}"));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    Mesh::new(&loaded.resources, vec![])
}

fn who(app: &str) -> ProxyIdentity {
    ProxyIdentity {
        name: app.into(),
        namespace: "default".into(),
        labels: BTreeMap::from([("app".into(), app.into())]),
        ..Default::default()
    }
}

fn captured(mesh: &Mesh, who: &ProxyIdentity) -> ProxyConfig {
    let inbound = inbound_ports(mesh, who, &BTreeMap::new());
    let (mut config, _) = sidecar(
        mesh,
        who,
        "127.0.0.1:15001".parse().expect("addr"),
        &inbound,
        1,
    );
    capture(mesh, who, &mut config, &CaptureOptions::default());
    config.check().expect("a consistent config");
    config
}

fn target<'a>(config: &'a ProxyConfig, listener: &str, ip: Option<&str>, port: u16) -> &'a str {
    let capture = config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .and_then(|l| l.capture.as_ref())
        .expect("a capture listener");
    let ip = ip.map(|i| i.parse().expect("ip"));
    capture
        .targets
        .iter()
        .find(|t| t.ip == ip && t.port == port)
        .map(|t| t.listener.as_str())
        .unwrap_or_else(|| panic!("no target {ip:?}:{port} in {:?}", capture.targets))
}

#[test]
fn cluster_ips_pick_http_routing_or_a_tcp_listener_by_port_protocol() {
    let mesh = mesh("");
    let config = captured(&mesh, &who("productpage"));
    // Only the capture listeners bind.
    let bound: Vec<_> = config
        .listeners
        .iter()
        .filter_map(|l| Some((l.name.as_str(), l.bind?.to_string())))
        .collect();
    assert_eq!(
        bound,
        [
            (VIRTUAL_OUTBOUND, "0.0.0.0:15001".to_string()),
            (VIRTUAL_INBOUND, "0.0.0.0:15006".to_string())
        ]
    );
    assert_eq!(
        target(&config, VIRTUAL_OUTBOUND, Some("10.96.0.20"), 9080),
        "outbound"
    );
    let tcp = target(&config, VIRTUAL_OUTBOUND, Some("10.96.0.20"), 5432);
    let sniffed = target(&config, VIRTUAL_OUTBOUND, Some("10.96.0.20"), 7000);
    let external = target(&config, VIRTUAL_OUTBOUND, Some("240.0.0.1"), 443);
    let listener = |name: &str| {
        config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .expect("the target listener")
    };
    assert_eq!(listener(tcp).protocol, ListenerProtocol::Tcp);
    assert_eq!(listener(sniffed).protocol, ListenerProtocol::Auto);
    assert_eq!(listener(sniffed).route_table.as_deref(), Some("outbound"));
    assert_eq!(listener(external).protocol, ListenerProtocol::Tcp);
    assert!(
        listener(tcp).tcp_routes[0].clusters[0]
            .cluster
            .contains("5432"),
        "{:?}",
        listener(tcp).tcp_routes
    );
    // The cluster IP is a host HTTP routing knows (requests carry it as Host).
    let outbound = config.route_table("outbound").expect("outbound table");
    assert!(
        outbound
            .virtual_hosts
            .iter()
            .any(|vh| vh.domains.iter().any(|d| d == "10.96.0.20:9080"))
    );
    // ALLOW_ANY by default; a headless service has no address to capture.
    let out = config
        .listeners
        .iter()
        .find(|l| l.name == VIRTUAL_OUTBOUND)
        .and_then(|l| l.capture.as_ref())
        .expect("capture");
    assert!(out.passthrough);
    assert_eq!(out.targets.len(), 4, "{:?}", out.targets);
    // The DNS server knows every alias of a service with an address.
    let dns = out.dns.as_ref().expect("a DNS server");
    assert_eq!(dns.bind.to_string(), "127.0.0.1:15053");
    let names: Vec<(&str, String)> = dns
        .names
        .iter()
        .map(|n| (n.name.as_str(), format!("{:?}", n.addresses)))
        .collect();
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ] {
        assert!(
            names.contains(&(name, "[10.96.0.20]".into())),
            "{name} in {names:?}"
        );
    }
    assert!(names.contains(&("api.example.com", "[240.0.0.1]".into())));
    assert!(!names.iter().any(|(n, _)| n.starts_with("headless")));
}

#[test]
fn a_virtual_services_tcp_rules_route_captured_tcp() {
    let split = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-db, namespace: default}
spec:
  hosts: [reviews]
  tcp:
  - match: [{port: 5432, sourceLabels: {app: other}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{port: 5432}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
";
    let mesh = mesh(split);
    let config = captured(&mesh, &who("productpage"));
    let name = target(&config, VIRTUAL_OUTBOUND, Some("10.96.0.20"), 5432);
    let l = config
        .listeners
        .iter()
        .find(|l| l.name == name)
        .expect("listener");
    // The sourceLabels rule is not this sidecar's; the 80/20 rule comes first, the
    // service itself after.
    assert_eq!(l.tcp_routes.len(), 2, "{:?}", l.tcp_routes);
    let weights: Vec<(bool, u32)> = l.tcp_routes[0]
        .clusters
        .iter()
        .map(|w| (w.cluster.contains("v1"), w.weight))
        .collect();
    assert_eq!(weights, [(true, 80), (false, 20)]);
}

#[test]
fn ipv6_gets_capture_listeners_of_its_own_with_the_same_targets() {
    let mesh = mesh("");
    let who = who("productpage");
    let (mut config, _) = sidecar(
        &mesh,
        &who,
        "127.0.0.1:15001".parse().expect("addr"),
        &[],
        1,
    );
    let options = CaptureOptions {
        ipv6: true,
        ..Default::default()
    };
    capture(&mesh, &who, &mut config, &options);
    config.check().expect("consistent");
    let find = |name: &str| {
        config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let (v4, v6) = (find(VIRTUAL_OUTBOUND), find(VIRTUAL_OUTBOUND_V6));
    assert_eq!(
        v6.bind.map(|b| b.to_string()).as_deref(),
        Some("[::]:15001")
    );
    assert_eq!(
        v4.capture.as_ref().map(|c| &c.targets),
        v6.capture.as_ref().map(|c| &c.targets)
    );
    assert!(
        v6.capture.as_ref().is_some_and(|c| c.dns.is_none()),
        "one DNS server"
    );
    assert_eq!(
        find(VIRTUAL_INBOUND_V6)
            .bind
            .map(|b| b.to_string())
            .as_deref(),
        Some("[::]:15006")
    );
}

#[test]
fn inbound_ports_are_the_target_ports_of_the_selecting_services() {
    let mesh = mesh("");
    let config = captured(&mesh, &who("reviews"));
    for port in [9080, 15432, 7000] {
        let name = target(&config, VIRTUAL_INBOUND, None, port);
        let l = config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .expect("listener");
        assert_eq!(l.direction, Direction::Inbound);
        assert_eq!(l.bind, None);
    }
    let inbound = config
        .listeners
        .iter()
        .find(|l| l.name == VIRTUAL_INBOUND)
        .and_then(|l| l.capture.as_ref())
        .expect("capture");
    assert!(inbound.passthrough, "unknown inbound ports reach the app");
}

#[test]
fn a_sidecar_resource_can_make_the_registry_the_only_way_out() {
    let registry_only = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: strict, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let mesh = mesh(registry_only);
    let passthrough = |app: &str| {
        captured(&mesh, &who(app))
            .listeners
            .iter()
            .find(|l| l.name == VIRTUAL_OUTBOUND)
            .and_then(|l| l.capture.as_ref())
            .expect("capture")
            .passthrough
    };
    assert!(!passthrough("productpage"));
    assert!(
        passthrough("reviews"),
        "the Sidecar selects productpage only"
    );
    // A Sidecar without egress still sees every service.
    let config = captured(&mesh, &who("productpage"));
    target(&config, VIRTUAL_OUTBOUND, Some("10.96.0.20"), 9080);
}
