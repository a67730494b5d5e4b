//! Cluster mode's proof of identity for a first certificate: the pod's projected
//! service-account token (audience `istio-ca`, as Istio's sidecars send it), checked
//! by the API server through a TokenReview. The identity comes only from the review's
//! answer (`system:serviceaccount:NAMESPACE:NAME`), never from anything the caller
//! says, so a token for one service account never gets another's SPIFFE id.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use trellis_identity::auth::AuthFuture;
use trellis_identity::{AuthError, Authenticator, Credential, WorkloadIdentity};

/// The audience Istio's sidecars request their token for.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// Authenticates `Credential::ServiceAccountToken` with the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Reviews tokens for the `istio-ca` audience.
    pub fn new(client: kube::Client) -> TokenReviewer {
        TokenReviewer::with_audiences(client, vec![ISTIO_CA_AUDIENCE.into()])
    }

    /// Reviews tokens for any of `audiences`.
    pub fn with_audiences(client: kube::Client, audiences: Vec<String>) -> TokenReviewer {
        TokenReviewer { client, audiences }
    }

    async fn review(&self, token: &str) -> Result<WorkloadIdentity, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
                    AuthError::Unavailable(format!(
                        "the control plane may not create TokenReviews ({})",
                        status.message
                    ))
                }
                _ => AuthError::Unavailable(format!("TokenReview: {e}")),
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into());
            return Err(AuthError::TokenRejected(why));
        }
        // The API server answers with the audiences the token is good for, among
        // those asked; none of ours means it is for something else.
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(AuthError::TokenRejected(format!(
                "not issued for audience {}",
                self.audiences.join(" or ")
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        identity_of(&username)
    }
}

/// `system:serviceaccount:NAMESPACE:NAME` → the workload identity.
pub fn identity_of(username: &str) -> Result<WorkloadIdentity, AuthError> {
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| {
            AuthError::TokenRejected(format!("{username:?} is not a service account"))
        })?;
    let (namespace, name) = rest.split_once(':').ok_or_else(|| {
        AuthError::TokenRejected(format!("{username:?} is not a service account"))
    })?;
    WorkloadIdentity::new(namespace, name).map_err(|e| AuthError::TokenRejected(e.to_string()))
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, credential: &'a Credential) -> AuthFuture<'a> {
        Box::pin(async move {
            match credential {
                Credential::ServiceAccountToken(token) => self.review(token).await,
                other => Err(AuthError::Unsupported(other.kind())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_have_an_identity() {
        let who = identity_of("system:serviceaccount:bookinfo:reviews").expect("an SA");
        assert_eq!(
            (who.namespace.as_str(), who.service_account.as_str()),
            ("bookinfo", "reviews")
        );
        for bad in [
            "admin",
            "system:serviceaccount:bookinfo",
            "system:serviceaccount:Bad_NS:x",
            "system:node:n1",
        ] {
            assert!(identity_of(bad).is_err(), "{bad}");
        }
    }
}
