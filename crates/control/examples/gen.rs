//! Writes a large mesh for the control-plane scale benchmark: SERVICES Services across
//! NAMESPACES namespaces, ENDPOINTS WorkloadEntries spread over them, and a
//! VirtualService + DestinationRule (90/10 canary on subsets v1/v2) for every tenth.
//!
//! `cargo run --release -p trellis-control --example gen -- DIR [SERVICES] [ENDPOINTS]`

use std::fmt::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: gen DIR [SERVICES] [ENDPOINTS]");
    let services: usize = args.next().map_or(5000, |a| a.parse().expect("SERVICES"));
    let endpoints: usize = args.next().map_or(20000, |a| a.parse().expect("ENDPOINTS"));
    let namespaces = 50.min(services);
    std::fs::create_dir_all(&dir).expect("create DIR");
    for ns in 0..namespaces {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}}}\n---"
        );
        for s in (ns..services).step_by(namespaces) {
            let _ = writeln!(
                out,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  selector: {{app: svc{s}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---"
            );
            if s.is_multiple_of(10) {
                let _ = writeln!(
                    out,
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  hosts: [svc{s}]\n  http:\n  - route:\n    - destination: {{host: svc{s}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc{s}, subset: v2}}\n      weight: 10\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec:\n  host: svc{s}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---"
                );
            }
        }
        std::fs::write(format!("{dir}/ns{ns}.yaml"), out).expect("write");
    }
    let mut out = String::new();
    for e in 0..endpoints {
        let s = e % services;
        let ns = s % namespaces;
        let version = if (e / services).is_multiple_of(2) {
            "v1"
        } else {
            "v2"
        };
        let _ = writeln!(
            out,
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc{s}-{e}, namespace: ns{ns}}}\nspec:\n  address: 10.{}.{}.{}\n  labels: {{app: svc{s}, version: {version}}}\n---",
            e >> 16 & 255,
            e >> 8 & 255,
            e & 255
        );
    }
    std::fs::write(format!("{dir}/endpoints.yaml"), out).expect("write");
}
