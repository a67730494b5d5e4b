//! telemetry.istio.io: Telemetry (served as v1alpha1 and v1, one schema).
//!
//! A Telemetry resource tunes what the proxies report: which metrics (and with
//! which tags), which traces (sampled how often, tagged how), and which access
//! logs (filtered how), each through providers declared in mesh config.

pub mod cel;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::{Checker, Validate, rules::policy};
use crate::meta::{ObjectMeta, PolicyTargetReference, WorkloadSelector};
use crate::security;
use crate::values::Duration;

/// `spec` of a Telemetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing settings; only the first entry is carried out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metrics settings, one entry per provider group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Access-log settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// A reference to an extension provider declared in mesh config (`prometheus`,
/// `stackdriver`, `envoy`, or a user-declared name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// Which side of a connection a setting applies to, relative to the workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both outbound (client) and inbound (server) traffic.
    #[default]
    ClientAndServer,
    /// Outbound traffic only.
    Client,
    /// Inbound traffic only.
    Server,
}

/// Restricts a tracing or logging entry to one traffic direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// One tracing configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<ModeSelector>,
    /// Where spans go; only one provider is supported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage (0–100) of requests sampled when no upstream decision exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// Stop reporting spans (context is still propagated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Extra tags added to every span, by tag name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Sample by the `x-request-id` header rather than at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Add Istio's own tags to spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    /// Stop forwarding trace-context headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// Where a custom span tag's value comes from; exactly one source should be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<FormatterTag>,
}

/// A fixed tag value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

/// A tag value read from the proxy's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// A tag value read from a request header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// A tag value computed with an access-log format string (`%REQ(x-id)%`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormatterTag {
    #[serde(default)]
    pub value: String,
}

/// One metrics configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Changes to the standard metrics, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// How often metrics are flushed (providers that support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// Disables metrics or changes their tags, for the metrics `match` selects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Tag changes, by tag name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override applies to: one standard metric or a custom one
/// (not both), in which direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Istio's standard metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

/// Adds, replaces or removes one metric tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: TagOperation,
    /// A CEL expression computing the tag (UPSERT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What a tag override does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Add the tag, or replace its value.
    #[default]
    Upsert,
    /// Drop the tag.
    Remove,
}

/// One access-log configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<ModeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Which requests or connections are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

/// A CEL expression selecting what is logged (`response.code >= 400`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

fn check_providers(providers: &[ProviderRef], c: &mut Checker) {
    c.each("providers", providers, |c, _, p| {
        if p.name.is_empty() {
            c.error_at("name", "providers.name may not be empty");
        }
    });
}

fn check_tracing(tracing: &[Tracing], c: &mut Checker) {
    if tracing.len() > 1 {
        c.warn_at_field(
            "tracing",
            "multiple tracing entries are not currently supported; only the first is used",
        );
    }
    c.each("tracing", tracing, |c, _, t| {
        check_providers(&t.providers, c);
        if t.providers.len() > 1 {
            c.warn_at_field(
                "providers",
                "multiple tracing providers are not currently supported; only the first is used",
            );
        }
        if let Some(p) = t.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            c.error_at(
                "randomSamplingPercentage",
                format!("randomSamplingPercentage {p} must be in range [0.0, 100.0]"),
            );
        }
        c.at("customTags", |c| {
            for (name, tag) in &t.custom_tags {
                c.at(name, |c| check_custom_tag(name, tag, c));
            }
        });
    });
}

fn check_custom_tag(name: &str, tag: &CustomTag, c: &mut Checker) {
    if name.is_empty() {
        c.error("tag name may not be empty");
    }
    let sources = usize::from(tag.literal.is_some())
        + usize::from(tag.environment.is_some())
        + usize::from(tag.header.is_some())
        + usize::from(tag.formatter.is_some());
    if sources > 1 {
        c.error(format!(
            "tag `{name}` sets {sources} value sources; set exactly one of literal, environment, header or formatter"
        ));
    } else if sources == 0 {
        c.warn(format!(
            "tag `{name}` has no value source (literal, environment, header or formatter) and is ignored"
        ));
    }
    if let Some(l) = &tag.literal
        && l.value.is_empty()
    {
        c.error_at("literal.value", "literal tag value may not be empty");
    }
    if let Some(e) = &tag.environment
        && e.name.is_empty()
    {
        c.error_at("environment.name", "environment tag name may not be empty");
    }
    if let Some(h) = &tag.header {
        if h.name.is_empty() {
            c.error_at("header.name", "header tag name may not be empty");
        } else if let Err(e) = policy::token_header_name(&h.name) {
            c.error_at("header.name", e);
        }
    }
    if let Some(f) = &tag.formatter
        && f.value.is_empty()
    {
        c.error_at("formatter.value", "formatter tag value may not be empty");
    }
}

fn check_metrics(metrics: &[Metrics], c: &mut Checker) {
    c.each("metrics", metrics, |c, _, m| {
        check_providers(&m.providers, c);
        if let Some(interval) = m.reporting_interval
            && let Err(e) = policy::duration_at_least_1ms(interval)
        {
            c.error_at("reportingInterval", e);
        }
        c.each("overrides", &m.overrides, |c, _, o| {
            if let Some(sel) = &o.r#match {
                c.at("match", |c| {
                    if sel.metric.is_some() && sel.custom_metric.is_some() {
                        c.error("only one of `metric` or `customMetric` can be set");
                    }
                    if sel.custom_metric.as_deref() == Some("") {
                        c.error_at("customMetric", "customMetric may not be empty");
                    }
                });
            }
            c.at("tagOverrides", |c| {
                for (tag, to) in &o.tag_overrides {
                    c.at(tag, |c| {
                        if tag.is_empty() {
                            c.warn("tagOverrides name may not be empty");
                        }
                        match (to.operation, to.value.as_deref()) {
                            (TagOperation::Upsert, None | Some("")) => c.error(format!(
                                "tag `{tag}`: value must be set when operation is UPSERT"
                            )),
                            (TagOperation::Upsert, Some(expr)) => {
                                if let Err(e) = cel::check_syntax(expr) {
                                    c.error_at(
                                        "value",
                                        format!(
                                            "tag `{tag}`: value must be a valid CEL expression: {e}"
                                        ),
                                    );
                                }
                            }
                            (TagOperation::Remove, Some(_)) => c.error_at(
                                "value",
                                format!(
                                    "tag `{tag}`: value must not be set when operation is REMOVE"
                                ),
                            ),
                            (TagOperation::Remove, None) => {}
                        }
                    });
                }
            });
        });
    });
}

fn check_access_logging(logging: &[AccessLogging], c: &mut Checker) {
    c.each("accessLogging", logging, |c, _, l| {
        check_providers(&l.providers, c);
        if let Some(filter) = &l.filter
            && let Err(e) = cel::check_syntax(&filter.expression)
        {
            c.error_at(
                "filter.expression",
                format!("filter must be a valid CEL expression: {e}"),
            );
        }
    });
}

/// A warning one field deeper (the checker has `error_at` but no warning twin).
trait WarnAt {
    fn warn_at_field(&mut self, field: &str, message: &str);
}

impl WarnAt for Checker {
    fn warn_at_field(&mut self, field: &str, message: &str) {
        self.at(field, |c| c.warn(message));
    }
}

impl Validate for Telemetry {
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker) {
        security::check_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            c,
        );
        security::refuse_dry_run("Telemetry", meta, c);
        check_tracing(&self.tracing, c);
        check_metrics(&self.metrics, c);
        check_access_logging(&self.access_logging, c);
    }
}

#[cfg(test)]
mod tests {
    use crate::security::test_support::{assert_clean, assert_error, warnings};

    fn tel(spec: &str) -> String {
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: istio-system\nspec:\n{spec}"
        )
    }

    #[test]
    fn access_logging_to_a_provider_is_valid() {
        assert_clean(&tel("  accessLogging:\n  - providers:\n    - name: otel\n"));
    }

    #[test]
    fn provider_names_may_not_be_empty() {
        assert_error(
            &tel("  metrics:\n  - providers:\n    - name: \"\"\n"),
            "providers.name may not be empty",
        );
        assert_error(
            &tel("  tracing:\n  - providers:\n    - {}\n"),
            "providers.name may not be empty",
        );
    }

    #[test]
    fn sampling_percentage_is_0_to_100() {
        assert_error(
            &tel("  tracing:\n  - randomSamplingPercentage: 101\n"),
            "must be in range [0.0, 100.0]",
        );
        assert_error(
            &tel("  tracing:\n  - randomSamplingPercentage: -1\n"),
            "must be in range [0.0, 100.0]",
        );
        assert_clean(&tel("  tracing:\n  - randomSamplingPercentage: 0\n"));
        assert_clean(&tel("  tracing:\n  - randomSamplingPercentage: 54.54\n"));
    }

    #[test]
    fn tag_override_upsert_needs_a_value_and_remove_none() {
        let with = |body: &str| {
            tel(&format!(
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        foo:\n{body}"
            ))
        };
        assert_error(
            &with("          operation: UPSERT\n"),
            "value must be set when operation is UPSERT",
        );
        assert_error(
            &with("          operation: REMOVE\n          value: oops\n"),
            "value must not be set when operation is REMOVE",
        );
        assert_clean(&with("          operation: REMOVE\n"));
        assert_clean(&with("          value: request.host\n"));
        assert_error(
            &with("          value: \"request.host ==\"\n"),
            "valid CEL expression",
        );
    }

    #[test]
    fn metric_selector_takes_one_metric() {
        assert_error(
            &tel("  metrics:\n  - overrides:\n    - match:\n        customMetric: \"\"\n"),
            "customMetric may not be empty",
        );
        assert_error(
            &tel(
                "  metrics:\n  - overrides:\n    - match:\n        metric: REQUEST_COUNT\n        customMetric: foo\n",
            ),
            "only one of `metric` or `customMetric`",
        );
        assert_error(
            &tel("  metrics:\n  - overrides:\n    - match:\n        metric: REQUEST_COUNTS\n"),
            "did you mean `REQUEST_COUNT`?",
        );
    }

    #[test]
    fn access_log_filter_must_be_cel() {
        assert_error(
            &tel("  accessLogging:\n  - filter:\n      expression: \"response.code >=\"\n"),
            "filter must be a valid CEL expression",
        );
        assert_clean(&tel(
            "  accessLogging:\n  - filter:\n      expression: \"response.code >= 400\"\n",
        ));
    }

    #[test]
    fn custom_tags_need_one_source() {
        assert_error(
            &tel(
                "  tracing:\n  - customTags:\n      env:\n        literal:\n          value: a\n        header:\n          name: x\n",
            ),
            "set exactly one of",
        );
        assert_error(
            &tel(
                "  tracing:\n  - customTags:\n      env:\n        environment:\n          name: \"\"\n",
            ),
            "environment tag name may not be empty",
        );
    }

    #[test]
    fn multiple_tracing_entries_warn() {
        let doc = tel("  tracing:\n  - providers:\n    - name: a\n  - providers:\n    - name: b\n");
        assert_clean(&doc);
        assert_eq!(warnings(&doc).len(), 1);
    }

    #[test]
    fn reporting_interval_is_at_least_1ms() {
        assert_error(
            &tel("  metrics:\n  - reportingInterval: 10us\n"),
            "at least 1ms",
        );
    }

    #[test]
    fn selector_and_target_refs_are_exclusive() {
        assert_error(
            &tel(
                "  selector:\n    matchLabels:\n      app: a\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: g\n",
            ),
            "only one of",
        );
    }
}
