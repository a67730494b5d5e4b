//! What analyzers look at: every resource, indexed by kind, with Istio's harness
//! conventions applied (ignored system namespaces, the default ingress gateway), plus
//! the pods that Deployments' templates become (`templates`), each of which knows the
//! Deployment it came from ([`Context::origin`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use trellis_api::Resource;

use crate::templates::{Origin, template_pod, workloads_with_pods};
use crate::{IGNORED_NAMESPACES, Options, TemplatePods};

/// Every resource under analysis, grouped by kind.
pub struct Context<'a> {
    resources: Vec<Cow<'a, Resource>>,
    by_kind: HashMap<String, Vec<usize>>,
    /// Made pods, by the address of their `raw` document (shared by every copy of the
    /// pod, and by nothing else) → (index of the workload they came from, its template path).
    origins: HashMap<usize, (usize, &'static str)>,
    options: &'a Options,
}

impl<'a> Context<'a> {
    /// Builds the view: drops ignored namespaces, fills default namespaces, adds defaults.
    /// Resources are borrowed; only those given a default namespace are copied.
    pub fn new(input: &'a [Resource], options: &'a Options) -> Self {
        let mut resources: Vec<Cow<'a, Resource>> = input
            .iter()
            .filter(|r| {
                !r.meta
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| IGNORED_NAMESPACES.contains(&ns))
            })
            .map(|r| match &options.default_namespace {
                Some(ns) if r.meta.namespace.is_none() && !is_cluster_scoped(&r.kind) => {
                    let mut owned = r.clone();
                    owned.meta.namespace = Some(ns.clone());
                    Cow::Owned(owned)
                }
                _ => Cow::Borrowed(r),
            })
            .collect();
        let mut origins = HashMap::new();
        if options.pods_from_deployments != TemplatePods::Never {
            let running = match options.pods_from_deployments {
                TemplatePods::WithoutPods => workloads_with_pods(resources.iter().map(|r| &**r)),
                _ => HashSet::new(),
            };
            let pods: Vec<(usize, Resource, &'static str)> = resources
                .iter()
                .enumerate()
                .filter(|(_, r)| !running.contains(&(ns_or_empty(r), r.meta.name.as_str())))
                .filter_map(|(i, r)| template_pod(r).map(|(pod, path)| (i, pod, path)))
                .collect();
            for (owner, pod, path) in pods {
                origins.insert(raw_address(&pod), (owner, path));
                resources.push(Cow::Owned(pod));
            }
        }
        if options.add_ingress_gateway {
            resources.extend(
                default_ingress(&options.istio_namespace)
                    .into_iter()
                    .map(Cow::Owned),
            );
        }
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            by_kind.entry(r.kind.clone()).or_default().push(i);
        }
        Context {
            resources,
            by_kind,
            origins,
            options,
        }
    }

    /// For a pod made from a workload's template, that workload and where the template
    /// is; `None` for every resource of the inputs (and the default ingress gateway).
    pub fn origin(&self, r: &Resource) -> Option<Origin<'_>> {
        let &(owner, template) = self.origins.get(&raw_address(r))?;
        Some(Origin {
            owner: &self.resources[owner],
            template,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        self.options
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().map(|r| &**r)
    }

    /// Resources of one kind (any API group; check `group()` where kinds collide,
    /// such as networking.istio.io and gateway.networking.k8s.io `Gateway`).
    pub fn of_kind<'s>(&'s self, kind: &str) -> impl Iterator<Item = &'s Resource> + 's {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .map(|i| &*self.resources[*i])
    }

    /// Resources of one kind in one API group (`""` for core Kubernetes).
    pub fn of<'s>(&'s self, group: &'s str, kind: &str) -> impl Iterator<Item = &'s Resource> + 's {
        self.of_kind(kind).filter(move |r| r.group() == group)
    }

    /// The first resource of `kind` in `group` named `namespace/name`, where an empty
    /// `namespace` means none written.
    pub fn find<'s>(
        &'s self,
        group: &'s str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&'s Resource> {
        self.of(group, kind)
            .find(|r| r.meta.name == name && r.meta.namespace.as_deref().unwrap_or("") == namespace)
    }
}

/// Kinds that live outside namespaces.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "CustomResourceDefinition"
            | "GatewayClass"
    )
}

fn ns_or_empty(r: &Resource) -> &str {
    r.meta.namespace.as_deref().unwrap_or("")
}

/// What identifies a made resource: its `raw` document, which copies share.
fn raw_address(r: &Resource) -> usize {
    Arc::as_ptr(&r.raw) as usize
}

/// The ingress gateway Pod and Service that an Istio install provides.
fn default_ingress(istio_namespace: &str) -> Vec<Resource> {
    let text = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-dummypod
  namespace: {istio_namespace}
  labels: {{istio: ingressgateway}}
spec:
  containers:
  - name: istio-proxy
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: {istio_namespace}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: 80, nodePort: 31380, protocol: TCP}}
  - {{name: https, port: 443, targetPort: 443, nodePort: 31390, protocol: TCP}}
  - {{name: tcp, port: 31400, targetPort: 31400, nodePort: 31400, protocol: TCP}}
  - {{name: tls, port: 15443, targetPort: 15443, nodePort: 31447, protocol: TCP}}
"
    );
    let mut loaded = trellis_api::load_str("", &text).resources;
    for r in &mut loaded {
        r.source.file = Arc::from("");
    }
    loaded
}
