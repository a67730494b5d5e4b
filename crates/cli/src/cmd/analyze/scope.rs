//! Which messages are shown, as `istioctl analyze` scopes a cluster: everything is
//! analyzed (a VirtualService in one namespace needs the DestinationRule in another),
//! and only messages about resources in the selected namespaces are printed. A
//! Namespace belongs to itself; other resources outside namespaces (webhooks, CRDs)
//! are always shown.

use std::collections::BTreeSet;

use trellis_analyze::Message;

/// The namespaces whose messages are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (files alone, or `-A`).
    All,
    /// These namespaces only.
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// One namespace.
    pub fn namespace(name: &str) -> Scope {
        Scope::Namespaces(BTreeSet::from([name.to_string()]))
    }

    /// This scope and the namespaces in `more`.
    pub fn with(self, more: impl IntoIterator<Item = String>) -> Scope {
        match self {
            Scope::All => Scope::All,
            Scope::Namespaces(mut names) => {
                names.extend(more);
                Scope::Namespaces(names)
            }
        }
    }

    /// Whether a message about a resource in `namespace` (`None` for one outside
    /// namespaces) is shown.
    pub fn contains(&self, namespace: Option<&str>) -> bool {
        match (self, namespace) {
            (Scope::All, _) | (_, None) => true,
            (Scope::Namespaces(names), Some(ns)) => names.contains(ns),
        }
    }

    /// Whether `message` is shown.
    pub fn shows(&self, message: &Message) -> bool {
        self.contains(namespace_of(message))
    }

    /// How the "no issues" line names what was analyzed.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all namespaces".into(),
            Scope::Namespaces(names) => {
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                match list.as_slice() {
                    [one] => format!("namespace {one}"),
                    _ => format!("namespaces {}", list.join(", ")),
                }
            }
        }
    }
}

/// The namespace a message is about: a Namespace's own name, else the resource's
/// namespace, `None` for resources outside namespaces.
fn namespace_of(m: &Message) -> Option<&str> {
    if m.kind == "Namespace" && m.api_version == "v1" {
        return Some(&m.name);
    }
    m.namespace.as_deref().filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, namespace: Option<&str>, name: &str) -> Message {
        Message {
            code: "IST0101",
            message_name: "ReferencedResourceNotFound",
            level: trellis_analyze::Level::Error,
            kind: kind.into(),
            api_version: "v1".into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
            message: String::new(),
            analyzer: "test",
            file: None,
            line: None,
        }
    }

    #[test]
    fn a_namespace_scope_shows_its_resources_the_namespace_itself_and_cluster_resources() {
        let scope = Scope::namespace("production");
        assert!(scope.shows(&message("Service", Some("production"), "reviews")));
        assert!(!scope.shows(&message("Service", Some("staging"), "reviews")));
        assert!(scope.shows(&message("Namespace", None, "production")));
        assert!(!scope.shows(&message("Namespace", None, "default")));
        assert!(scope.shows(&message("MutatingWebhookConfiguration", None, "istio")));
        assert!(Scope::All.shows(&message("Service", Some("staging"), "reviews")));
    }

    #[test]
    fn files_widen_a_scope_but_not_all() {
        let wider = Scope::namespace("production").with(["staging".to_string()]);
        assert_eq!(wider.describe(), "namespaces production, staging");
        assert_eq!(Scope::All.with(["staging".to_string()]), Scope::All);
    }
}
