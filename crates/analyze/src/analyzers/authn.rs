//! Authentication analyzers.

use super::json::text;
use super::names::full_name;
use crate::messages::JWKS_URI_FETCH_UNRESTRICTED;
use crate::{Analyzer, Context, Reporter};

/// RequestAuthentications exist but istiod may fetch JWKS from any address.
pub struct BlockedCidrsAnalyzer;

/// The environment variable that limits where istiod fetches JWKS from.
const BLOCKED_CIDRS: &str = "BLOCKED_CIDRS_IN_JWKS_URIS";

/// How many RequestAuthentication names a message lists before summarising.
const SHOWN_NAMES: usize = 5;

impl Analyzer for BlockedCidrsAnalyzer {
    fn name(&self) -> &'static str {
        "authn.BlockedCIDRsAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that istiod sets BLOCKED_CIDRS_IN_JWKS_URIS when RequestAuthentications exist"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let ras: Vec<String> = cx
            .of("security.istio.io", "RequestAuthentication")
            .map(full_name)
            .collect();
        if ras.is_empty() {
            return;
        }
        let listed = if ras.len() <= SHOWN_NAMES {
            ras.join(", ")
        } else {
            format!(
                "{} and {} more",
                ras[..SHOWN_NAMES].join(", "),
                ras.len() - SHOWN_NAMES
            )
        };
        for deployment in cx.of("apps", "Deployment") {
            if deployment.meta.labels.get("app").map(String::as_str) != Some("istiod") {
                continue;
            }
            let containers = &deployment.raw["spec"]["template"]["spec"]["containers"];
            let configured = containers.as_array().into_iter().flatten().any(|c| {
                c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| text(&e["name"]) == BLOCKED_CIDRS && !text(&e["value"]).is_empty())
            });
            if configured {
                continue;
            }
            out.report(
                &JWKS_URI_FETCH_UNRESTRICTED,
                deployment,
                Some("spec.template.spec.containers"),
                format!(
                    "{} RequestAuthentication(s) ({listed}) make istiod fetch keys from their \
                     jwksUri, and {BLOCKED_CIDRS} is not set on istiod, so those fetches may \
                     reach any address (including internal ones); set it to the CIDRs istiod \
                     must not contact",
                    ras.len()
                ),
            );
        }
    }
}
