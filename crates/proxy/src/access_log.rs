//! The access log: one line per request (or TCP connection) on standard output, in the shape of Istio's
//! default Envoy text format, so existing log tooling and habits still apply.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::flags::Flags;

/// One finished request or TCP connection.
pub struct Entry<'a> {
    /// The request, for HTTP; `None` for a TCP connection.
    pub http: Option<HttpFields<'a>>,
    pub flags: Flags,
    /// Why connecting upstream failed, when it did.
    pub failure_reason: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub cluster: Option<&'a str>,
    pub downstream_local: SocketAddr,
    pub downstream_peer: SocketAddr,
}

/// What only an HTTP request has.
pub struct HttpFields<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub version: Version,
    pub code: u16,
    /// Envoy's response code details (`via_upstream`, `route_not_found`, ...).
    pub details: &'a str,
    /// From the request's start to the upstream's response headers.
    pub upstream_service_time: Option<Duration>,
    pub forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: &'a str,
    pub route: Option<&'a str>,
}

/// Writes `entry` as one line: text, or a JSON object with Istio's field names.
pub fn write(json: bool, entry: &Entry<'_>) {
    let line = if json {
        json_line(entry)
    } else {
        text_line(entry)
    };
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// The JSON encoding (`accessLogEncoding: JSON`); absent values are null.
pub fn json_line(entry: &Entry<'_>) -> String {
    let http = entry.http.as_ref();
    let mut line = serde_json::json!({
        "start_time": timestamp(SystemTime::now() - entry.duration),
        "method": http.map(|h| h.method.as_str()),
        "path": http.map(|h| h.path),
        "protocol": http.map(|h| format!("{:?}", h.version)),
        "response_code": http.map_or(0, |h| h.code),
        "response_flags": entry.flags.to_string(),
        "response_code_details": http.map(|h| h.details),
        "upstream_transport_failure_reason": entry.failure_reason,
        "bytes_received": entry.bytes_received,
        "bytes_sent": entry.bytes_sent,
        "duration": entry.duration.as_millis() as u64,
        "upstream_service_time": http
            .and_then(|h| h.upstream_service_time)
            .map(|d| d.as_millis() as u64),
        "x_forwarded_for": http.and_then(|h| h.forwarded_for),
        "user_agent": http.and_then(|h| h.user_agent),
        "request_id": http.and_then(|h| h.request_id),
        "x_request_id": http.and_then(|h| h.request_id),
        "authority": http.map(|h| h.authority),
        "upstream_host": entry.upstream.map(|a| a.to_string()),
        "upstream_cluster": entry.cluster,
        "downstream_local_address": entry.downstream_local.to_string(),
        "downstream_remote_address": entry.downstream_peer.to_string(),
        "route_name": http.and_then(|h| h.route),
    })
    .to_string();
    line.push('\n');
    line
}

/// Istio's default text format, field for field (`-` where a value is absent).
fn text_line(entry: &Entry<'_>) -> String {
    fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map_or("-".to_string(), |v| v.to_string())
    }
    let http = entry.http.as_ref();
    let request = match http {
        Some(h) => format!("{} {} {:?}", h.method, h.path, h.version),
        None => "- - -".to_string(),
    };
    format!(
        "[{}] \"{request}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - {}\n",
        timestamp(SystemTime::now() - entry.duration),
        http.map_or(0, |h| h.code),
        entry.flags,
        http.map_or("-", |h| h.details),
        entry.failure_reason.unwrap_or("-"),
        entry.bytes_received,
        entry.bytes_sent,
        entry.duration.as_millis(),
        or_dash(
            http.and_then(|h| h.upstream_service_time)
                .map(|d| d.as_millis())
        ),
        http.and_then(|h| h.forwarded_for).unwrap_or("-"),
        http.and_then(|h| h.user_agent).unwrap_or("-"),
        http.and_then(|h| h.request_id).unwrap_or("-"),
        http.map_or("-", |h| h.authority),
        or_dash(entry.upstream),
        entry.cluster.unwrap_or("-"),
        entry.downstream_local,
        entry.downstream_peer,
        http.and_then(|h| h.route).unwrap_or("-"),
    )
}

/// RFC 3339 UTC with milliseconds, without a date library.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(timestamp(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
