//! Where a finding lands: [`Message`] (code, resource, file and line, text) and the
//! [`Reporter`] an analyzer reports through. The one idea: a message names a resource
//! the user wrote, so a finding about a pod made from a Deployment's template is moved
//! to the Deployment, at the same field inside its template.

use std::collections::HashSet;
use std::sync::Arc;

use trellis_api::Resource;

use crate::{Context, Level, MessageType};

/// One finding of one analyzer, about one resource.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    /// Istio's code, such as `IST0101` (or Trellis's own `TRL0001`, where Trellis differs).
    pub code: &'static str,
    /// Istio's message name, such as `ReferencedResourceNotFound`.
    #[serde(rename = "type")]
    pub message_name: &'static str,
    pub level: Level,
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The human text.
    pub message: String,
    /// Which analyzer said it (`virtualservice.GatewayAnalyzer`).
    pub analyzer: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Message {
    /// `Kind namespace/name` as istioctl prints it.
    pub fn resource(&self) -> String {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{} {}/{}", self.kind, ns, self.name),
            _ => format!("{} {}", self.kind, self.name),
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] ({}", self.level, self.code, self.resource())?;
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, " {file}:{line}")?;
        }
        write!(f, ") {}", self.message)
    }
}

/// Collects messages for one analyzer run. A message about a pod made from a workload's
/// template is given to that workload (at the same field inside its template), since
/// only the workload is among the inputs; where the analyzer also reports the workload
/// itself with the same code and text, the message appears once.
pub struct Reporter<'c> {
    analyzer: &'static str,
    cx: &'c Context<'c>,
    messages: Vec<Message>,
    /// Messages about made pods, given to their workloads.
    from_templates: Vec<Message>,
}

impl<'c> Reporter<'c> {
    pub(crate) fn new(analyzer: &'static str, cx: &'c Context<'c>) -> Self {
        Reporter {
            analyzer,
            cx,
            messages: Vec::new(),
            from_templates: Vec::new(),
        }
    }

    /// Reports `ty` about `resource`, at an optional field path (for the line).
    pub fn report(
        &mut self,
        ty: &MessageType,
        resource: &Resource,
        path: Option<&str>,
        text: impl Into<String>,
    ) {
        match self.cx.origin(resource) {
            Some(origin) => {
                let path = origin.path(path);
                let m = self.message(ty, origin.owner, Some(&path), text.into());
                self.from_templates.push(m);
            }
            None => {
                let m = self.message(ty, resource, path, text.into());
                self.messages.push(m);
            }
        }
    }

    fn message(
        &self,
        ty: &MessageType,
        resource: &Resource,
        path: Option<&str>,
        text: String,
    ) -> Message {
        let line = match path {
            Some(p) => resource.line_of(p),
            None => resource.source.line,
        };
        // Made by the analysis (no file) or read from an API server (no line): the
        // message names the resource alone, as istioctl does for a cluster's.
        let synthetic = !resource.source.in_file();
        Message {
            code: ty.code,
            message_name: ty.name,
            level: ty.level,
            kind: resource.kind.clone(),
            api_version: resource.api_version.clone(),
            namespace: resource.meta.namespace.clone(),
            name: resource.meta.name.clone(),
            message: text,
            analyzer: self.analyzer,
            file: (!synthetic).then(|| resource.source.file.clone()),
            line: (!synthetic).then_some(line),
        }
    }

    /// What was reported: a workload's message from its template only when the workload
    /// was not reported with the same code and text already.
    pub(crate) fn finish(self) -> Vec<Message> {
        let mut messages = self.messages;
        let mut seen: HashSet<(&'static str, String, String, String)> =
            messages.iter().map(finding).collect();
        for m in self.from_templates {
            if seen.insert(finding(&m)) {
                messages.push(m);
            }
        }
        messages
    }
}

/// What makes two messages the same finding, wherever in the resource they point.
fn finding(m: &Message) -> (&'static str, String, String, String) {
    (
        m.code,
        format!("{} {}", m.api_version, m.kind),
        m.resource(),
        m.message.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::INVALID_APPLICATION_UID;
    use crate::{Analyzer, Options};

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web
";

    /// Reports every Pod, and (with `deployment_text`) every Deployment at its template's
    /// first container, as an analyzer that checks both kinds does.
    struct EveryPod {
        deployment_text: Option<&'static str>,
    }

    impl Analyzer for EveryPod {
        fn name(&self) -> &'static str {
            "test.EveryPod"
        }
        fn description(&self) -> &'static str {
            "reports every pod"
        }
        fn analyze(&self, cx: &Context<'_>, out: &mut Reporter) {
            for pod in cx.of("", "Pod") {
                let ty = &INVALID_APPLICATION_UID;
                out.report(ty, pod, Some("spec.containers[0]"), "the first container");
            }
            for d in cx.of("apps", "Deployment") {
                if let Some(text) = self.deployment_text {
                    let path = Some("spec.template.spec.containers[0]");
                    out.report(&INVALID_APPLICATION_UID, d, path, text);
                }
            }
        }
    }

    fn run(analyzer: &dyn Analyzer, yaml: &str, options: &Options) -> Vec<Message> {
        let resources = trellis_api::load_str("app.yaml", yaml).resources;
        let cx = Context::new(&resources, options);
        let mut out = Reporter::new(analyzer.name(), &cx);
        analyzer.analyze(&cx, &mut out);
        out.finish()
    }

    /// The CLI's options, without the ingress gateway's stand-in pod.
    fn options() -> Options {
        Options {
            add_ingress_gateway: false,
            ..Options::default()
        }
    }

    fn where_(m: &Message) -> String {
        format!("{} line {}", m.resource(), m.line.unwrap_or(0))
    }

    #[test]
    fn a_template_pods_message_goes_to_its_deployment_at_the_template_line() {
        let analyzer = EveryPod {
            deployment_text: None,
        };
        let messages = run(&analyzer, DEPLOYMENT, &options());
        let found: Vec<_> = messages.iter().map(where_).collect();
        // line 11: `- name: web` under spec.template.spec.containers
        assert_eq!(found, ["Deployment shop/web line 11"]);
        assert_eq!(messages[0].api_version, "apps/v1");
        assert_eq!(messages[0].file.as_deref(), Some("app.yaml"));
    }

    #[test]
    fn a_deployment_reported_with_the_same_finding_is_reported_once() {
        let same = EveryPod {
            deployment_text: Some("the first container"),
        };
        let messages = run(&same, DEPLOYMENT, &options());
        assert_eq!(messages.len(), 1, "{messages:?}");
        let other = EveryPod {
            deployment_text: Some("something else"),
        };
        let messages = run(&other, DEPLOYMENT, &options());
        let texts: Vec<_> = messages.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(texts, ["something else", "the first container"]);
        assert!(messages.iter().all(|m| m.kind == "Deployment"));
    }

    #[test]
    fn pods_of_the_inputs_are_reported_as_themselves() {
        let pod = "apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop}
spec:
  containers:
  - name: web
";
        let analyzer = EveryPod {
            deployment_text: None,
        };
        let messages = run(&analyzer, &format!("{DEPLOYMENT}---\n{pod}"), &options());
        let found: Vec<_> = messages.iter().map(where_).collect();
        // The input's pod first (direct reports), then the Deployment's from its template.
        assert_eq!(
            found,
            ["Pod shop/web-1 line 19", "Deployment shop/web line 11"]
        );
        let without_templates = Options {
            pods_from_deployments: crate::TemplatePods::Never,
            ..options()
        };
        let messages = run(
            &analyzer,
            &format!("{DEPLOYMENT}---\n{pod}"),
            &without_templates,
        );
        let found: Vec<_> = messages.iter().map(where_).collect();
        assert_eq!(found, ["Pod shop/web-1 line 19"]);
    }
}
