//! Authorization on a TCP service (the connection proxied for an allowed principal,
//! closed for a refused one; a DENY rule's HTTP-only parts dropped, so it denies more)
//! and a JWT claim condition (RequestAuthentication with an inline key set made here:
//! an invalid token is 401, a missing one is left to authorization), each through a
//! real backend sidecar over real mutual TLS.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::*;
use crate::support::Upstream;

const FRONTENDS: &str =
    "[\"cluster.local/ns/production/sa/frontend\", \"cluster.local/ns/staging/sa/frontend\"]";

/// Both frontends may use the backend's port; staging may not DELETE (over HTTP). On
/// TCP the DENY rule loses its method and so refuses staging altogether.
fn tcp_yaml(port: u16) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-frontends, namespace: production}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  rules:
  - from:
    - source:
        principals: {FRONTENDS}
    to:
    - operation:
        ports: ["{port}"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: staging-no-delete, namespace: production}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["staging"]
    to:
    - operation:
        methods: ["DELETE"]
{}"#,
        peer_authentication("PERMISSIVE")
    )
}

#[tokio::test]
async fn a_tcp_service_proxies_allowed_principals_and_closes_refused_ones() {
    let pki = Pki::new();
    let echo = tcp_echo();
    let backend = backend(&pki, &tcp_yaml(echo.port()), echo).await;
    let payload = b"ping through the mesh\n";
    let cases: [(&str, Who, bool); 5] = [
        ("TCP: production/frontend", pki.who(NS, "frontend"), true),
        (
            "TCP: production/frontend again",
            pki.who(NS, "frontend"),
            true,
        ),
        (
            "TCP: staging/frontend (DENY widened)",
            pki.who("staging", "frontend"),
            false,
        ),
        (
            "TCP: production/admin (not allowed)",
            pki.who(NS, "admin"),
            false,
        ),
        ("TCP: plaintext (no principal)", Who::Plain, false),
    ];
    let mut failures = Vec::new();
    for (name, who, proxied) in &cases {
        match tcp_exchange(backend.addr, who, payload).await {
            Ok(got) if *proxied && got == payload => {}
            Ok(got) if !*proxied && got.is_empty() => {}
            other => failures.push(format!("{name}: proxied={proxied}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Denials are counted against the backend with flag RBAC, from the peer: the two
    // mesh callers by principal over mutual TLS, the plaintext one as `none`.
    let text = metrics(&backend.proxy).await;
    let closed = |principal: &str, security: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("istio_tcp_connections_closed_total{")
                    && l.contains("response_flags=\"RBAC\"")
                    && l.contains(&format!("source_principal=\"{principal}\""))
                    && l.contains(&format!("connection_security_policy=\"{security}\""))
                    && l.contains("destination_service=\"backend.production.svc.cluster.local\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mesh = "spiffe://cluster.local/ns";
    assert_eq!(
        closed(&format!("{mesh}/staging/sa/frontend"), "mutual_tls"),
        1,
        "{text}"
    );
    assert_eq!(
        closed(&format!("{mesh}/production/sa/admin"), "mutual_tls"),
        1,
        "{text}"
    );
    assert_eq!(closed("unknown", "none"), 1, "{text}");

    // Over HTTP the same policies keep the DENY rule's method.
    let app = Upstream::start("backend");
    let http = crate::common::backend(&pki, &tcp_yaml(app.addr.port()), app.addr).await;
    let staging = pki.who("staging", "frontend");
    let cases = vec![
        Case::new(
            "HTTP on the port: staging GET",
            &staging,
            "GET",
            "/",
            Expect::Allowed,
        ),
        Case::new(
            "HTTP on the port: staging DELETE",
            &staging,
            "DELETE",
            "/",
            Expect::Denied,
        ),
    ];
    run_cases(http.addr, &app.hits, &cases).await;
}

const ISSUER: &str = "https://issuer.example";

/// An ES256 key made here and its public half as a JWK.
struct Signer {
    key: EncodingKey,
    jwk: Jwk,
}

fn signer(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("encoding key");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    Signer { key, jwk }
}

impl Signer {
    fn token(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk.common.key_id.clone();
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
        )
    }
}

fn claims(groups: &[&str], exp_offset: i64, iss: &str) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"iss": iss, "sub": "alice", "groups": groups, "exp": now + exp_offset})
}

fn jwt_yaml(keys: &Signer) -> String {
    let jwks = serde_json::to_string(&JwkSet {
        keys: vec![keys.jwk.clone()],
    })
    .expect("jwks");
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: production}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  jwtRules:
  - issuer: "{ISSUER}"
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: admins-only, namespace: production}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/production/sa/frontend"]
    to:
    - operation:
        paths: ["/api/*"]
    when:
    - key: request.auth.claims[groups]
      values: ["admins"]
  - from:
    - source:
        principals: ["cluster.local/ns/production/sa/frontend"]
    to:
    - operation:
        paths: ["/public/*"]
{}"#,
        peer_authentication("STRICT")
    )
}

#[tokio::test]
async fn a_jwt_claim_condition_decides_and_invalid_tokens_are_401() {
    use Expect::{Allowed, Denied, Unauthenticated};
    let keys = signer("k1");
    let stranger = signer("k1");
    let pki = Pki::new();
    let app = Upstream::start("backend");
    let backend = backend(&pki, &jwt_yaml(&keys), app.addr).await;
    let frontend = pki.who(NS, "frontend");
    let admins = keys.token(claims(&["dev", "admins"], 600, ISSUER));
    let users = keys.token(claims(&["users"], 600, ISSUER));
    let auth = "authorization";
    let cases = vec![
        Case::new(
            "JWT: groups has admins",
            &frontend,
            "GET",
            "/api/books",
            Allowed,
        )
        .header(auth, admins.clone()),
        Case::new(
            "JWT: groups has admins, POST",
            &frontend,
            "POST",
            "/api/books",
            Allowed,
        )
        .header(auth, admins.clone()),
        Case::new(
            "JWT: groups without admins",
            &frontend,
            "GET",
            "/api/books",
            Denied,
        )
        .header(auth, users.clone()),
        Case::new(
            "JWT: no token, claim needed",
            &frontend,
            "GET",
            "/api/books",
            Denied,
        ),
        Case::new(
            "JWT: no token, no claim needed",
            &frontend,
            "GET",
            "/public/x",
            Allowed,
        ),
        Case::new(
            "JWT: admins token but sa/admin",
            &pki.who(NS, "admin"),
            "GET",
            "/api/books",
            Denied,
        )
        .header(auth, admins.clone()),
        Case::new(
            "JWT: signed by another key",
            &frontend,
            "GET",
            "/api/books",
            Unauthenticated,
        )
        .header(auth, stranger.token(claims(&["admins"], 600, ISSUER))),
        Case::new(
            "JWT: expired",
            &frontend,
            "GET",
            "/api/books",
            Unauthenticated,
        )
        .header(auth, keys.token(claims(&["admins"], -600, ISSUER))),
        Case::new(
            "JWT: unknown issuer",
            &frontend,
            "GET",
            "/api/books",
            Unauthenticated,
        )
        .header(
            auth,
            keys.token(claims(&["admins"], 600, "https://elsewhere.example")),
        ),
        Case::new(
            "JWT: not a token",
            &frontend,
            "GET",
            "/api/books",
            Unauthenticated,
        )
        .header(auth, "Bearer not-a-jwt".into()),
        Case::new(
            "JWT: invalid token where none is needed",
            &frontend,
            "GET",
            "/public/x",
            Unauthenticated,
        )
        .header(auth, "Bearer not-a-jwt".into()),
    ];
    run_cases(backend.addr, &app.hits, &cases).await;
}
