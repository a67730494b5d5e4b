//! How analyzers name resources in messages (`namespace/name`) and resolve the
//! references users write (`name`, or `namespace/name`). A resource without a
//! namespace (the harness keeps none) has the namespace `""`.

use trellis_api::Resource;

/// The API group of Istio's networking kinds.
pub const NETWORKING: &str = "networking.istio.io";
/// The API group of the Kubernetes Gateway API.
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";

/// The namespace of `r`, or `""` when none is written.
pub fn ns_of(r: &Resource) -> &str {
    r.meta.namespace.as_deref().unwrap_or("")
}

/// `namespace/name`, or just `name` for a resource without a namespace.
pub fn full_name(r: &Resource) -> String {
    join_name(ns_of(r), &r.meta.name)
}

/// `namespace/name`, or just `name` when the namespace is empty.
pub fn join_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The names of `list`, without namespaces, joined with `, `.
pub fn name_list(list: &[&Resource]) -> String {
    list.iter()
        .map(|r| r.meta.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a reference written as `name` (in `default_ns`) or `namespace/name`.
pub fn short_or_full(default_ns: &str, reference: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((n, name)) => (n.to_string(), name.to_string()),
        None => (default_ns.to_string(), reference.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_and_without_namespace() {
        let loaded = trellis_api::load_str(
            "t.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n",
        );
        let [namespace, service] = &loaded.resources[..] else {
            panic!("{:?}", loaded.diagnostics)
        };
        assert_eq!(
            (ns_of(namespace), full_name(namespace)),
            ("", "shop".into())
        );
        assert_eq!(full_name(service), "shop/web");
        assert_eq!(name_list(&[namespace, service]), "shop, web");
        assert_eq!(
            short_or_full("a", "b/c"),
            ("b".to_string(), "c".to_string())
        );
        assert_eq!(short_or_full("a", "c"), ("a".to_string(), "c".to_string()));
    }
}
