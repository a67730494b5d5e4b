//! What each Istio resource's status should say: the analyzers run over a snapshot,
//! their messages grouped by resource, each in Istio's `AnalysisMessageBase` shape
//! (`{documentationUrl, level: ERROR, type: {code: IST0101, name: ...}}`). Pure:
//! the writer compares this with what it knows the cluster holds.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use trellis_analyze::{Level, Message};
use trellis_api::Resource;

/// Where Istio documents each of its codes.
const DOCUMENTATION: &str = "https://istio.io/latest/docs/reference/config/analysis";

/// One Istio resource, as the status writer addresses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One entry of `status.validationMessages`, Istio's `AnalysisMessageBase`. istiod
/// writes the code alone in `type`; the name is Istio's own field too, filled here
/// so the status reads without a lookup. (Istio's shape has no text: the message
/// itself is `trellis analyze`'s.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    /// Istio's page for an `IST` code; none for Trellis's own `TRL` codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// `ERROR`, `WARNING` or `INFO`.
    pub level: String,
    #[serde(rename = "type")]
    pub message_type: MessageTypeRef,
}

/// `type:` of a [`ValidationMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageTypeRef {
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl ValidationMessage {
    pub fn from_message(m: &Message) -> ValidationMessage {
        let documentation_url = m
            .code
            .starts_with("IST")
            .then(|| format!("{DOCUMENTATION}/{}/", m.code.to_ascii_lowercase()));
        ValidationMessage {
            documentation_url,
            level: match m.level {
                Level::Error => "ERROR",
                Level::Warning => "WARNING",
                Level::Info => "INFO",
            }
            .into(),
            message_type: MessageTypeRef {
                code: m.code.into(),
                name: m.message_name.into(),
            },
        }
    }
}

/// What one resource's status should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// In the analyzers' order (most severe first); empty clears the status.
    pub messages: Vec<ValidationMessage>,
    /// A hash of the spec analysed: when it changes, so does `metadata.generation`,
    /// and `observedGeneration` must follow even if the messages stay.
    pub spec_hash: u64,
}

/// Every Istio resource of `resources` whose kind is in `kinds` (`(group, kind)`),
/// with the messages `messages` report about it (none for most).
pub fn wanted(
    resources: &[Resource],
    messages: &[Message],
    is_istio_kind: impl Fn(&str, &str) -> bool,
) -> BTreeMap<ObjectRef, Wanted> {
    let mut out: BTreeMap<ObjectRef, Wanted> = BTreeMap::new();
    for r in resources {
        if !is_istio_kind(r.group(), &r.kind) {
            continue;
        }
        let object = ObjectRef {
            group: r.group().into(),
            kind: r.kind.clone(),
            namespace: r.meta.namespace_or_default().into(),
            name: r.meta.name.clone(),
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        r.raw.get("spec").map(ToString::to_string).hash(&mut hasher);
        out.insert(
            object,
            Wanted {
                messages: Vec::new(),
                spec_hash: hasher.finish(),
            },
        );
    }
    for m in messages {
        let group = m.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let object = ObjectRef {
            group: group.into(),
            kind: m.kind.clone(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone(),
        };
        if let Some(w) = out.get_mut(&object) {
            w.messages.push(ValidationMessage::from_message(m));
        }
    }
    out
}

/// Reads `status.validationMessages` as written (missing or unreadable: none).
pub fn written(status: Option<&serde_json::Value>) -> Vec<ValidationMessage> {
    status
        .and_then(|s| s.get("validationMessages"))
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default()
}

/// Reads `status.observedGeneration` (an integer, or Istio's string form).
pub fn observed_generation(status: Option<&serde_json::Value>) -> Option<i64> {
    match status?.get("observedGeneration")? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Vec<Resource> {
        let loaded = trellis_api::load_str("t.yaml", text);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        loaded.resources
    }

    const MISSING_SUBSET: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
";

    fn analyze(resources: &[Resource]) -> Vec<Message> {
        let options = trellis_analyze::Options {
            add_ingress_gateway: false,
            pods_from_deployments: trellis_analyze::TemplatePods::Never,
            ..trellis_analyze::Options::default()
        };
        trellis_analyze::analyze(resources, &options).expect("the default analyzers")
    }

    #[test]
    fn a_missing_subset_is_ist0101_on_the_virtual_service_only() {
        let resources = load(MISSING_SUBSET);
        let wanted = wanted(&resources, &analyze(&resources), |g, _| {
            g.ends_with("istio.io")
        });
        assert_eq!(wanted.len(), 1, "only Istio kinds: {wanted:?}");
        let (object, w) = wanted.iter().next().expect("one");
        assert_eq!(object.to_string(), "VirtualService default/reviews");
        let json = serde_json::to_value(&w.messages).expect("JSON");
        assert!(
            json.as_array().expect("a list").contains(&serde_json::json!({
                "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
                "level": "ERROR",
                "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"},
            })),
            "{json}"
        );
    }

    #[test]
    fn a_clean_resource_wants_no_messages() {
        let resources = load(&MISSING_SUBSET.replace(", subset: v3", ""));
        let wanted = wanted(&resources, &analyze(&resources), |g, _| {
            g.ends_with("istio.io")
        });
        assert!(wanted.values().all(|w| w.messages.is_empty()), "{wanted:?}");
    }

    #[test]
    fn trellis_codes_have_no_istio_page() {
        let m = Message {
            code: "TRL0001",
            message_name: "UnsupportedByTrellis",
            level: Level::Warning,
            kind: "EnvoyFilter".into(),
            api_version: "networking.istio.io/v1alpha3".into(),
            namespace: Some("default".into()),
            name: "f".into(),
            message: String::new(),
            analyzer: "x",
            file: None,
            line: None,
        };
        let v = ValidationMessage::from_message(&m);
        assert_eq!(v.documentation_url, None);
        assert_eq!(v.level, "WARNING");
    }

    #[test]
    fn written_status_reads_back_and_generation_takes_either_form() {
        let status = serde_json::json!({
            "observedGeneration": "3",
            "validationMessages": [{"level": "ERROR", "type": {"code": "IST0101"}}],
        });
        assert_eq!(observed_generation(Some(&status)), Some(3));
        let read = written(Some(&status));
        assert_eq!(read[0].message_type.code, "IST0101");
        assert_eq!(read[0].message_type.name, "");
        assert!(written(None).is_empty());
    }
}
