//! RequestAuthentication for one workload: every JWT rule of every policy that
//! attaches to it (Istio merges them, no precedence), sorted by issuer as Istio
//! sorts them, with the default token locations filled in where a rule names none.

use trellis_api::security::{JwtPresence, JwtRule as Written};
use trellis_model::security::{ClaimToHeader, Jwks, JwksFetch, JwtHeader, JwtRule};

use super::{Attachment, PolicyTarget, attaches, lookup_namespaces, name_of};
use crate::mesh::Mesh;

/// The JWT rules that apply to `target`.
pub(super) fn rules(
    mesh: &Mesh,
    target: &PolicyTarget<'_>,
    classic: &[(String, String)],
) -> Vec<JwtRule> {
    let mut out = Vec::new();
    for ns in lookup_namespaces(target) {
        for (r, ra) in &mesh.request_authentications {
            if r.meta.namespace_or_default() != ns {
                continue;
            }
            let a = Attachment::new(
                ra.selector.as_ref(),
                ra.target_ref.as_ref(),
                &ra.target_refs,
            );
            if attaches(&a, ns, target, classic) {
                let policy = name_of(r);
                out.extend(ra.jwt_rules.iter().map(|rule| convert(&policy, rule)));
            }
        }
    }
    out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    out
}

fn convert(policy: &str, rule: &Written) -> JwtRule {
    let jwks = match (&rule.jwks, rule.effective_jwks_uri()) {
        (Some(keys), _) => Jwks::Inline { keys: keys.clone() },
        (None, Some(uri)) => Jwks::Remote {
            uri: uri.to_string(),
            state: JwksFetch::Pending,
        },
        // Validation requires one of them; with neither, no token can be verified.
        (None, None) => Jwks::Inline {
            keys: r#"{"keys":[]}"#.into(),
        },
    };
    let mut out = JwtRule {
        policy: policy.to_string(),
        issuer: rule.effective_issuer().unwrap_or_default().to_string(),
        audiences: rule.audiences.clone(),
        jwks,
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        output_payload_to_header: rule
            .output_payload_to_header
            .clone()
            .filter(|h| !h.is_empty()),
        forward_original_token: rule.forward_original_token,
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| ClaimToHeader {
                header: c.header.to_ascii_lowercase(),
                claim: c.claim.clone(),
            })
            .collect(),
        space_delimited_claims: rule.space_delimited_claims.clone(),
        require_token: rule.presence() == JwtPresence::Required,
    };
    if out.has_no_location() {
        (out.from_headers, out.from_params) = JwtRule::default_locations();
    }
    out
}
