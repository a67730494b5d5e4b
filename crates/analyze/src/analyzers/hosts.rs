//! Istio host names as analyzers compare them: short names and FQDNs, wildcards (the
//! matching rules are [`trellis_api::networking::host`]'s), `exportTo` scopes, and
//! [`ServiceHosts`], the index of every host a Service or ServiceEntry serves.

use std::collections::{BTreeSet, HashMap};

use trellis_api::Resource;
pub use trellis_api::networking::host::{host_matches, host_subset_of, is_wildcard};

use super::json::texts;
use super::names::{NETWORKING, ns_of};
use super::workloads::services;
use crate::Context;

/// The cluster's DNS suffix for Services.
pub const KUBE_DOMAIN: &str = "svc.cluster.local";
/// `exportTo` value for every namespace.
pub const EXPORT_ALL: &str = "*";
/// `exportTo` value for the resource's own namespace.
pub const EXPORT_LOCAL: &str = ".";
/// The annotation that gives a Kubernetes Service an `exportTo` list (comma-separated).
const SERVICE_EXPORT_TO: &str = "networking.istio.io/exportTo";

/// A short name (`reviews`) as the FQDN it stands for in `namespace`
/// (`reviews.<namespace>.svc.cluster.local`); wildcards and dotted names are kept.
pub fn to_fqdn(namespace: &str, host: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{KUBE_DOMAIN}")
    }
}

/// `scope/fqdn`: a host as seen from a namespace scope (`*` for every namespace).
pub fn scoped_fqdn(scope: &str, namespace: &str, host: &str) -> String {
    format!("{scope}/{}", to_fqdn(namespace, host))
}

/// Splits `scope/fqdn`.
pub fn split_scoped(scoped: &str) -> (&str, &str) {
    scoped.split_once('/').unwrap_or(("", scoped))
}

/// `(namespace, name)` of a Service FQDN `name.namespace.svc.cluster.local`.
pub fn name_from_fqdn(fqdn: &str) -> Option<(String, String)> {
    let rest = fqdn.strip_suffix(KUBE_DOMAIN)?.strip_suffix('.')?;
    let (name, namespace) = rest.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then(|| (namespace.to_string(), name.to_string()))
}

/// `(namespace, name)` a destination host refers to: a Service FQDN names its own
/// namespace; any other host is taken as a name in `default_ns`.
pub fn resource_name_from_host(default_ns: &str, host: &str) -> (String, String) {
    name_from_fqdn(host).unwrap_or_else(|| (default_ns.to_string(), host.to_string()))
}

/// Gateway-style hosts (`ns/host`) visible from `namespace`, with the namespace part
/// removed: `ns/host` is kept when `ns` is `*` or `namespace`, plain hosts always.
pub fn names_for_namespace(hosts: &[String], namespace: &str) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            Some((n, rest)) => {
                let rest = rest.split('/').next().unwrap_or(rest);
                (n == namespace || n == "*").then(|| rest.to_string())
            }
            None => Some(h.clone()),
        })
        .collect()
}

/// The namespaces an `exportTo` list makes a resource of `namespace` visible in:
/// `*` for all (also when the list is empty), `.` for its own namespace.
pub fn export_scopes(export_to: &[String], namespace: &str) -> BTreeSet<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == EXPORT_ALL) {
        return BTreeSet::from([EXPORT_ALL.to_string()]);
    }
    export_to
        .iter()
        .map(|e| local_scope(e, namespace).to_string())
        .collect()
}

/// `.` (the resource's own namespace) as `namespace`; any other scope as written.
fn local_scope<'s>(scope: &'s str, namespace: &'s str) -> &'s str {
    if scope == EXPORT_LOCAL {
        namespace
    } else {
        scope
    }
}

/// The scopes of a Kubernetes Service, from its `networking.istio.io/exportTo`
/// annotation: every namespace when it is absent or empty.
fn service_export_scopes(svc: &Resource) -> Vec<String> {
    match svc.meta.annotations.get(SERVICE_EXPORT_TO) {
        None => vec![EXPORT_ALL.to_string()],
        Some(list) if list.is_empty() => vec![EXPORT_ALL.to_string()],
        Some(list) => list
            .split(',')
            .map(|e| local_scope(e, ns_of(svc)).to_string())
            .collect(),
    }
}

/// Every host served in the mesh, keyed by the namespace scope it is visible in (`*`
/// for all) and its FQDN, built from ServiceEntries and Kubernetes Services; each
/// host leads to the Service or ServiceEntry serving it (the last one written wins).
pub struct ServiceHosts<'a> {
    by_scope: HashMap<(String, String), &'a Resource>,
    /// Wildcard hosts, in input order, for the slower suffix match.
    wildcards: Vec<(String, String, &'a Resource)>,
}

impl<'a> ServiceHosts<'a> {
    /// Indexes every ServiceEntry and Service of `cx`.
    pub fn new(cx: &'a Context<'_>) -> Self {
        let mut hosts = ServiceHosts {
            by_scope: HashMap::new(),
            wildcards: Vec::new(),
        };
        for se in cx.of(NETWORKING, "ServiceEntry") {
            let ns = ns_of(se);
            let spec = &se.raw["spec"];
            let scopes = export_scopes(&texts(&spec["exportTo"]), ns);
            for host in texts(&spec["hosts"]) {
                for scope in &scopes {
                    hosts.insert(scope.clone(), to_fqdn(ns, &host), se);
                }
            }
        }
        for svc in services(cx) {
            for scope in service_export_scopes(svc) {
                hosts.insert(scope, to_fqdn(ns_of(svc), &svc.meta.name), svc);
            }
        }
        hosts
    }

    fn insert(&mut self, scope: String, fqdn: String, target: &'a Resource) {
        if is_wildcard(&fqdn) {
            self.wildcards
                .retain(|(s, h, _)| !(s == &scope && h == &fqdn));
            self.wildcards.push((scope.clone(), fqdn.clone(), target));
        }
        self.by_scope.insert((scope, fqdn), target);
    }

    /// The Service or ServiceEntry that `host`, written in a resource of `namespace`
    /// exported to `export_to`, refers to: an exact match visible to everyone, then one
    /// visible in the export scopes (the own namespace when there are none), then a
    /// wildcard host visible in `namespace`.
    pub fn lookup(
        &self,
        namespace: &str,
        export_to: &[String],
        host: &str,
    ) -> Option<&'a Resource> {
        let fqdn = to_fqdn(namespace, host);
        let exact = |scope: &str| {
            self.by_scope
                .get(&(scope.to_string(), fqdn.clone()))
                .copied()
        };
        if let Some(t) = exact(EXPORT_ALL) {
            return Some(t);
        }
        if export_to.is_empty() {
            if let Some(t) = exact(namespace) {
                return Some(t);
            }
        } else {
            for e in export_to {
                if let Some(t) = exact(local_scope(e, namespace)) {
                    return Some(t);
                }
            }
        }
        self.wildcards
            .iter()
            .filter(|(scope, _, _)| scope == EXPORT_ALL || scope == namespace)
            .find(|(_, pattern, _)| host_subset_of(host, pattern))
            .map(|(_, _, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_become_fqdns() {
        assert_eq!(
            to_fqdn("default", "reviews"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(to_fqdn("default", "a.b"), "a.b");
        assert_eq!(to_fqdn("default", "*"), "*");
        assert_eq!(
            resource_name_from_host("x", "reviews.default.svc.cluster.local"),
            ("default".to_string(), "reviews".to_string())
        );
        assert_eq!(
            resource_name_from_host("x", "reviews"),
            ("x".to_string(), "reviews".to_string())
        );
        assert_eq!(name_from_fqdn(".svc.cluster.local"), None);
        assert_eq!(
            split_scoped(&scoped_fqdn("*", "ns", "reviews")),
            ("*", "reviews.ns.svc.cluster.local")
        );
    }

    #[test]
    fn gateway_hosts_are_filtered_by_namespace() {
        let hosts = vec![
            "istio-system/a.com".to_string(),
            "*/b.com".to_string(),
            "c.com".to_string(),
        ];
        assert_eq!(
            names_for_namespace(&hosts, "default"),
            vec!["b.com", "c.com"]
        );
        assert_eq!(
            names_for_namespace(&hosts, "istio-system"),
            vec!["a.com", "b.com", "c.com"]
        );
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

    /// `lookup(namespace, exportTo, host)` over `text`, as the name of what it finds.
    fn resolver(text: &str) -> impl Fn(&str, &[&str], &str) -> Option<String> + use<> {
        let resources = trellis_api::load_str("t.yaml", text).resources;
        move |ns, export_to, host| {
            let options = crate::Options::default();
            let cx = Context::new(&resources, &options);
            let export_to: Vec<String> = export_to.iter().map(|e| e.to_string()).collect();
            ServiceHosts::new(&cx)
                .lookup(ns, &export_to, host)
                .map(|t| t.meta.name.clone())
        }
    }

    #[test]
    fn hosts_resolve_through_export_scopes_and_wildcards() {
        let found = resolver(
            "apiVersion: networking.istio.io/v1
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
",
        );
        assert_eq!(found("b", &[], "web").as_deref(), Some("web"));
        assert_eq!(
            found("c", &[], "web.b.svc.cluster.local").as_deref(),
            Some("web")
        );
        assert_eq!(
            found("c", &[], "web"),
            None,
            "a short name resolves in the asking namespace"
        );
        assert_eq!(found("b", &[], "private").as_deref(), Some("private"));
        assert_eq!(found("c", &[], "private.b.svc.cluster.local"), None);
        assert_eq!(found("a", &[], "api.example.com").as_deref(), Some("ext"));
        assert_eq!(
            found("b", &[], "api.example.com"),
            None,
            "exported to its own namespace only"
        );
    }

    #[test]
    fn wildcard_service_entries_are_found_in_scope() {
        let entry = |name: &str, ns: &str, export: &str, host: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
                 metadata: {{name: {name}, namespace: {ns}}}\n\
                 spec: {{hosts: ['{host}'], exportTo: ['{export}'], ports: [{{number: 80, name: http}}]}}\n---\n"
            )
        };
        let found = resolver(
            &[
                entry("eu", "default", "*", "*.eu.bookinfo.com"),
                entry("all", "other", ".", "*"),
                entry("abc", "other", "default", "abc.bookinfo.com"),
                "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
                    .to_string(),
            ]
            .concat(),
        );
        let is_found =
            |ns: &str, export_to: &[&str], host: &str| found(ns, export_to, host).is_some();
        assert!(is_found("default", &[], "reviews.eu.bookinfo.com"));
        assert!(is_found("default", &[], "*.eu.bookinfo.com"));
        assert!(is_found("default", &[], "reviews"));
        assert!(!is_found("x", &[], "reviews"));
        assert!(is_found("x", &[], "reviews.default.svc.cluster.local"));
        assert!(!is_found("third", &[], "bogus"));
        assert!(is_found("other", &[], "anything.com"));
        assert!(is_found("default", &[], "abc.bookinfo.com"));
        assert!(!is_found("third", &[], "abc.bookinfo.com"));
        // The asking resource's own exportTo decides where it looks.
        assert!(!is_found("default", &["bogus"], "abc.bookinfo.com"));
    }
}
