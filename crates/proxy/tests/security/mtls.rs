//! PeerAuthentication on a real backend sidecar, over real TLS: STRICT takes only a
//! valid certificate of the mesh (plaintext, no certificate, another CA's, an expired
//! one are all refused without an HTTP answer), PERMISSIVE takes both, DISABLE takes
//! plaintext only; metrics say which it was and who the peer is. The seed's "503 after
//! enabling mTLS" story and its fix (PERMISSIVE first) replayed on one proxy.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::common::*;
use crate::support::{Upstream, eventually};

/// The seed's PeerAuthentication (examples/06-peerauthentication.yaml), verbatim.
const SEED_STRICT: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: production
spec:
  mtls:
    mode: STRICT                 # All traffic must be mTLS
    # PERMISSIVE = accept both plain and mTLS
    # DISABLE = no mTLS
"#;

fn closed(outcome: &Outcome, what: &str) -> String {
    match outcome {
        Outcome::Closed(e) => e.clone(),
        other => {
            panic!("{what}: expected the connection closed without an HTTP answer, got {other:?}")
        }
    }
}

fn ok(outcome: &Outcome, what: &str) {
    match outcome {
        Outcome::Reply(r) if r.status == 200 && r.upstream == "backend" => {}
        other => panic!("{what}: expected 200 from the app, got {other:?}"),
    }
}

#[tokio::test]
async fn strict_takes_only_a_valid_mesh_certificate() {
    let pki = Pki::new();
    // Issued first, so its two seconds of life pass while the other cases run.
    let expiring = pki.issue(NS, "frontend", Duration::from_secs(2));
    let app = Upstream::start("backend");
    let backend = backend(&pki, SEED_STRICT, app.addr).await;
    let addr = backend.addr;

    ok(
        &request(addr, &pki.who(NS, "frontend"), "GET", "/", &[]).await,
        "a valid mesh certificate",
    );
    ok(
        &request_with(
            addr,
            &pki.who("staging", "anyone"),
            Proto::Http2,
            "GET",
            "/",
            &[],
        )
        .await,
        "a valid mesh certificate, h2",
    );

    closed(
        &request(addr, &Who::Plain, "GET", "/", &[]).await,
        "plaintext",
    );
    // Byte by byte: the request is read by nobody and nothing comes back.
    let raw = tcp_exchange(
        addr,
        &Who::Plain,
        b"GET / HTTP/1.1\r\nhost: backend\r\n\r\n",
    )
    .await;
    assert_eq!(raw.as_deref(), Ok(&b""[..]), "plaintext got an answer");

    let no_cert = trellis_identity::bootstrap_client_config(pki.trust(), &[id(NS, "backend")], &[])
        .expect("config");
    closed(
        &request(addr, &Who::Tls(no_cert), "GET", "/", &[]).await,
        "no client certificate",
    );

    // A certificate for the right name from another CA, the client trusting the mesh.
    let other = Pki::new();
    let forged = other.issue(NS, "frontend", HOUR);
    let mut forged_client =
        rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(
                trellis_identity::tls::SpiffeServerVerifier::with_trust(pki.trust(), vec![]),
            ))
            .with_client_cert_resolver(std::sync::Arc::new(
                trellis_identity::tls::CurrentCertificate(forged),
            ));
    forged_client.alpn_protocols.clear();
    closed(
        &request(
            addr,
            &Who::Tls(std::sync::Arc::new(forged_client)),
            "GET",
            "/",
            &[],
        )
        .await,
        "a certificate from another CA",
    );

    // The client's own check: the backend does not present sa/reviews.
    let wrong_server = trellis_identity::client_config(
        &pki.issue(NS, "frontend", HOUR),
        &[id(NS, "reviews")],
        &[],
    )
    .expect("config");
    let e = closed(
        &request(addr, &Who::Tls(wrong_server), "GET", "/", &[]).await,
        "a server that is not sa/reviews",
    );
    assert!(e.contains("expected identities"), "{e}");

    let not_after = expiring.load().expect("credentials").not_after();
    let expired = eventually(Duration::from_secs(5), async || {
        SystemTime::now() > not_after + Duration::from_secs(1)
    })
    .await;
    assert!(expired, "the certificate did not expire");
    closed(
        &request(addr, &Who::Mesh(expiring), "GET", "/", &[]).await,
        "an expired certificate",
    );

    assert_eq!(
        app.hits.load(Ordering::Relaxed),
        2,
        "only the valid certificates reached the app"
    );
    let text = metrics(&backend.proxy).await;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(value("trellis_mtls_plaintext_refused_total"), 2, "{text}");
    assert_eq!(value("trellis_tls_handshake_errors_total"), 4, "{text}");
}

#[tokio::test]
async fn permissive_takes_both_and_metrics_tell_them_apart() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &peer_authentication("PERMISSIVE"), app.addr).await;
    ok(
        &request(backend.addr, &pki.who(NS, "frontend"), "GET", "/", &[]).await,
        "mTLS",
    );
    ok(
        &request(backend.addr, &Who::Plain, "GET", "/", &[]).await,
        "plaintext",
    );

    let text = metrics(&backend.proxy).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    let mtls = series
        .iter()
        .find(|l| l.contains("connection_security_policy=\"mutual_tls\""));
    let mtls = mtls.unwrap_or_else(|| panic!("no mutual_tls series: {text}"));
    assert!(
        mtls.contains("source_principal=\"spiffe://cluster.local/ns/production/sa/frontend\""),
        "{mtls}"
    );
    assert!(
        mtls.contains("source_workload_namespace=\"production\""),
        "{mtls}"
    );
    assert!(
        mtls.contains("destination_principal=\"spiffe://cluster.local/ns/production/sa/backend\""),
        "{mtls}"
    );
    assert!(mtls.ends_with(" 1"), "{mtls}");
    let plain = series
        .iter()
        .find(|l| l.contains("connection_security_policy=\"none\""));
    let plain = plain.unwrap_or_else(|| panic!("no plaintext series: {text}"));
    assert!(plain.contains("source_principal=\"unknown\""), "{plain}");
    assert!(plain.ends_with(" 1"), "{plain}");
}

#[tokio::test]
async fn disable_takes_plaintext_and_not_mtls() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &peer_authentication("DISABLE"), app.addr).await;
    let mtls = request(backend.addr, &pki.who(NS, "frontend"), "GET", "/", &[]).await;
    assert!(
        !matches!(mtls.status(), Some(200)),
        "mTLS got through a DISABLE port: {mtls:?}"
    );
    ok(
        &request(backend.addr, &Who::Plain, "GET", "/", &[]).await,
        "plaintext",
    );
    assert_eq!(app.hits.load(Ordering::Relaxed), 1);
}

/// A port-level PERMISSIVE under a STRICT namespace: the workload port takes plaintext.
#[tokio::test]
async fn port_level_mtls_overrides_the_namespace_mode() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let yaml = format!(
        "{SEED_STRICT}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: backend, namespace: production}}\nspec:\n  selector: {{matchLabels: {{app: backend}}}}\n  mtls: {{mode: UNSET}}\n  portLevelMtls:\n    {}:\n      mode: PERMISSIVE\n",
        app.addr.port()
    );
    let backend = backend(&pki, &yaml, app.addr).await;
    ok(
        &request(backend.addr, &Who::Plain, "GET", "/", &[]).await,
        "plaintext on the PERMISSIVE port",
    );
    ok(
        &request(backend.addr, &pki.who(NS, "frontend"), "GET", "/", &[]).await,
        "mTLS on the PERMISSIVE port",
    );
}

/// The seed's troubleshooting story: STRICT in `production` and a caller without a
/// sidecar fails; the fix is PERMISSIVE first (both work), then STRICT once every
/// caller has a sidecar. One proxy, its config swapped as the control plane would.
#[tokio::test]
async fn strict_breaks_a_caller_without_a_sidecar_and_permissive_first_fixes_it() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, SEED_STRICT, app.addr).await;
    let meshed = pki.who(NS, "frontend");
    closed(
        &request(backend.addr, &Who::Plain, "GET", "/", &[]).await,
        "no sidecar, STRICT",
    );
    ok(
        &request(backend.addr, &meshed, "GET", "/", &[]).await,
        "sidecar, STRICT",
    );

    let update = |yaml: &str| {
        backend
            .proxy
            .update(backend_config(yaml, app.addr))
            .expect("config accepted")
    };
    update(&peer_authentication("PERMISSIVE"));
    assert_eq!(
        backend
            .proxy
            .listener_addr(&format!("inbound|{}", app.addr.port())),
        Some(backend.addr)
    );
    let fixed = eventually(Duration::from_secs(5), async || {
        request(backend.addr, &Who::Plain, "GET", "/", &[])
            .await
            .status()
            == Some(200)
    })
    .await;
    assert!(
        fixed,
        "PERMISSIVE did not let the caller without a sidecar in"
    );
    ok(
        &request(backend.addr, &meshed, "GET", "/", &[]).await,
        "sidecar, PERMISSIVE",
    );

    update(SEED_STRICT);
    let strict = eventually(Duration::from_secs(5), async || {
        matches!(
            request(backend.addr, &Who::Plain, "GET", "/", &[]).await,
            Outcome::Closed(_)
        )
    })
    .await;
    assert!(strict, "STRICT again did not refuse plaintext");
    ok(
        &request(backend.addr, &meshed, "GET", "/", &[]).await,
        "sidecar, STRICT again",
    );
}
