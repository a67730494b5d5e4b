//! Connection pool limits (`connectionPool:`), shared by DestinationRule traffic
//! policies and Sidecar inbound listeners: TCP connection limits and keepalive,
//! HTTP request limits, timeouts and HTTP/2 upgrade.

use serde::{Deserialize, Serialize};

use super::common::{check_duration, check_min_1ms, is_default};
use crate::check::Checker;
use crate::values::Duration;

/// `connectionPool:`; at least one of `tcp` and `http` must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Limits and timeouts of TCP connections to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_connections: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// `0s` turns the idle timeout off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive probes on upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default, skip_serializing_if = "is_default")]
    pub probes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Whether HTTP/1.1 connections to the upstream are upgraded to HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// Limits of HTTP requests to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default, skip_serializing_if = "is_default")]
    pub http1_max_pending_requests: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub http2_max_requests: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_requests_per_connection: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_retries: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub use_client_protocol: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_concurrent_streams: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// HTTP/2 PING keepalive on upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

fn non_negative(c: &mut Checker, field: &str, value: i32, what: &str) {
    if value < 0 {
        c.error_at(field, format!("{what} must be non-negative (got {value})"));
    }
}

impl ConnectionPoolSettings {
    /// Something is set, limits are not negative, durations are at least 1ms.
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.tcp.is_none() && self.http.is_none() {
            c.error("connection pool must have at least one field (tcp or http)");
            return;
        }
        if let Some(http) = &self.http {
            c.at("http", |c| {
                non_negative(
                    c,
                    "http1MaxPendingRequests",
                    http.http1_max_pending_requests,
                    "http1 max pending requests",
                );
                non_negative(
                    c,
                    "http2MaxRequests",
                    http.http2_max_requests,
                    "http2 max requests",
                );
                non_negative(
                    c,
                    "maxRequestsPerConnection",
                    http.max_requests_per_connection,
                    "max requests per connection",
                );
                non_negative(c, "maxRetries", http.max_retries, "max retries");
                non_negative(
                    c,
                    "maxConcurrentStreams",
                    http.max_concurrent_streams,
                    "max concurrent streams",
                );
                check_duration(c, "idleTimeout", http.idle_timeout);
                if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
                    && http.use_client_protocol
                {
                    c.error("use client protocol must not be true when H2UpgradePolicy is UPGRADE");
                }
                if let Some(ka) = &http.http2_keep_alive {
                    check_min_1ms(c, "http2KeepAlive.interval", ka.interval);
                    check_min_1ms(c, "http2KeepAlive.timeout", ka.timeout);
                }
            });
        }
        if let Some(tcp) = &self.tcp {
            c.at("tcp", |c| {
                non_negative(c, "maxConnections", tcp.max_connections, "max connections");
                check_duration(c, "connectTimeout", tcp.connect_timeout);
                check_duration(c, "maxConnectionDuration", tcp.max_connection_duration);
                if tcp.idle_timeout.is_some_and(|d| d.get().as_millis() != 0) {
                    check_duration(c, "idleTimeout", tcp.idle_timeout);
                }
                if let Some(ka) = &tcp.tcp_keepalive {
                    check_duration(c, "tcpKeepalive.time", ka.time);
                    check_duration(c, "tcpKeepalive.interval", ka.interval);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_count(pool: &ConnectionPoolSettings) -> usize {
        let mut c = Checker::new("connectionPool");
        pool.check(&mut c);
        c.into_findings().len()
    }

    #[test]
    fn empty_connection_pool_is_rejected() {
        assert_eq!(error_count(&ConnectionPoolSettings::default()), 1);
    }

    #[test]
    fn negative_limits_are_rejected() {
        let pool = ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: -5,
                idle_timeout: Some(Duration::default()),
                ..Default::default()
            }),
            http: None,
        };
        assert_eq!(error_count(&pool), 1);
    }
}
