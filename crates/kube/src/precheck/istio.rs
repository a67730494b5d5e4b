//! Whether Istio is already in the cluster, and what that means for an install: its
//! control plane (an `istiod` Deployment or Service not marked as Trellis's), its
//! webhooks (`istio-validator-*`, `istiod-default-validator`, `istio-sidecar-injector*`),
//! other workloads in the control plane's namespace, and Istio's CRDs — those are
//! compatible (Trellis serves the same kinds and versions), so they are only a note.
//! Listing reads metadata only; a list the user may not make is reported, not fatal.

use std::fmt;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::{Check, Status, describe_error};
// Istio's control plane's name is Trellis's too, on purpose (see the install).
use crate::install::{CONTROL_PLANE, MANAGED_BY};

/// The label Trellis's generated CRDs carry (also when applied by hand); everything
/// else the install writes carries [`MANAGED_BY`].
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "trellis");

/// An object found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What was found of an Istio installation.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExistingIstio {
    /// The namespace looked in (`--istio-namespace`).
    pub namespace: String,
    /// `istiod` Deployments (anywhere, by label; in the namespace, by name) and the
    /// `istiod` Service, not Trellis's.
    pub control_plane: Vec<Found>,
    /// Istio's validating and injecting webhook configurations.
    pub webhooks: Vec<Found>,
    /// Other Deployments, StatefulSets and DaemonSets in the namespace, not Trellis's.
    pub workloads: Vec<Found>,
    /// Istio's CRDs not written by Trellis (compatible: a note).
    pub crds: Vec<String>,
    /// Lists that failed (forbidden, most often), with why.
    pub unreadable: Vec<Unreadable>,
}

/// A list that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// `list deployments.apps in istio-system`
    pub what: String,
    /// `forbidden`, or the error.
    pub error: String,
}

/// The error of a list the user may not make.
pub const FORBIDDEN: &str = "forbidden";

/// One list made, and what it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Deployments labelled `app=istiod`, in every namespace.
    IstiodDeployments,
    /// Workloads of a kind in the namespace.
    Workloads(&'static str),
    /// The Service `istiod` in the namespace.
    IstiodService,
    ValidatingWebhooks,
    MutatingWebhooks,
    Crds,
}

/// Lists what an Istio installation leaves, in `namespace` and cluster-wide.
pub async fn look(client: &kube::Client, namespace: &str) -> ExistingIstio {
    let c = || client.clone();
    let istiod = ListParams::default().labels(&format!("app={CONTROL_PLANE}"));
    let service = ListParams::default().fields(&format!("metadata.name={CONTROL_PLANE}"));
    let all = ListParams::default();
    let (a, b, c2, d, e, f, g, h) = tokio::join!(
        metas(Api::<Deployment>::all(c()), &istiod),
        metas(Api::<Deployment>::namespaced(c(), namespace), &all),
        metas(Api::<StatefulSet>::namespaced(c(), namespace), &all),
        metas(Api::<DaemonSet>::namespaced(c(), namespace), &all),
        metas(Api::<Service>::namespaced(c(), namespace), &service),
        metas(Api::<ValidatingWebhookConfiguration>::all(c()), &all),
        metas(Api::<MutatingWebhookConfiguration>::all(c()), &all),
        metas(Api::<CustomResourceDefinition>::all(c()), &all),
    );
    classify(
        namespace,
        vec![
            (Listing::IstiodDeployments, a),
            (Listing::Workloads("Deployment"), b),
            (Listing::Workloads("StatefulSet"), c2),
            (Listing::Workloads("DaemonSet"), d),
            (Listing::IstiodService, e),
            (Listing::ValidatingWebhooks, f),
            (Listing::MutatingWebhooks, g),
            (Listing::Crds, h),
        ],
    )
}

async fn metas<K>(api: Api<K>, params: &ListParams) -> Result<Vec<ObjectMeta>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    api.list_metadata(params)
        .await
        .map(|list| list.items.into_iter().map(|o| o.metadata).collect())
        .map_err(|e| match e {
            // The API server's words name the user and the resource again: say less.
            kube::Error::Api(status) if status.code == 403 => FORBIDDEN.to_string(),
            e => describe_error(&e),
        })
}

/// Sorts what the lists found (pure, so the rules are tested without a cluster).
pub fn classify(
    namespace: &str,
    lists: Vec<(Listing, Result<Vec<ObjectMeta>, String>)>,
) -> ExistingIstio {
    let mut out = ExistingIstio {
        namespace: namespace.to_string(),
        ..ExistingIstio::default()
    };
    for (listing, answer) in lists {
        let items = match answer {
            Ok(items) => items,
            Err(error) => {
                out.unreadable.push(Unreadable {
                    what: listing.describe(namespace),
                    error,
                });
                continue;
            }
        };
        for meta in items.into_iter().filter(|m| !is_trellis(m)) {
            let name = meta.name.clone().unwrap_or_default();
            let found = |kind| Found {
                kind,
                namespace: meta.namespace.clone(),
                name: name.clone(),
            };
            match listing {
                Listing::IstiodDeployments => push_new(&mut out.control_plane, found("Deployment")),
                Listing::Workloads(kind) if kind == "Deployment" && is_control_plane(&name) => {
                    push_new(&mut out.control_plane, found(kind));
                }
                Listing::Workloads(kind) => out.workloads.push(found(kind)),
                Listing::IstiodService => push_new(&mut out.control_plane, found("Service")),
                Listing::ValidatingWebhooks if is_istio_validator(&name) => {
                    out.webhooks.push(found("ValidatingWebhookConfiguration"));
                }
                Listing::MutatingWebhooks if is_istio_injector(&name) => {
                    out.webhooks.push(found("MutatingWebhookConfiguration"));
                }
                Listing::Crds if is_istio_crd(&name) => out.crds.push(name),
                Listing::ValidatingWebhooks | Listing::MutatingWebhooks | Listing::Crds => {}
            }
        }
    }
    // The label search found them anywhere; a workload is reported once.
    out.workloads.retain(|w| !out.control_plane.contains(w));
    out
}

impl Listing {
    fn describe(self, namespace: &str) -> String {
        match self {
            Listing::IstiodDeployments => {
                format!("list deployments.apps labelled app={CONTROL_PLANE} in every namespace")
            }
            Listing::Workloads(kind) => {
                format!("list {}s.apps in {namespace}", kind.to_lowercase())
            }
            Listing::IstiodService => format!("list services in {namespace}"),
            Listing::ValidatingWebhooks => {
                "list validatingwebhookconfigurations.admissionregistration.k8s.io".to_string()
            }
            Listing::MutatingWebhooks => {
                "list mutatingwebhookconfigurations.admissionregistration.k8s.io".to_string()
            }
            Listing::Crds => "list customresourcedefinitions.apiextensions.k8s.io".to_string(),
        }
    }
}

fn push_new(list: &mut Vec<Found>, found: Found) {
    if !list.contains(&found) {
        list.push(found);
    }
}

/// Written by `trellis install` (or Trellis's CRDs applied from `manifest generate`).
pub fn is_trellis(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_some_and(|labels| {
        [MANAGED_BY, PART_OF]
            .iter()
            .any(|(key, value)| labels.get(*key).is_some_and(|v| v == value))
    })
}

/// `istiod`, or a revision's `istiod-REVISION`.
fn is_control_plane(name: &str) -> bool {
    name == CONTROL_PLANE || name.starts_with("istiod-")
}

/// istiod's own (`istio-validator-NS`, `istio-validator-REV-NS`) and the base chart's.
fn is_istio_validator(name: &str) -> bool {
    name.starts_with("istio-validator") || name == "istiod-default-validator"
}

/// `istio-sidecar-injector`, `istio-sidecar-injector-REV`.
fn is_istio_injector(name: &str) -> bool {
    name.starts_with("istio-sidecar-injector")
}

/// A CRD named `PLURAL.GROUP` of one of Istio's groups (`*.istio.io`).
fn is_istio_crd(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(_, group)| group == "istio.io" || group.ends_with(".istio.io"))
}

impl ExistingIstio {
    pub(super) fn check(&self) -> Check {
        let ns = &self.namespace;
        let mut details = Vec::new();
        let list = |found: &[Found]| {
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.control_plane.is_empty() {
            details.push(format!(
                "Istio's control plane: {} (Trellis's control plane takes the same \
                 Deployment and Service name, `{CONTROL_PLANE}`)",
                list(&self.control_plane)
            ));
        }
        if !self.webhooks.is_empty() {
            details.push(format!(
                "Istio's webhooks: {} (Istio would go on validating Istio resources and \
                 injecting its own sidecars)",
                list(&self.webhooks)
            ));
        }
        if !self.workloads.is_empty() {
            details.push(format!(
                "workloads in {ns} not installed by Trellis: {} (`trellis install` writes \
                 into {ns}, and takes over objects of the same names, such as the gateways)",
                list(&self.workloads)
            ));
        }
        let istio = !self.control_plane.is_empty() || !self.webhooks.is_empty();
        if istio {
            details.push(
                "run one or the other: uninstall Istio first (`istioctl uninstall --purge`), \
                 or install Trellis in another cluster"
                    .to_string(),
            );
        }
        let (forbidden, failed): (Vec<&Unreadable>, Vec<&Unreadable>) =
            self.unreadable.iter().partition(|u| u.error == FORBIDDEN);
        if !forbidden.is_empty() {
            let whats: Vec<&str> = forbidden.iter().map(|u| u.what.as_str()).collect();
            details.push(format!(
                "could not look, forbidden to: {}",
                whats.join("; ")
            ));
        }
        details.extend(
            failed
                .iter()
                .map(|u| format!("could not look: {}: {}", u.what, u.error)),
        );
        if !self.crds.is_empty() {
            details.push(self.crd_note());
        }
        let (status, message) = if istio {
            (
                Status::Warn,
                "existing Istio installation found: run Istio or Trellis, not both".to_string(),
            )
        } else if !self.workloads.is_empty() {
            (
                Status::Warn,
                format!("{ns} already holds workloads Trellis did not install"),
            )
        } else if !self.unreadable.is_empty() {
            (
                Status::Warn,
                "could not tell whether Istio is installed".to_string(),
            )
        } else {
            (
                Status::Pass,
                "no existing Istio control plane or webhooks".to_string(),
            )
        };
        Check {
            name: "existing-istio",
            status,
            message,
            details,
        }
    }

    fn crd_note(&self) -> String {
        let shown: Vec<&str> = self.crds.iter().take(3).map(String::as_str).collect();
        let more = if self.crds.len() > shown.len() {
            ", …"
        } else {
            ""
        };
        format!(
            "note: {} CRDs installed by Istio ({}{more}) are compatible with Trellis: \
             its CRDs for the kinds it carries out have the same names and versions, \
             and apply over Istio's",
            self.crds.len(),
            shown.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespace.map(str::to_string),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    const TRELLIS: &[(&str, &str)] = &[MANAGED_BY];

    #[test]
    fn istios_istiod_is_found_once_and_trellis_own_is_not() {
        let istiod = meta(Some("istio-system"), "istiod", &[("app", "istiod")]);
        let ours = meta(Some("mesh"), "istiod", &[("app", "istiod"), MANAGED_BY]);
        let found = classify(
            "istio-system",
            vec![
                (
                    Listing::IstiodDeployments,
                    Ok(vec![istiod.clone(), ours.clone()]),
                ),
                (Listing::Workloads("Deployment"), Ok(vec![istiod])),
            ],
        );
        assert_eq!(
            found.control_plane,
            [Found {
                kind: "Deployment",
                namespace: Some("istio-system".into()),
                name: "istiod".into()
            }]
        );
        assert!(found.workloads.is_empty());
        let check = found.check();
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.details[0].contains("Deployment istio-system/istiod"),
            "{check:?}"
        );
    }

    #[test]
    fn istio_crds_alone_are_a_note_not_a_warning() {
        let found = classify(
            "istio-system",
            vec![(
                Listing::Crds,
                Ok(vec![
                    meta(None, "virtualservices.networking.istio.io", &[]),
                    meta(None, "gateways.networking.istio.io", &[PART_OF]),
                    meta(None, "certificates.cert-manager.io", &[]),
                ]),
            )],
        );
        assert_eq!(found.crds, ["virtualservices.networking.istio.io"]);
        let check = found.check();
        assert_eq!(check.status, Status::Pass);
        assert!(check.details[0].starts_with("note: 1 CRDs installed by Istio"));
    }

    #[test]
    fn webhooks_are_told_apart_by_istios_names() {
        let found = classify(
            "istio-system",
            vec![
                (
                    Listing::ValidatingWebhooks,
                    Ok(vec![
                        meta(None, "istio-validator-istio-system", &[]),
                        meta(None, "istiod-default-validator", &[]),
                        meta(None, "trellis-validator-istio-system", TRELLIS),
                        meta(None, "cert-manager-webhook", &[]),
                    ]),
                ),
                (
                    Listing::MutatingWebhooks,
                    Ok(vec![meta(None, "istio-sidecar-injector-canary", &[])]),
                ),
            ],
        );
        let names: Vec<String> = found.webhooks.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "ValidatingWebhookConfiguration istio-validator-istio-system",
                "ValidatingWebhookConfiguration istiod-default-validator",
                "MutatingWebhookConfiguration istio-sidecar-injector-canary",
            ]
        );
    }

    #[test]
    fn other_workloads_warn_and_forbidden_lists_are_reported() {
        let found = classify(
            "istio-system",
            vec![
                (
                    Listing::Workloads("DaemonSet"),
                    Ok(vec![meta(Some("istio-system"), "ztunnel", &[])]),
                ),
                (Listing::Crds, Err(FORBIDDEN.to_string())),
                (
                    Listing::IstiodService,
                    Err("503 ServiceUnavailable".to_string()),
                ),
            ],
        );
        let check = found.check();
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.message,
            "istio-system already holds workloads Trellis did not install"
        );
        assert_eq!(
            check.details[1..],
            [
                "could not look, forbidden to: list customresourcedefinitions.apiextensions.k8s.io",
                "could not look: list services in istio-system: 503 ServiceUnavailable",
            ],
            "{check:?}"
        );
    }

    #[test]
    fn an_empty_cluster_passes() {
        let check = classify("istio-system", Vec::new()).check();
        assert_eq!(check.status, Status::Pass);
        assert!(check.details.is_empty());
    }
}
