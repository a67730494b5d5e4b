//! RequestAuthentication: finds tokens where the rules say (headers after a prefix,
//! query parameters, cookies), verifies each with the rule whose issuer it names, and
//! says what to do — Istio's semantics: an invalid token is refused (401), and so is
//! one whose issuer no rule reading it there names ("Jwt issuer is not configured");
//! a request without one passes on to authorization. Keys are parsed once per config;
//! a rule without keys (a `jwksUri` not fetched yet, or failing) refuses its tokens.

use std::collections::HashSet;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use trellis_model::security::JwtRule;

use super::PolicyError;
use super::attributes::JwtIdentity;

/// Clock skew allowed on `exp` and `nbf`, in seconds (Envoy's default).
const LEEWAY_SECONDS: u64 = 60;

/// Every JWT rule of one proxy, ready to verify with.
#[derive(Debug, Default)]
pub struct CompiledJwt {
    rules: Vec<Rule>,
    /// Every place a token is read from, once.
    locations: Vec<Location>,
}

#[derive(Debug)]
struct Rule {
    policy: String,
    /// Empty: any issuer.
    issuer: String,
    /// The keys, or why there are none.
    keys: Result<Vec<Key>, String>,
    /// One per key family (jsonwebtoken wants every allowed algorithm to fit the key).
    validations: Vec<(AlgorithmFamily, Validation)>,
    /// Indexes into `CompiledJwt::locations`.
    locations: Vec<usize>,
    payload_header: Option<HeaderName>,
    forward: bool,
    claim_headers: Vec<(HeaderName, Vec<String>)>,
    space_delimited: Vec<String>,
    require: bool,
}

#[derive(Debug)]
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// What authentication says about one request.
#[derive(Debug)]
pub enum JwtOutcome {
    /// No token anywhere the rules look (or no rules): authorization decides.
    NoToken,
    /// A token verified: who it names, and the header edits to make.
    Verified {
        identity: JwtIdentity,
        edits: HeaderEdits,
    },
    /// Refuse with 401.
    Invalid(JwtError),
}

impl JwtOutcome {
    /// True when no token was found (the request goes on without an identity).
    pub fn is_no_token(&self) -> bool {
        matches!(self, JwtOutcome::NoToken)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Jwt issuer is not configured")]
    WrongIssuer,
    #[error("Audiences in Jwt are not allowed")]
    WrongAudience,
    #[error("Jwt verification fails")]
    BadSignature,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    UnknownKey,
    #[error("Jwks is not available for {policy}: {reason}")]
    KeysUnavailable { policy: String, reason: String },
    #[error("Jwt is missing")]
    Missing,
    #[error("Jwt is invalid: {0}")]
    Other(String),
}

/// Request header changes after a verified token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdits {
    /// Token headers to drop (no `forwardOriginalToken`).
    pub remove: Vec<HeaderName>,
    /// Headers to set: the payload (`outputPayloadToHeader`), claims
    /// (`outputClaimToHeaders`).
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

fn header_name(policy: &str, name: &str) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| PolicyError::HeaderName {
        policy: policy.to_string(),
        name: name.to_string(),
    })
}

/// Parses a key set; keys this crate cannot use are skipped, a document that is not a
/// key set is an error (the rule then refuses its tokens).
fn parse_keys(text: &str) -> Result<Vec<Key>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        Some(_) => return Err("`keys` is not a list".into()),
        None => vec![value],
    };
    let keys: Vec<Key> = items
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect();
    Ok(keys)
}

impl CompiledJwt {
    /// Compiles the rules of one proxy.
    pub fn compile(rules: &[JwtRule]) -> Result<Self, PolicyError> {
        let mut out = CompiledJwt::default();
        for r in rules {
            let mut locations = Vec::new();
            let mut wanted: Vec<Location> = Vec::new();
            for h in &r.from_headers {
                wanted.push(Location::Header {
                    name: header_name(&r.policy, &h.name)?,
                    prefix: h.prefix.clone(),
                });
            }
            wanted.extend(r.from_params.iter().cloned().map(Location::Param));
            wanted.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
            for l in wanted {
                let i = match out.locations.iter().position(|x| *x == l) {
                    Some(i) => i,
                    None => {
                        out.locations.push(l);
                        out.locations.len() - 1
                    }
                };
                locations.push(i);
            }
            let mut validation = Validation::new(Algorithm::RS256);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.required_spec_claims = HashSet::new();
            if r.audiences.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&r.audiences);
                validation.required_spec_claims.insert("aud".into());
            }
            if !r.issuer.is_empty() {
                validation.set_issuer(&[&r.issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            out.rules.push(Rule {
                policy: r.policy.clone(),
                issuer: r.issuer.clone(),
                keys: r
                    .jwks
                    .keys()
                    .map_err(|e| e.to_string())
                    .and_then(parse_keys),
                validations: FAMILIES
                    .iter()
                    .map(|f| {
                        let mut v = validation.clone();
                        v.algorithms = f.algorithms().to_vec();
                        (*f, v)
                    })
                    .collect(),
                locations,
                payload_header: r
                    .output_payload_to_header
                    .as_deref()
                    .map(|h| header_name(&r.policy, h))
                    .transpose()?,
                forward: r.forward_original_token,
                claim_headers: r
                    .output_claim_to_headers
                    .iter()
                    .map(|c| {
                        Ok((
                            header_name(&r.policy, &c.header)?,
                            c.claim.split('.').map(str::to_string).collect(),
                        ))
                    })
                    .collect::<Result<_, PolicyError>>()?,
                space_delimited: r.space_delimited_claims.clone(),
                require: r.require_token,
            });
        }
        Ok(out)
    }

    /// True when no rule applies (nothing to verify).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Authenticates one request from its headers and query string (without `?`).
    pub fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> JwtOutcome {
        if self.rules.is_empty() {
            return JwtOutcome::NoToken;
        }
        let mut verified: Option<JwtIdentity> = None;
        let mut edits = HeaderEdits::default();
        let mut seen_token = false;
        for (index, location) in self.locations.iter().enumerate() {
            for token in extract(location, headers, query) {
                seen_token = true;
                match self.verify(index, token) {
                    Ok((rule, identity, payload)) => {
                        self.edit(rule, location, &identity, payload, &mut edits);
                        verified.get_or_insert(identity);
                    }
                    Err(e) => return JwtOutcome::Invalid(e),
                }
            }
        }
        match verified {
            Some(identity) => JwtOutcome::Verified { identity, edits },
            None if !seen_token && self.rules.iter().any(|r| r.require) => {
                JwtOutcome::Invalid(JwtError::Missing)
            }
            None => JwtOutcome::NoToken,
        }
    }

    /// Verifies a token found at location `index` with the rules that read it there
    /// and name its issuer (then those accepting any issuer).
    fn verify<'t>(
        &self,
        index: usize,
        token: &'t str,
    ) -> Result<(&Rule, JwtIdentity, &'t str), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let payload_text = token.split('.').nth(1).ok_or(JwtError::Malformed)?;
        let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| JwtError::Malformed)?;
        let issuer = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
        let here = |r: &&Rule| r.locations.contains(&index);
        let candidates: Vec<&Rule> = self
            .rules
            .iter()
            .filter(here)
            .filter(|r| r.issuer == issuer)
            .chain(
                self.rules
                    .iter()
                    .filter(here)
                    .filter(|r| r.issuer.is_empty()),
            )
            .collect();
        let mut last = JwtError::WrongIssuer;
        for rule in candidates {
            match check(rule, &header, token) {
                Ok(mut claims) => {
                    for name in &rule.space_delimited {
                        if let Some(Value::String(s)) = claims.get(name) {
                            let list = s.split(' ').filter(|p| !p.is_empty());
                            let list = list.map(|p| Value::String(p.to_string())).collect();
                            claims.insert(name.clone(), Value::Array(list));
                        }
                    }
                    let text = |k: &str| {
                        claims
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    };
                    let identity = JwtIdentity {
                        issuer: text("iss"),
                        subject: text("sub"),
                        claims,
                    };
                    return Ok((rule, identity, payload_text));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn edit(
        &self,
        rule: &Rule,
        location: &Location,
        identity: &JwtIdentity,
        payload: &str,
        edits: &mut HeaderEdits,
    ) {
        if !rule.forward
            && let Location::Header { name, .. } = location
            && !edits.remove.contains(name)
        {
            edits.remove.push(name.clone());
        }
        if let Some(h) = &rule.payload_header {
            // The payload as sent is base64url already; Envoy sends it unpadded.
            let encoded = payload.trim_end_matches('=');
            let value = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
                .map(|raw| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                edits.set.push((h.clone(), v));
            }
        }
        for (header, path) in &rule.claim_headers {
            let mut value = path.first().and_then(|k| identity.claims.get(k));
            for k in path.iter().skip(1) {
                value = value.and_then(|v| v.get(k));
            }
            let text = match value {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            };
            if let Some(v) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
                edits.set.push((header.clone(), v));
            }
        }
    }
}

/// The key families a token may be signed with (every one the crate verifies).
const FAMILIES: [AlgorithmFamily; 4] = [
    AlgorithmFamily::Hmac,
    AlgorithmFamily::Rsa,
    AlgorithmFamily::Ec,
    AlgorithmFamily::Ed,
];

/// Verifies `token` with one rule's keys: the key its `kid` names, else every key of
/// the token's algorithm.
fn check(
    rule: &Rule,
    header: &jsonwebtoken::Header,
    token: &str,
) -> Result<Map<String, Value>, JwtError> {
    let keys = rule
        .keys
        .as_ref()
        .map_err(|reason| JwtError::KeysUnavailable {
            policy: rule.policy.clone(),
            reason: reason.clone(),
        })?;
    let usable = keys.iter().filter(|k| {
        header
            .kid
            .as_ref()
            .is_none_or(|kid| k.kid.as_ref() == Some(kid))
            && k.alg.is_none_or(|a| a == header.alg)
            && k.key.family() == header.alg.family()
    });
    let family = header.alg.family();
    let Some((_, validation)) = rule.validations.iter().find(|(f, _)| *f == family) else {
        return Err(JwtError::UnknownKey);
    };
    let mut last = JwtError::UnknownKey;
    for k in usable {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::ExpiredSignature => JwtError::Expired,
                    K::ImmatureSignature => JwtError::NotYetValid,
                    K::InvalidIssuer => JwtError::WrongIssuer,
                    K::InvalidAudience => JwtError::WrongAudience,
                    K::MissingRequiredClaim(c) if c == "aud" => JwtError::WrongAudience,
                    K::MissingRequiredClaim(c) if c == "iss" => JwtError::WrongIssuer,
                    K::InvalidSignature => JwtError::BadSignature,
                    K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => JwtError::Malformed,
                    other => JwtError::Other(format!("{other:?}")),
                };
                // A bad signature may be another key's; time and claim failures are final.
                if last != JwtError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// The tokens at one location.
fn extract<'h>(
    location: &Location,
    headers: &'h HeaderMap,
    query: Option<&'h str>,
) -> Vec<&'h str> {
    match location {
        Location::Header { name, prefix } => headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let v = v.trim();
                let head = v.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| v[prefix.len()..].trim())
            })
            .filter(|t| !t.is_empty())
            .collect(),
        Location::Param(param) => query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, v)| k == param && !v.is_empty())
            .map(|(_, v)| v)
            .collect(),
        Location::Cookie(cookie) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, v)| k == cookie && !v.is_empty())
            .map(|(_, v)| v)
            .collect(),
    }
}
