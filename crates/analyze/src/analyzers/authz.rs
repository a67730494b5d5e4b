//! Authorization analyzers.

use std::collections::HashMap;

use trellis_api::Resource;

use super::json::{string_map, texts};
use super::names::ns_of;
use super::selectors::{Labels, selector_matches, selector_text};
use super::workloads::{INJECTION_LABEL, namespaces, pod_in_ambient, pods, workload_in_mesh};
use crate::messages::{
    NO_MATCHING_WORKLOADS_FOUND, REFERENCED_RESOURCE_NOT_FOUND, UNSUPPORTED_BY_TRELLIS,
};
use crate::{Analyzer, Context, Reporter};

/// AuthorizationPolicies that apply to no workload, or name namespaces that do not exist.
pub struct AuthorizationPoliciesAnalyzer;

/// True when the namespace name `ns` matches `pattern`: `*`, `*suffix`, `prefix*`, or
/// an exact name (case-insensitive), as AuthorizationPolicy sources match them.
fn namespace_matches(ns: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return ns.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return ns.starts_with(prefix);
    }
    ns.eq_ignore_ascii_case(pattern)
}

impl AuthorizationPoliciesAnalyzer {
    fn check_workloads(
        &self,
        ap: &Resource,
        root: &str,
        workloads: &HashMap<&str, Vec<&Labels>>,
        out: &mut Reporter,
    ) {
        let spec = &ap.raw["spec"];
        let ns = ns_of(ap);
        let selector =
            (!spec["selector"].is_null()).then(|| string_map(&spec["selector"]["matchLabels"]));
        let in_ns = workloads.get(ns).map(Vec::as_slice).unwrap_or_default();
        let (found, scope) = match &selector {
            // In the root namespace a policy applies mesh-wide.
            None if ns == root => return,
            Some(sel) if ns == root => (
                workloads
                    .values()
                    .flatten()
                    .any(|l| selector_matches(sel, l)),
                "anywhere in the mesh".to_string(),
            ),
            None => (!in_ns.is_empty(), format!("in namespace {ns:?}")),
            Some(sel) => (
                in_ns.iter().any(|l| selector_matches(sel, l)),
                format!("in namespace {ns:?}"),
            ),
        };
        if found {
            return;
        }
        let (path, what) = match &selector {
            Some(sel) => ("spec.selector", format!("matches {}", selector_text(sel))),
            None => ("metadata.name", "exists".to_string()),
        };
        out.report(
            &NO_MATCHING_WORKLOADS_FOUND,
            ap,
            Some(path),
            format!(
                "no mesh workload (a pod with a sidecar or in ambient mode) {what} {scope}, \
                 so this policy applies to nothing; check the selector, the namespace, and \
                 that the pods are injected"
            ),
        );
    }

    fn check_namespaces(&self, ap: &Resource, known: &[&str], out: &mut Reporter) {
        let rules = ap.raw["spec"]["rules"].as_array().into_iter().flatten();
        for (i, rule) in rules.enumerate() {
            let froms = rule["from"].as_array().into_iter().flatten();
            for (j, from) in froms.enumerate() {
                for field in ["namespaces", "notNamespaces"] {
                    let patterns = texts(&from["source"][field]);
                    for (k, pattern) in patterns.iter().enumerate() {
                        if known.iter().any(|ns| namespace_matches(ns, pattern)) {
                            continue;
                        }
                        out.report(
                            &REFERENCED_RESOURCE_NOT_FOUND,
                            ap,
                            Some(&format!("spec.rules[{i}].from[{j}].source.{field}[{k}]")),
                            format!(
                                "source {field} entry {pattern:?} matches no namespace; check \
                                 the spelling or create the namespace"
                            ),
                        );
                    }
                }
            }
        }
    }
}

impl Analyzer for AuthorizationPoliciesAnalyzer {
    fn name(&self) -> &'static str {
        "auth.AuthorizationPoliciesAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Checks that AuthorizationPolicies select workloads and name existing namespaces"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        let namespaces = namespaces(cx);
        let mut known: Vec<&str> = namespaces.keys().copied().collect();
        known.sort_unstable();
        // namespace -> labels of its pods that Istio enforces policy for
        let mut workloads: HashMap<&str, Vec<&Labels>> = HashMap::new();
        for pod in pods(cx) {
            let list = workloads.entry(ns_of(pod)).or_default();
            // Unlike deployment.MultiServiceAnalyzer, only `istio-injection=enabled`
            // enrols a namespace here; a revision label does not.
            let namespace_injects = || {
                namespaces.get(ns_of(pod)).is_some_and(|n| {
                    n.meta
                        .labels
                        .get(INJECTION_LABEL)
                        .is_some_and(|v| v == "enabled")
                })
            };
            let in_mesh =
                workload_in_mesh(&pod.raw["metadata"], &pod.raw["spec"], namespace_injects);
            if in_mesh || pod_in_ambient(pod) {
                list.push(&pod.meta.labels);
            }
        }
        let root = cx.options().istio_namespace.as_str();
        for ap in cx.of("security.istio.io", "AuthorizationPolicy") {
            self.check_workloads(ap, root, &workloads, out);
            self.check_namespaces(ap, &known, out);
        }
    }
}

/// CUSTOM AuthorizationPolicies: Trellis has no extension provider to ask, so each
/// denies what it matches (fails closed). Trellis's own check, not Istio's.
pub struct CustomActionAnalyzer;

impl Analyzer for CustomActionAnalyzer {
    fn name(&self) -> &'static str {
        "auth.CustomActionAnalyzer"
    }

    fn description(&self) -> &'static str {
        "Says that CUSTOM AuthorizationPolicies deny what they match, as Trellis supports no extension provider yet"
    }

    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
        for ap in cx.of("security.istio.io", "AuthorizationPolicy") {
            if ap.raw["spec"]["action"].as_str() == Some("CUSTOM") {
                out.report(
                    &UNSUPPORTED_BY_TRELLIS,
                    ap,
                    Some("spec.action"),
                    trellis_api::security::CUSTOM_NOT_SUPPORTED,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_matches;

    #[test]
    fn custom_policies_are_said_to_deny() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ext\n  namespace: shop\nspec:\n  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - {}\n";
        let loaded = trellis_api::resource::load_str("ext.yaml", yaml);
        let options = crate::Options {
            only: vec!["auth.CustomActionAnalyzer".into()],
            ..Default::default()
        };
        let messages = crate::analyze(&loaded.resources, &options).expect("analyze");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0].code, "TRL0001");
        assert_eq!(
            messages[0].message,
            trellis_api::security::CUSTOM_NOT_SUPPORTED
        );
    }

    #[test]
    fn namespace_patterns() {
        assert!(namespace_matches("prod-httpbin", "prod-*"));
        assert!(namespace_matches("httpbin-test", "*-test"));
        assert!(namespace_matches("anything", "*"));
        assert!(namespace_matches("HttpBin", "httpbin"));
        assert!(!namespace_matches("httpbin", "bogus-*"));
        assert!(!namespace_matches("httpbin", "*-bogus"));
    }
}
