//! The seed's AuthorizationPolicy through a real backend sidecar over real mutual TLS:
//! `cluster.local/ns/production/sa/frontend` may GET and POST `/api/*`; every other
//! principal, method and path is refused (403 `RBAC: access denied`, flag RBAC), the
//! same over HTTP/2, and a caller without a sidecar (plaintext, allowed on the
//! PERMISSIVE port) has no principal and is refused too. Also the whole path: a
//! client-side sidecar with the frontend identity originating the mesh's mTLS.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use trellis_compile::{Inbound, ProxyIdentity};

use crate::common::*;
use crate::support::{Client, Upstream};

/// The seed policy on a PERMISSIVE port (so plaintext callers reach authorization).
fn seed_yaml() -> String {
    format!("{SEED_POLICY}{}", peer_authentication("PERMISSIVE"))
}

#[tokio::test]
async fn the_seed_policy_lets_frontend_get_and_post_api_and_refuses_everything_else() {
    use Expect::{Allowed, Denied};
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &seed_yaml(), app.addr).await;
    let frontend = pki.who(NS, "frontend");
    let admin = pki.who(NS, "admin");
    let staging_frontend = pki.who("staging", "frontend");
    let lookalike = pki.who(NS, "frontend-v2");
    let plain = Who::Plain;
    let cases = vec![
        Case::new(
            "frontend GET /api/books",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        ),
        Case::new(
            "frontend POST /api/books",
            &frontend,
            "POST",
            "/api/books",
            Allowed,
        ),
        Case::new(
            "frontend GET /api/ (prefix itself)",
            &frontend,
            "GET",
            "/api/",
            Allowed,
        ),
        Case::new(
            "frontend GET nested /api/a/b/c",
            &frontend,
            "GET",
            "/api/a/b/c",
            Allowed,
        ),
        Case::new(
            "frontend GET with a query",
            &frontend,
            "GET",
            "/api/books?page=2",
            Allowed,
        ),
        Case::new(
            "frontend PUT /api/books",
            &frontend,
            "PUT",
            "/api/books",
            Denied,
        ),
        Case::new(
            "frontend DELETE /api/books",
            &frontend,
            "DELETE",
            "/api/books",
            Denied,
        ),
        Case::new(
            "frontend PATCH /api/books",
            &frontend,
            "PATCH",
            "/api/books",
            Denied,
        ),
        Case::new(
            "frontend HEAD /api/books",
            &frontend,
            "HEAD",
            "/api/books",
            Denied,
        ),
        Case::new(
            "frontend OPTIONS /api/books",
            &frontend,
            "OPTIONS",
            "/api/books",
            Denied,
        ),
        Case::new("frontend GET /admin", &frontend, "GET", "/admin", Denied),
        Case::new("frontend GET /", &frontend, "GET", "/", Denied),
        Case::new(
            "frontend GET /api (no slash)",
            &frontend,
            "GET",
            "/api",
            Denied,
        ),
        Case::new(
            "frontend GET /apiv2/books",
            &frontend,
            "GET",
            "/apiv2/books",
            Denied,
        ),
        Case::new(
            "frontend GET /API/books (case)",
            &frontend,
            "GET",
            "/API/books",
            Denied,
        ),
        Case::new(
            "frontend GET /v1/api/books",
            &frontend,
            "GET",
            "/v1/api/books",
            Denied,
        ),
        Case::new(
            "sa/admin GET /api/books",
            &admin,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "sa/admin POST /api/books",
            &admin,
            "POST",
            "/api/books",
            Denied,
        ),
        Case::new(
            "ns/staging sa/frontend GET",
            &staging_frontend,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "sa/frontend-v2 (a prefix of the name) GET",
            &lookalike,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "plaintext GET /api/books",
            &plain,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "plaintext POST /api/books",
            &plain,
            "POST",
            "/api/books",
            Denied,
        ),
        Case::new(
            "frontend GET over h2",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        )
        .over(Proto::Http2),
        Case::new(
            "frontend PUT over h2",
            &frontend,
            "PUT",
            "/api/books",
            Denied,
        )
        .over(Proto::Http2),
        Case::new("sa/admin GET over h2", &admin, "GET", "/api/books", Denied).over(Proto::Http2),
    ];
    run_cases(backend.addr, &app.hits, &cases).await;

    // Denials are counted against the backend with flag RBAC, from the peer's identity.
    let text = metrics(&backend.proxy).await;
    let denied = text.lines().find(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"403\"")
            && l.contains("response_flags=\"RBAC\"")
            && l.contains("source_principal=\"spiffe://cluster.local/ns/production/sa/admin\"")
    });
    assert!(denied.is_some(), "{text}");
}

/// Over mutual TLS without ALPN the connection is opaque TCP: the seed's rules need
/// HTTP (methods, paths), and an HTTP-only ALLOW rule never allows a TCP connection.
#[tokio::test]
async fn the_seed_policy_never_allows_opaque_tcp_even_for_frontend() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &seed_yaml(), app.addr).await;
    let got = tcp_exchange(
        backend.addr,
        &pki.who(NS, "frontend"),
        b"GET /api/books HTTP/1.1\r\nhost: b\r\n\r\n",
    )
    .await
    .expect("the handshake succeeds");
    assert!(
        got.is_empty(),
        "the connection was proxied: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        app.connections.load(Ordering::Relaxed),
        0,
        "the app was reached"
    );
}

/// frontend's own sidecar (a second proxy, holding the frontend certificate) reaches
/// the backend sidecar through its outbound cluster, compiled from the backend's
/// Service and its workload with a sidecar: automatic mTLS, the backend's SPIFFE id
/// checked, and the backend authorizes the frontend principal it verified.
#[tokio::test]
async fn through_a_client_side_sidecar_frontend_is_authorized_end_to_end() {
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(
        &pki,
        &format!("{SEED_POLICY}{}", peer_authentication("STRICT")),
        app.addr,
    )
    .await;

    // The backend Service's target port is the backend sidecar's inbound port, so the
    // endpoint the client side compiles is that listener.
    let service = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: production}}\nspec:\n  selector: {{app: backend}}\n  ports:\n  - {{name: http, port: 8080, targetPort: {}}}\n",
        backend.addr.port()
    );
    let workload = trellis_compile::Workload {
        name: "backend-v1".into(),
        namespace: NS.into(),
        labels: [("app".to_string(), "backend".to_string())].into(),
        address: Some(backend.addr.ip()),
        service_account: "backend".into(),
        sidecar: true,
        ..Default::default()
    };
    let mesh = trellis_compile::Mesh::new(&load(&service), vec![workload]);
    let frontend_id = ProxyIdentity {
        name: "frontend-v1".into(),
        namespace: NS.into(),
        labels: [("app".to_string(), "frontend".to_string())].into(),
        service_account: "frontend".into(),
        bind_ip: None,
    };
    let frontend_app = Upstream::start("frontend");
    let (config, _) = trellis_compile::sidecar(
        &mesh,
        &frontend_id,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[Inbound {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            app: frontend_app.addr,
            port: frontend_app.addr.port(),
        }],
        1,
    );
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.service == "backend.production.svc.cluster.local")
        .expect("a cluster for backend");
    let mesh_tls = cluster
        .mesh_tls
        .as_ref()
        .expect("automatic mTLS to a sidecar");
    assert_eq!(
        mesh_tls.identities,
        ["spiffe://cluster.local/ns/production/sa/backend"]
    );
    assert!(
        cluster
            .endpoints
            .iter()
            .all(|e| e.mtls && e.address == Some(backend.addr))
    );
    let (client_side, outbound) =
        start(config, Some(pki.issue(NS, "frontend", HOUR)), "outbound").await;

    let mut client = Client::new(outbound);
    let host = "backend.production.svc.cluster.local:8080";
    let ok = client.get(host, "/api/books", &[]).await.expect("answer");
    assert_eq!(
        (ok.status, ok.upstream.as_str()),
        (200, "backend"),
        "{ok:?}"
    );
    let put = http::Request::builder()
        .method("PUT")
        .uri("/api/books")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let denied = client.send(put).await.expect("answer");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(app.hits.load(Ordering::Relaxed), 1);

    // The backend saw the frontend's certificate; the client side reports mTLS too.
    let server_text = metrics(&backend.proxy).await;
    assert!(
        server_text
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains(
                    "source_principal=\"spiffe://cluster.local/ns/production/sa/frontend\""
                )
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains("response_code=\"200\"")),
        "{server_text}"
    );
    let client_text = metrics(&client_side).await;
    assert!(
        client_text
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("response_code=\"403\"")),
        "{client_text}"
    );
}
