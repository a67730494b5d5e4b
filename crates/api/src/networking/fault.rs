//! Fault injection (`fault:` of an HTTP rule): delaying or aborting a share of
//! requests to test how callers cope, with Istio's percentage and status rules.

use serde::{Deserialize, Serialize};

use super::common::{check_duration, check_min_1ms, is_default};
use crate::check::Checker;
use crate::values::{Duration, Percent};

/// Faults injected into matching requests, for testing resilience.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Delay requests before forwarding them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// Deprecated whole-number percentage; use `percentage`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Fail requests without forwarding them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A fault percentage: 0, or between 0.0001 and 100.
fn check_fault_percentage(c: &mut Checker, p: Option<Percent>) {
    if let Some(p) = p {
        let v = p.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            c.error_at(
                "percentage",
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }
}

/// Istio's status range for aborts and direct responses.
pub(crate) fn check_http_status(c: &mut Checker, field: &str, status: i64) {
    if !(200..=600).contains(&status) {
        c.error_at(
            field,
            format!("HTTP status {status} is not in range 200-599"),
        );
    }
}

impl HttpFaultInjection {
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.abort.is_none() && self.delay.is_none() {
            c.error("HTTP fault injection must have an abort and/or a delay");
        }
        if let Some(abort) = &self.abort {
            c.at("abort", |c| {
                check_fault_percentage(c, abort.percentage);
                let kinds = [
                    abort.http_status.is_some(),
                    abort.grpc_status.is_some(),
                    abort.http2_error.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() > 1 {
                    c.error("only one of httpStatus, grpcStatus or http2Error may be set");
                }
                if let Some(status) = abort.http_status {
                    check_http_status(c, "httpStatus", i64::from(status));
                } else if let Some(status) = &abort.grpc_status {
                    if !GRPC_STATUS.contains(&status.as_str()) {
                        c.error_at(
                            "grpcStatus",
                            format!(
                                "gRPC status \"{status}\" is not supported (valid: {})",
                                GRPC_STATUS.join(", ")
                            ),
                        );
                    }
                } else if abort.http2_error.is_some() {
                    c.error_at(
                        "http2Error",
                        "HTTP/2 abort fault injection not supported yet",
                    );
                } else {
                    c.warn("abort configured, but error type not set");
                }
            });
        }
        if let Some(delay) = &self.delay {
            c.at("delay", |c| {
                check_fault_percentage(c, delay.percentage);
                if delay.percent != 0 {
                    c.warn("percent is deprecated, use percentage");
                    if !(0..=100).contains(&delay.percent) {
                        c.warn(format!("percent {} is outside 0..100", delay.percent));
                    }
                }
                if delay.fixed_delay.is_some() && delay.exponential_delay.is_some() {
                    c.error("only one of fixedDelay or exponentialDelay may be set");
                }
                check_duration(c, "fixedDelay", delay.fixed_delay);
                if delay.exponential_delay.is_some() {
                    check_min_1ms(c, "exponentialDelay", delay.exponential_delay);
                    c.error_at("exponentialDelay", "exponentialDelay not supported yet");
                }
                if delay.fixed_delay.is_none() && delay.exponential_delay.is_none() {
                    c.warn("delay configured without fixedDelay; no delay will be injected");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::error_messages as errors;

    #[test]
    fn fault_percentages_and_statuses() {
        let f = HttpFaultInjection {
            abort: Some(FaultAbort {
                http_status: Some(700),
                percentage: Some(Percent { value: 150.0 }),
                ..Default::default()
            }),
            delay: None,
        };
        assert_eq!(errors(|c| f.check(c)).len(), 2);
        assert_eq!(errors(|c| HttpFaultInjection::default().check(c)).len(), 1);
    }
}
