//! Times the compilation of one proxy's config from a directory of manifests (the
//! control-plane scale benchmark's "time to rebuild one proxy's config").
//!
//! `cargo run --release -p trellis-control --example compile_one -- DIR`

use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: compile_one DIR");
    let t = Instant::now();
    let (loaded, _) = trellis_control::source::load_path(std::path::Path::new(&dir));
    let resources = trellis_control::source::validated(loaded).expect("valid");
    println!(
        "load+validate: {:?} ({} resources)",
        t.elapsed(),
        resources.len()
    );
    let t = Instant::now();
    let mesh = trellis_compile::Mesh::new(&resources, Vec::new());
    println!("index (Mesh::new): {:?}", t.elapsed());
    let who = trellis_compile::ProxyIdentity {
        name: "svc7".into(),
        namespace: "ns7".into(),
        labels: [("app".to_string(), "svc7".to_string())].into(),
        service_account: "default".into(),
        bind_ip: Some("10.0.0.7".parse().expect("ip")),
    };
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (config, _) =
            trellis_compile::sidecar(&mesh, &who, "10.0.0.7:15001".parse().expect("addr"), &[], 1);
        times.push(t.elapsed());
        let t2 = Instant::now();
        size = serde_json::to_vec(&config).expect("json").len();
        if times.len() == 1 {
            println!(
                "clusters {} route tables {} vhosts {} endpoints {} encode {:?}",
                config.clusters.len(),
                config.route_tables.len(),
                config
                    .route_tables
                    .iter()
                    .map(|t| t.virtual_hosts.len())
                    .sum::<usize>(),
                config
                    .clusters
                    .iter()
                    .map(|c| c.endpoints.len())
                    .sum::<usize>(),
                t2.elapsed()
            );
        }
    }
    times.sort();
    println!(
        "whole sidecar config: median {:?} (min {:?}), {} bytes of JSON",
        times[2], times[0], size
    );
    // What a change costs per affected service port: one unit, compiled and encoded.
    let plan = trellis_compile::outbound_plan(&mesh, &who);
    let n = plan.len().min(1000);
    let t = Instant::now();
    for (service, port) in plan.iter().take(n) {
        let unit = trellis_compile::outbound_unit(&mesh, &who, service, port);
        let _ = serde_json::to_vec(&unit.vhost).expect("json");
        for c in &unit.clusters {
            let _ = serde_json::to_vec(c).expect("json");
        }
    }
    println!(
        "one service port's unit (virtual host + clusters, encoded): {:?} on average over {n}",
        t.elapsed() / n.max(1) as u32
    );
}
