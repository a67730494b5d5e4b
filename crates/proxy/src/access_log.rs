//! The access log: one line per request on standard output, in the shape of Istio's
//! default Envoy text format, so existing log tooling and habits still apply.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::flags::Flags;

/// One finished request.
pub struct Entry<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub version: Version,
    pub code: u16,
    pub flags: Flags,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration: Duration,
    pub authority: &'a str,
    pub upstream: Option<SocketAddr>,
    pub cluster: Option<&'a str>,
    pub request_id: Option<&'a str>,
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
    let mut line = serde_json::json!({
        "start_time": timestamp(SystemTime::now() - entry.duration),
        "method": entry.method.as_str(),
        "path": entry.path,
        "protocol": format!("{:?}", entry.version),
        "response_code": entry.code,
        "response_flags": entry.flags.to_string(),
        "bytes_received": entry.request_bytes,
        "bytes_sent": entry.response_bytes,
        "duration": entry.duration.as_millis() as u64,
        "x_request_id": entry.request_id,
        "authority": entry.authority,
        "upstream_host": entry.upstream.map(|a| a.to_string()),
        "upstream_cluster": entry.cluster,
    })
    .to_string();
    line.push('\n');
    line
}

fn text_line(entry: &Entry<'_>) -> String {
    let upstream = entry.upstream.map_or("-".to_string(), |a| a.to_string());
    format!(
        "[{}] \"{} {} {:?}\" {} {} {} {} {} \"{}\" \"{}\" \"{}\" {}\n",
        timestamp(SystemTime::now()),
        entry.method,
        entry.path,
        entry.version,
        entry.code,
        entry.flags,
        entry.request_bytes,
        entry.response_bytes,
        entry.duration.as_millis(),
        entry.request_id.unwrap_or("-"),
        entry.authority,
        upstream,
        entry.cluster.unwrap_or("-"),
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
