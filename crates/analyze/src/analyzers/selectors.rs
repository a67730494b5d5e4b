//! Kubernetes equality label selectors as analyzers use them: matching (the rule
//! itself is [`trellis_api::meta::selector_matches`]), printing them as `kubectl`
//! does (`app=web,version=v1`) and reading that form back.

use std::collections::BTreeMap;

use trellis_api::Resource;
pub use trellis_api::meta::selector_matches;

use super::json::string_map;

/// Labels, annotations or a `matchLabels` selector.
pub type Labels = BTreeMap<String, String>;

/// The selector as Kubernetes prints it: `k1=v1,k2=v2`, sorted by key.
pub fn selector_text(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `k1=v1,k2=v2` back into a selector (pairs without exactly one `=` are skipped).
pub fn parse_selector(text: &str) -> Labels {
    text.split(',')
        .filter_map(|pair| {
            let mut parts = pair.split('=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(v), None) => Some((k.to_string(), v.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// The `selector:` of a networking.istio.io Gateway.
pub fn gateway_selector(gw: &Resource) -> Labels {
    string_map(&gw.raw["spec"]["selector"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_need_every_label_with_its_value() {
        let pod = labels(&[("app", "web"), ("version", "v1")]);
        assert!(selector_matches(&Labels::new(), &pod));
        assert!(selector_matches(&labels(&[("app", "web")]), &pod));
        assert!(!selector_matches(&labels(&[("app", "db")]), &pod));
        assert!(!selector_matches(&labels(&[("tier", "")]), &pod));
    }

    #[test]
    fn selectors_print_and_parse_sorted() {
        let sel = labels(&[("istio", "ingressgateway"), ("app", "gw")]);
        assert_eq!(selector_text(&sel), "app=gw,istio=ingressgateway");
        assert_eq!(parse_selector(&selector_text(&sel)), sel);
        assert!(parse_selector("a=b=c,d").is_empty());
    }
}
