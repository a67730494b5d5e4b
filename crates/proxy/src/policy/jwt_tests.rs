//! JWT validation with real signed tokens: RSA and EC keys made here, published as a
//! JWKS, tokens signed with jsonwebtoken; each way a token can be wrong is a 401, a
//! request without one passes.

use http::{HeaderMap, HeaderValue};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use trellis_model::security::{ClaimToHeader, Jwks, JwksFetch, JwtHeader, JwtRule};

use super::{CompiledJwt, JwtError, JwtOutcome};

const ISS: &str = "https://issuer.example";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
    jwk: Jwk,
}

fn signer(alg: Algorithm, kid: &'static str) -> Signer {
    type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
    let (rcgen_alg, from_pem): (_, FromPem) = match alg {
        Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, EncodingKey::from_rsa_pem),
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
        other => panic!("no test key for {other:?}"),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key pair");
    let key = from_pem(pair.serialize_pem().as_bytes()).expect("encoding key");
    let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    Signer { key, alg, kid, jwk }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Signer {
    fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"iss": ISS, "sub": sub, "aud": ["shop", "other"], "exp": now() + 600, "group": "admins", "scope": "read write"})
}

fn jwks(signers: &[&Signer]) -> String {
    serde_json::to_string(&JwkSet {
        keys: signers.iter().map(|s| s.jwk.clone()).collect(),
    })
    .expect("jwks")
}

fn rule(keys: String) -> JwtRule {
    let (from_headers, from_params) = JwtRule::default_locations();
    JwtRule {
        policy: "production/jwt".into(),
        issuer: ISS.into(),
        audiences: vec!["shop".into()],
        jwks: Jwks::Inline { keys },
        from_headers,
        from_params,
        from_cookies: vec![],
        output_payload_to_header: Some("x-jwt-payload".into()),
        forward_original_token: false,
        output_claim_to_headers: vec![ClaimToHeader {
            header: "x-user-group".into(),
            claim: "group".into(),
        }],
        space_delimited_claims: vec!["scope".into()],
        require_token: false,
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("value"),
    );
    h
}

fn error(outcome: JwtOutcome) -> JwtError {
    match outcome {
        JwtOutcome::Invalid(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_valid_rs256_token_verifies_and_edits_the_headers() {
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let jwt = CompiledJwt::compile(&[rule(jwks(&[&rsa]))]).expect("compile");
    let token = rsa.sign(claims("alice"));
    let mut headers = bearer(&token);
    let JwtOutcome::Verified { identity, edits } = jwt.authenticate(&headers, None) else {
        panic!("not verified");
    };
    assert_eq!(identity.principal(), "https://issuer.example/alice");
    assert_eq!(identity.audiences(), ["shop", "other"]);
    assert_eq!(
        identity.claims["scope"],
        json!(["read", "write"]),
        "space-delimited"
    );
    edits.apply(&mut headers);
    assert!(
        headers.get("authorization").is_none(),
        "the token is removed"
    );
    assert_eq!(headers["x-user-group"], "admins");
    let payload = token.split('.').nth(1).expect("payload");
    assert_eq!(headers["x-jwt-payload"], payload);
}

#[test]
fn an_es256_token_from_the_default_query_parameter_verifies() {
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let ec = signer(Algorithm::ES256, "ec-1");
    let jwt = CompiledJwt::compile(&[rule(jwks(&[&rsa, &ec]))]).expect("compile");
    let token = ec.sign(claims("bob"));
    let query = format!("page=2&access_token={token}");
    match jwt.authenticate(&HeaderMap::new(), Some(&query)) {
        JwtOutcome::Verified { identity, edits } => {
            assert_eq!(identity.subject, "bob");
            assert!(
                edits.remove.is_empty(),
                "query tokens stay (as Envoy leaves them)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_kind_of_bad_token_is_refused() {
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let impostor = signer(Algorithm::RS256, "rsa-1");
    let stranger = signer(Algorithm::RS256, "rsa-9");
    let jwt = CompiledJwt::compile(&[rule(jwks(&[&rsa]))]).expect("compile");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice");
        f(&mut c);
        rsa.sign(c)
    };
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 3600)),
            JwtError::Expired,
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 3600)),
            JwtError::NotYetValid,
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
            JwtError::WrongIssuer,
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("billing")),
            JwtError::WrongAudience,
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            JwtError::WrongAudience,
        ),
        (
            "unknown kid",
            stranger.sign(claims("alice")),
            JwtError::UnknownKey,
        ),
        (
            "bad signature",
            impostor.sign(claims("alice")),
            JwtError::BadSignature,
        ),
        ("not a JWT", "not-a-token".to_string(), JwtError::Malformed),
    ];
    for (what, token, want) in cases {
        let got = error(jwt.authenticate(&bearer(&token), None));
        assert_eq!(got, want, "{what}");
    }
    // Within the clock-skew leeway, a just-expired token still passes.
    let recent = with(&|c| c["exp"] = json!(now() - 30));
    assert!(matches!(
        jwt.authenticate(&bearer(&recent), None),
        JwtOutcome::Verified { .. }
    ));
}

#[test]
fn a_request_without_a_token_passes_unless_one_is_required() {
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let mut r = rule(jwks(&[&rsa]));
    let jwt = CompiledJwt::compile(std::slice::from_ref(&r)).expect("compile");
    assert!(matches!(
        jwt.authenticate(&HeaderMap::new(), Some("a=b")),
        JwtOutcome::NoToken
    ));
    let mut basic = HeaderMap::new();
    basic.insert(
        "authorization",
        HeaderValue::from_static("Basic dXNlcjpwdw=="),
    );
    assert!(
        matches!(jwt.authenticate(&basic, None), JwtOutcome::NoToken),
        "not a bearer token"
    );
    r.require_token = true;
    let jwt = CompiledJwt::compile(&[r]).expect("compile");
    assert_eq!(
        error(jwt.authenticate(&HeaderMap::new(), None)),
        JwtError::Missing
    );
    assert!(
        CompiledJwt::default()
            .authenticate(&basic, None)
            .is_no_token()
    );
}

#[test]
fn keys_not_fetched_or_failed_refuse_tokens_honestly() {
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let token = rsa.sign(claims("alice"));
    for state in [
        JwksFetch::Pending,
        JwksFetch::Failed {
            error: "connection refused".into(),
        },
    ] {
        let mut r = rule(String::new());
        r.jwks = Jwks::Remote {
            uri: "https://issuer.example/jwks".into(),
            state,
        };
        let jwt = CompiledJwt::compile(&[r]).expect("compile");
        assert!(matches!(
            error(jwt.authenticate(&bearer(&token), None)),
            JwtError::KeysUnavailable { .. }
        ));
        assert!(jwt.authenticate(&HeaderMap::new(), None).is_no_token());
    }
    let mut r = rule(String::new());
    r.jwks = Jwks::Remote {
        uri: "https://issuer.example/jwks".into(),
        state: JwksFetch::Fetched {
            keys: jwks(&[&rsa]),
        },
    };
    let jwt = CompiledJwt::compile(&[r]).expect("compile");
    assert!(matches!(
        jwt.authenticate(&bearer(&token), None),
        JwtOutcome::Verified { .. }
    ));
}

#[test]
fn each_token_is_checked_by_the_rule_of_its_issuer() {
    let a = signer(Algorithm::RS256, "a");
    let b = signer(Algorithm::ES256, "b");
    let mut second = rule(jwks(&[&b]));
    second.issuer = "https://other.example".into();
    second.audiences.clear();
    second.forward_original_token = true;
    second.from_headers = vec![JwtHeader {
        name: "x-token".into(),
        prefix: String::new(),
    }];
    second.from_params.clear();
    second.from_cookies = vec!["session".into()];
    let jwt = CompiledJwt::compile(&[rule(jwks(&[&a])), second]).expect("compile");
    let token = b.sign(json!({"iss": "https://other.example", "sub": "carol", "exp": now() + 60}));
    let mut cookie = HeaderMap::new();
    cookie.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; session={token}")).expect("cookie"),
    );
    match jwt.authenticate(&cookie, None) {
        JwtOutcome::Verified { identity, edits } => {
            assert_eq!(identity.principal(), "https://other.example/carol");
            assert!(edits.remove.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let mut header = HeaderMap::new();
    header.insert("x-token", HeaderValue::from_str(&token).expect("value"));
    assert!(matches!(
        jwt.authenticate(&header, None),
        JwtOutcome::Verified { .. }
    ));
    // The other issuer's token where only the first rule reads: no rule names it there.
    assert_eq!(
        error(jwt.authenticate(&bearer(&token), None)),
        JwtError::WrongIssuer
    );
}

#[test]
fn a_verified_token_feeds_authorization() {
    use super::{CompiledAuthz, HttpAttributes, RequestAttributes, Verdict, authorize};
    use trellis_model::security::{
        AuthzAction, AuthzPolicy, AuthzRule, RequestPrincipalPattern, Source, StringPattern,
    };
    let rsa = signer(Algorithm::RS256, "rsa-1");
    let jwt = CompiledJwt::compile(&[rule(jwks(&[&rsa]))]).expect("compile");
    let authz = CompiledAuthz::compile(&[AuthzPolicy {
        name: "production/alice-only".into(),
        action: AuthzAction::Allow,
        provider: None,
        dry_run: false,
        rules: vec![AuthzRule {
            from: vec![Source {
                request_principals: vec![RequestPrincipalPattern {
                    issuer: StringPattern::Exact(ISS.into()),
                    subject: StringPattern::Exact("alice".into()),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }])
    .expect("authz");
    let decide = |token: &str| {
        let headers = bearer(token);
        let JwtOutcome::Verified { identity, .. } = jwt.authenticate(&headers, None) else {
            panic!("not verified");
        };
        let attrs = RequestAttributes {
            http: Some(HttpAttributes {
                host: "backend",
                method: "GET",
                path: "/",
                headers: &headers,
                jwt: Some(&identity),
            }),
            ..Default::default()
        };
        authorize(&authz, &attrs).verdict == Verdict::Allow
    };
    assert!(decide(&rsa.sign(claims("alice"))));
    assert!(!decide(&rsa.sign(claims("mallory"))));
}
