//! Whether the user may write what `trellis install` writes, asked of the API server
//! itself with a SelfSubjectAccessReview per (verb, resource, namespace): the answer
//! follows whatever authorizers the cluster runs (RBAC, webhooks), not a guess from
//! reading roles. The install applies server-side, which needs `patch`, and `create`
//! for what is not there yet. What a review cannot see: RBAC's escalation check (a
//! ClusterRole may only grant what its creator holds, unless they may `escalate`).

use std::fmt;

use futures_util::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use serde::Serialize;

use super::{Check, Status, describe_error};

/// A kind the install writes: its API group (`""` for the core group), its resource
/// name, and whether it lives in the control plane's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub group: &'static str,
    pub resource: &'static str,
    pub namespaced: bool,
}

const fn written(group: &'static str, resource: &'static str, namespaced: bool) -> Written {
    Written {
        group,
        resource,
        namespaced,
    }
}

/// Every kind `trellis install` writes, in the order it applies them (a test checks
/// this against the objects of every profile).
pub const WRITTEN: &[Written] = &[
    written("apiextensions.k8s.io", "customresourcedefinitions", false),
    written("", "namespaces", false),
    written("", "configmaps", true),
    written("", "serviceaccounts", true),
    written("rbac.authorization.k8s.io", "clusterroles", false),
    written("rbac.authorization.k8s.io", "clusterrolebindings", false),
    written("rbac.authorization.k8s.io", "roles", true),
    written("rbac.authorization.k8s.io", "rolebindings", true),
    written("apps", "deployments", true),
    written("", "services", true),
    written("policy", "poddisruptionbudgets", true),
    written(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        false,
    ),
    written(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        false,
    ),
];

/// The verbs a server-side apply needs: `create` for a new object, `patch` for both.
pub const VERBS: &[&str] = &["create", "patch"];

/// One thing the user may or may not do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Permission {
    /// `deployments.apps` (kubectl's name for a resource of a group).
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Where it applies: `in istio-system`, or `cluster-wide`.
    pub fn scope(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in {ns}"),
            None => "cluster-wide".to_string(),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.verb, self.resource_name(), self.scope())
    }
}

/// Every permission the install needs, for a control plane in `namespace`.
pub fn needed(namespace: &str) -> Vec<Permission> {
    WRITTEN
        .iter()
        .flat_map(|w| {
            VERBS.iter().map(move |verb| Permission {
                verb: verb.to_string(),
                group: w.group.to_string(),
                resource: w.resource.to_string(),
                namespace: w.namespaced.then(|| namespace.to_string()),
            })
        })
        .collect()
}

/// The answers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// How many were asked about.
    pub checked: usize,
    /// Refused, in [`WRITTEN`]'s order.
    pub missing: Vec<Permission>,
    /// Asked but not answered (the review itself failed), with why.
    pub unanswered: Vec<Unanswered>,
}

/// A review that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Unanswered {
    pub permission: Permission,
    pub error: String,
}

/// Asks about every permission in `needed(namespace)`, all at once.
pub async fn review(client: &kube::Client, namespace: &str) -> Permissions {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let needed = needed(namespace);
    let answers = join_all(needed.iter().map(|p| allowed(&api, p))).await;
    let mut out = Permissions {
        checked: needed.len(),
        ..Permissions::default()
    };
    for (permission, answer) in needed.into_iter().zip(answers) {
        match answer {
            Ok(true) => {}
            Ok(false) => out.missing.push(permission),
            Err(error) => out.unanswered.push(Unanswered { permission, error }),
        }
    }
    out
}

async fn allowed(
    api: &Api<SelfSubjectAccessReview>,
    permission: &Permission,
) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.clone()),
                group: Some(permission.group.clone()),
                resource: Some(permission.resource.clone()),
                namespace: permission.namespace.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| describe_error(&e))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

impl Permissions {
    pub(super) fn check(&self) -> Check {
        let mut details = grouped(&self.missing);
        details.extend(
            self.unanswered
                .iter()
                .map(|u| format!("{}: not answered: {}", u.permission, u.error)),
        );
        let (status, message) = if !self.missing.is_empty() {
            (
                Status::Fail,
                format!(
                    "permissions: {} of the {} that `trellis install` needs are missing",
                    self.missing.len(),
                    self.checked
                ),
            )
        } else if !self.unanswered.is_empty() {
            (
                Status::Fail,
                format!(
                    "permissions: {} of {} could not be checked",
                    self.unanswered.len(),
                    self.checked
                ),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "permissions: the user may create all {} kinds of object `trellis install` writes",
                    WRITTEN.len()
                ),
            )
        };
        Check {
            name: "permissions",
            status,
            message,
            details,
        }
    }
}

/// `create, patch deployments.apps in istio-system`: one line per resource and scope.
fn grouped(missing: &[Permission]) -> Vec<String> {
    let mut lines: Vec<(String, Vec<&str>)> = Vec::new();
    for p in missing {
        let what = format!("{} {}", p.resource_name(), p.scope());
        match lines.iter_mut().find(|(w, _)| *w == what) {
            Some((_, verbs)) => verbs.push(&p.verb),
            None => lines.push((what, vec![&p.verb])),
        }
    }
    lines
        .into_iter()
        .map(|(what, verbs)| format!("missing: {} {what}", verbs.join(", ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_kinds_are_asked_in_the_control_planes_namespace_only() {
        let needed = needed("mesh");
        assert_eq!(needed.len(), WRITTEN.len() * VERBS.len());
        let deployments = needed
            .iter()
            .find(|p| p.resource == "deployments" && p.verb == "create")
            .expect("deployments are written");
        assert_eq!(deployments.to_string(), "create deployments.apps in mesh");
        let crds = needed
            .iter()
            .find(|p| p.resource == "customresourcedefinitions")
            .expect("CRDs are written");
        assert_eq!(crds.namespace, None);
        assert_eq!(
            crds.to_string(),
            "create customresourcedefinitions.apiextensions.k8s.io cluster-wide"
        );
    }

    #[test]
    fn missing_permissions_are_listed_by_name_one_line_per_resource() {
        let needed = needed("istio-system");
        let missing: Vec<Permission> = needed
            .iter()
            .filter(|p| p.resource == "deployments" || p.resource == "namespaces")
            .cloned()
            .collect();
        let check = Permissions {
            checked: needed.len(),
            missing,
            unanswered: Vec::new(),
        }
        .check();
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.details,
            [
                "missing: create, patch namespaces cluster-wide",
                "missing: create, patch deployments.apps in istio-system",
            ]
        );
    }

    #[test]
    fn every_kind_the_install_writes_is_asked_about_where_it_is_written() {
        use crate::install::{Profile, Values, all_objects};
        for profile in Profile::ALL {
            let values = Values {
                profile,
                namespace: "mesh".into(),
                ..Values::default()
            };
            for object in all_objects(&values).expect("the install's objects") {
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = object["kind"].as_str().unwrap_or_default();
                // Every kind the install writes pluralises regularly.
                let resource = format!("{}s", kind.to_lowercase());
                let written = WRITTEN
                    .iter()
                    .find(|w| w.group == group && w.resource == resource)
                    .unwrap_or_else(|| {
                        panic!("{profile}: {kind} ({api_version}) is not asked about")
                    });
                let namespace = object["metadata"]["namespace"].as_str();
                assert_eq!(namespace.is_some(), written.namespaced, "{profile}: {kind}");
                assert!(namespace.is_none_or(|ns| ns == "mesh"), "{profile}: {kind}");
            }
        }
    }

    #[test]
    fn nothing_missing_passes() {
        let check = Permissions {
            checked: 24,
            ..Permissions::default()
        }
        .check();
        assert_eq!(check.status, Status::Pass);
        assert!(check.details.is_empty());
    }
}
