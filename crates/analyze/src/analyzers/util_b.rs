//! Helpers shared by the DestinationRule, ServiceEntry, Sidecar and security analyzers:
//! reading fields from a resource's raw JSON, label selectors, workload membership in
//! the mesh, and resolving a host name to the service (or ServiceEntry) that serves it.
//!
//! Everything reads `Resource::raw`, not the typed spec, so that it keeps working while
//! the typed APIs change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use trellis_api::Resource;

use crate::Context;

/// The suffix Kubernetes gives to service names.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// The namespace of `r`, or `""` when none is written (as Istio keys it).
pub fn ns_of(r: &Resource) -> &str {
    r.meta.namespace.as_deref().unwrap_or("")
}

/// `namespace/name`, or just `name` when the resource has no namespace.
pub fn full_name(r: &Resource) -> String {
    match r.meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", r.meta.name),
        _ => r.meta.name.clone(),
    }
}

/// The text of a scalar, with numbers and booleans spelled as YAML would.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The string at `v`, or `""` when it is absent or not a string.
pub fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A `key: value` mapping (labels, matchLabels) as ordered pairs; non-scalars are skipped.
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
        .collect()
}

/// A list of strings; non-strings are skipped.
pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(scalar_text)
        .collect()
}

/// True when every `key: value` of `selector` is among `labels` (an empty selector
/// matches everything, as a Kubernetes equality selector does).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A selector as Kubernetes prints it: `app=web,version=v1`, keys sorted.
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A short host (`reviews`) as the FQDN it stands for in `namespace`
/// (`reviews.<namespace>.svc.cluster.local`); wildcards and dotted names are kept.
pub fn to_fqdn(namespace: &str, host: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

/// True when `host` (which may itself start with `*`) falls under the wildcard host
/// `pattern` (`*.example.com`, or `*` for everything).
pub fn wildcard_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.strip_prefix('*').unwrap_or(host).ends_with(suffix),
        None => pattern == host,
    }
}

/// The namespaces an `exportTo` list makes a resource of `namespace` visible in:
/// `*` for all (also when the list is empty), `.` for its own namespace.
pub fn export_scopes(export_to: &[String], namespace: &str) -> BTreeSet<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return BTreeSet::from(["*".to_string()]);
    }
    export_to
        .iter()
        .map(|e| {
            if e == "." {
                namespace.to_string()
            } else {
                e.clone()
            }
        })
        .collect()
}

/// What a host resolves to: a Kubernetes Service or a ServiceEntry.
#[derive(Debug, Clone)]
pub struct ServiceTarget<'a> {
    /// The Service or ServiceEntry.
    pub resource: &'a Resource,
    /// The ServiceEntry's `workloadSelector.labels` (empty for Services).
    pub workload_labels: BTreeMap<String, String>,
}

/// Every host served in the mesh, keyed by the namespace it is visible in (`*` for all)
/// and its FQDN, built from ServiceEntries and Kubernetes Services.
pub struct ServiceHosts<'a> {
    by_scope: HashMap<(String, String), ServiceTarget<'a>>,
    /// Wildcard hosts, in input order, for the slower suffix match.
    wildcards: Vec<(String, String, ServiceTarget<'a>)>,
}

impl<'a> ServiceHosts<'a> {
    /// Indexes every ServiceEntry and Service of `cx`.
    pub fn new(cx: &'a Context<'_>) -> Self {
        let mut hosts = ServiceHosts {
            by_scope: HashMap::new(),
            wildcards: Vec::new(),
        };
        for se in cx.of("networking.istio.io", "ServiceEntry") {
            let ns = ns_of(se);
            let spec = &se.raw["spec"];
            let target = ServiceTarget {
                resource: se,
                workload_labels: string_map(&spec["workloadSelector"]["labels"]),
            };
            let scopes = export_scopes(&string_list(&spec["exportTo"]), ns);
            for host in string_list(&spec["hosts"]) {
                for scope in &scopes {
                    hosts.insert(scope.clone(), to_fqdn(ns, &host), target.clone());
                }
            }
        }
        for svc in cx.of("", "Service") {
            let ns = ns_of(svc);
            let target = ServiceTarget {
                resource: svc,
                workload_labels: BTreeMap::new(),
            };
            let scopes: Vec<String> = match svc.meta.annotations.get("networking.istio.io/exportTo")
            {
                None => vec!["*".to_string()],
                Some(list) if list.is_empty() => vec!["*".to_string()],
                Some(list) => list
                    .split(',')
                    .map(|e| {
                        if e == "." {
                            ns.to_string()
                        } else {
                            e.to_string()
                        }
                    })
                    .collect(),
            };
            for scope in scopes {
                hosts.insert(scope, to_fqdn(ns, &svc.meta.name), target.clone());
            }
        }
        hosts
    }

    fn insert(&mut self, scope: String, fqdn: String, target: ServiceTarget<'a>) {
        if fqdn.starts_with('*') {
            self.wildcards
                .retain(|(s, h, _)| !(s == &scope && h == &fqdn));
            self.wildcards
                .push((scope.clone(), fqdn.clone(), target.clone()));
        }
        self.by_scope.insert((scope, fqdn), target);
    }

    /// The service that `host`, written in a resource of `namespace` exported to
    /// `export_to`, refers to: an exact match visible to everyone, then one visible in
    /// the export scopes, then a wildcard host visible in `namespace`.
    pub fn lookup(
        &self,
        namespace: &str,
        export_to: &[String],
        host: &str,
    ) -> Option<&ServiceTarget<'a>> {
        let fqdn = to_fqdn(namespace, host);
        let exact = |scope: &str| self.by_scope.get(&(scope.to_string(), fqdn.clone()));
        if let Some(t) = exact("*") {
            return Some(t);
        }
        if export_to.is_empty() {
            if let Some(t) = exact(namespace) {
                return Some(t);
            }
        } else {
            for e in export_to {
                let scope = if e == "." { namespace } else { e.as_str() };
                if let Some(t) = exact(scope) {
                    return Some(t);
                }
            }
        }
        self.wildcards
            .iter()
            .filter(|(scope, _, _)| scope == "*" || scope == namespace)
            .find(|(_, pattern, _)| wildcard_covers(pattern, host))
            .map(|(_, _, t)| t)
    }
}

/// The `metadata.name` → Namespace resource index.
pub fn namespaces<'a>(cx: &'a Context<'_>) -> HashMap<&'a str, &'a Resource> {
    cx.of("", "Namespace")
        .map(|n| (n.meta.name.as_str(), n))
        .collect()
}

/// True when the pod runs an Istio sidecar: an `istio-proxy` container with an image,
/// or sidecar injection turned on by the pod's label or annotation, or else by its
/// namespace's `istio-injection=enabled` label.
pub fn pod_in_mesh(pod: &Resource, namespaces: &HashMap<&str, &Resource>) -> bool {
    let spec = &pod.raw["spec"];
    let has_proxy = ["containers", "initContainers"].iter().any(|list| {
        spec[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "istio-proxy")
            .is_some_and(|c| !str_of(&c["image"]).is_empty())
    });
    if has_proxy {
        return true;
    }
    const INJECT: &str = "sidecar.istio.io/inject";
    if let Some(v) = pod.meta.labels.get(INJECT) {
        return v == "true";
    }
    if let Some(v) = pod.meta.annotations.get(INJECT) {
        return v == "true";
    }
    namespaces.get(ns_of(pod)).is_some_and(|n| {
        n.meta
            .labels
            .get("istio-injection")
            .is_some_and(|v| v == "enabled")
    })
}

/// True when the pod's traffic is redirected to ztunnel (ambient mode).
pub fn pod_in_ambient(pod: &Resource) -> bool {
    pod.meta
        .annotations
        .get("ambient.istio.io/redirection")
        .is_some_and(|v| v == "enabled")
}

/// True when the namespace is labelled for ambient mode and not also for sidecar
/// injection (an injection or revision label wins).
pub fn namespace_in_ambient(ns: &Resource) -> bool {
    let labels = &ns.meta.labels;
    if labels
        .get("istio-injection")
        .is_some_and(|v| v == "enabled")
    {
        return false;
    }
    if labels.get("istio.io/rev").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    labels
        .get("istio.io/dataplane-mode")
        .is_some_and(|v| v == "ambient")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn short_hosts_become_fqdns_in_the_namespace() {
        assert_eq!(to_fqdn("ns", "reviews"), "reviews.ns.svc.cluster.local");
        assert_eq!(to_fqdn("ns", "reviews.other"), "reviews.other");
        assert_eq!(to_fqdn("ns", "*"), "*");
    }

    #[test]
    fn wildcards_cover_their_suffix() {
        assert!(wildcard_covers("*.example.com", "a.example.com"));
        assert!(wildcard_covers("*.example.com", "*.b.example.com"));
        assert!(wildcard_covers("*", "anything.at.all"));
        assert!(!wildcard_covers("*.example.com", "example.org"));
        assert!(wildcard_covers("a.com", "a.com"));
    }

    #[test]
    fn selectors_need_every_label_with_its_value() {
        let labels = map(&[("app", "web"), ("version", "v1")]);
        assert!(selector_matches(&map(&[("app", "web")]), &labels));
        assert!(!selector_matches(&map(&[("app", "db")]), &labels));
        assert!(!selector_matches(&map(&[("tier", "")]), &labels));
        assert!(selector_matches(&BTreeMap::new(), &labels));
        assert_eq!(
            selector_text(&map(&[("version", "v1"), ("app", "web")])),
            "app=web,version=v1"
        );
    }

    #[test]
    fn hosts_resolve_through_export_scopes_and_wildcards() {
        let text = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: a}
spec:
  hosts: ['*.example.com']
  exportTo: ['.']
  workloadSelector: {labels: {app: ext}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: b}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: b
  annotations: {networking.istio.io/exportTo: '.'}
spec: {ports: [{port: 80}]}
";
        let resources = trellis_api::load_str("t.yaml", text).resources;
        let options = crate::Options::default();
        let cx = Context::new(&resources, &options);
        let hosts = ServiceHosts::new(&cx);
        let found = |ns: &str, host: &str| {
            hosts
                .lookup(ns, &[], host)
                .map(|t| t.resource.meta.name.clone())
        };
        assert_eq!(found("b", "web").as_deref(), Some("web"));
        assert_eq!(
            found("c", "web.b.svc.cluster.local").as_deref(),
            Some("web")
        );
        assert_eq!(
            found("c", "web"),
            None,
            "a short name resolves in the asking namespace"
        );
        assert_eq!(found("b", "private").as_deref(), Some("private"));
        assert_eq!(found("c", "private.b.svc.cluster.local"), None);
        assert_eq!(found("a", "api.example.com").as_deref(), Some("ext"));
        assert_eq!(
            found("b", "api.example.com"),
            None,
            "exported to its own namespace only"
        );
        let ext = hosts
            .lookup("a", &[], "api.example.com")
            .map(|t| t.workload_labels.clone());
        assert_eq!(ext, Some(map(&[("app", "ext")])));
    }

    #[test]
    fn export_scopes_default_to_everyone() {
        assert_eq!(export_scopes(&[], "a"), BTreeSet::from(["*".to_string()]));
        assert_eq!(
            export_scopes(&[".".into(), "b".into()], "a"),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            export_scopes(&[".".into(), "*".into()], "a"),
            BTreeSet::from(["*".to_string()])
        );
    }
}
