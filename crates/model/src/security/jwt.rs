//! RequestAuthentication in evaluation form: one [`JwtRule`] per accepted issuer, with
//! where its token is read (Istio's defaults already filled in), its key set, and what
//! a verified token adds to the request. A `jwksUri` rule carries the fetched document,
//! or says honestly that it is not there yet or that fetching failed.

use serde::{Deserialize, Serialize};

/// How tokens from one issuer are found and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    /// The RequestAuthentication it came from (`namespace/name`).
    pub policy: String,
    /// The `iss` a token must carry; empty accepts any issuer (a rule with only a
    /// `jwksUri`).
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    /// Headers the token is read from (after `prefix`, which is stripped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the token is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// A header to receive the verified payload, base64url-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the token header in the request sent on (it is removed otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// Claims copied into request headers after verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value is a space-separated list (`scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// `presence: REQUIRED`: a request without a token is rejected too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_token: bool,
}

/// A header a token is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeader {
    /// Lowercase.
    pub name: String,
    /// Stripped from the value (`Bearer `); a value without it carries no token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// One claim copied into a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    /// A claim name; `a.b` reads a nested claim.
    pub claim: String,
}

/// A rule's signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Jwks {
    /// Written in the RequestAuthentication (`jwks`): a JSON Web Key Set as text.
    Inline { keys: String },
    /// Fetched by the control plane from `jwksUri`.
    Remote { uri: String, state: JwksFetch },
}

/// Where fetching a `jwksUri` stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JwksFetch {
    /// Not fetched yet: tokens for this issuer cannot be verified, so are rejected.
    Pending,
    /// The document as fetched (a JSON Web Key Set as text).
    Fetched { keys: String },
    /// The last fetch failed and no earlier keys are kept: tokens are rejected.
    Failed { error: String },
}

impl Jwks {
    /// The key set's text, or why there is none.
    pub fn keys(&self) -> Result<&str, JwksUnavailable> {
        match self {
            Jwks::Inline { keys }
            | Jwks::Remote {
                state: JwksFetch::Fetched { keys },
                ..
            } => Ok(keys),
            Jwks::Remote {
                uri,
                state: JwksFetch::Pending,
            } => Err(JwksUnavailable::NotFetched(uri.clone())),
            Jwks::Remote {
                uri,
                state: JwksFetch::Failed { error },
            } => Err(JwksUnavailable::FetchFailed {
                uri: uri.clone(),
                error: error.clone(),
            }),
        }
    }
}

/// Why a rule has no keys to verify with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksUnavailable {
    #[error("the key set at {0} has not been fetched yet")]
    NotFetched(String),
    #[error("fetching the key set at {uri} failed: {error}")]
    FetchFailed { uri: String, error: String },
}

impl JwtRule {
    /// Istio's default locations, used when a rule names none: `Authorization: Bearer`
    /// and the `access_token` query parameter.
    pub fn default_locations() -> (Vec<JwtHeader>, Vec<String>) {
        (
            vec![JwtHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }],
            vec!["access_token".into()],
        )
    }

    /// True when the rule reads the token from nowhere.
    pub fn has_no_location(&self) -> bool {
        self.from_headers.is_empty() && self.from_params.is_empty() && self.from_cookies.is_empty()
    }
}
