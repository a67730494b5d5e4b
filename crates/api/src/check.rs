//! The validation toolkit: a [`Checker`] that tracks the field path while rules run,
//! and the small rules Istio applies everywhere (DNS-1123 names, hosts, ports,
//! regexes, percentages).
//!
//! Rules never see files or lines: they report a field path, and the loader maps the
//! path back to the line the user wrote.

use crate::meta::ObjectMeta;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in one resource, at a field path such as `spec.http[0].timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

/// Semantic validation of one resource's spec (Istio's webhook rules).
pub trait Validate {
    /// Checks `self`; `meta` is the resource's metadata, `c` starts at `spec`.
    fn validate(&self, meta: &ObjectMeta, c: &mut Checker);
}

/// Collects findings while walking a resource, keeping the current field path.
#[derive(Debug, Default)]
pub struct Checker {
    path: String,
    findings: Vec<Finding>,
}

impl Checker {
    /// A checker whose paths start at `root` (for example `spec`).
    pub fn new(root: &str) -> Self {
        Checker {
            path: root.to_string(),
            findings: Vec::new(),
        }
    }

    /// Runs `f` one field deeper.
    pub fn at<R>(&mut self, field: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(field);
        let out = f(self);
        self.path.truncate(len);
        out
    }

    /// Runs `f` for each item of the list at `field`, with the path `field[i]`.
    pub fn each<T>(&mut self, field: &str, items: &[T], mut f: impl FnMut(&mut Self, usize, &T)) {
        for (i, item) in items.iter().enumerate() {
            self.at(&format!("{field}[{i}]"), |c| f(c, i, item));
        }
    }

    /// The current field path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reports an error at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, message.into());
    }

    /// Reports a warning at the current path.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, message.into());
    }

    /// Reports an error one field deeper than the current path.
    pub fn error_at(&mut self, field: &str, message: impl Into<String>) {
        let message = message.into();
        self.at(field, |c| c.error(message));
    }

    fn push(&mut self, severity: Severity, message: String) {
        self.findings.push(Finding {
            severity,
            path: self.path.clone(),
            message,
        });
    }

    /// Everything found so far.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }

    /// True when an error (not only warnings) has been reported.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// The messages of the errors `f` reports on a fresh [`Checker`] (warnings are left
/// out): what the rule modules' tests compare.
#[cfg(test)]
pub(crate) fn error_messages(f: impl FnOnce(&mut Checker)) -> Vec<String> {
    let mut c = Checker::new("spec");
    f(&mut c);
    c.into_findings()
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.message)
        .collect()
}

/// Rules that many resources share. Each returns `Err(message)` describing what would be valid.
pub mod rules {
    use std::net::IpAddr;

    /// A DNS-1123 label: lowercase alphanumerics and `-`, at most 63, starting and ending alphanumeric.
    pub fn dns1123_label(name: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{name}` is not a valid DNS-1123 label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
            ))
        }
    }

    /// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
    pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > 253 || name.split('.').any(|l| dns1123_label(l).is_err())
        {
            return Err(format!(
                "`{name}` is not a valid DNS-1123 subdomain (dot-separated lowercase labels, at most 253 characters)"
            ));
        }
        Ok(())
    }

    /// A host name that may start with a `*.` wildcard, or be `*` alone.
    /// Istio allows upper case here and checks each label's shape.
    pub fn wildcard_host(host: &str) -> Result<(), String> {
        if host == "*" {
            return Ok(());
        }
        let rest = host.strip_prefix("*.").unwrap_or(host);
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.is_empty() || rest.len() > 255 {
            return Err(format!("invalid host `{host}`"));
        }
        // A bare `*` prefix without a dot, like `*foo.com`, is allowed by Istio for the first label.
        let rest = rest.strip_prefix('*').unwrap_or(rest);
        for label in rest.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "invalid host `{host}`: label `{label}` must be letters, digits and '-', at most 63, not starting or ending with '-'"
                ));
            }
        }
        Ok(())
    }

    /// A port number 1–65535.
    pub fn port(port: i64) -> Result<(), String> {
        if (1..=65535).contains(&port) {
            Ok(())
        } else {
            Err(format!("port number {port} must be in the range 1..65535"))
        }
    }

    /// A percentage 0–100.
    pub fn percentage(value: f64) -> Result<(), String> {
        if (0.0..=100.0).contains(&value) {
            Ok(())
        } else {
            Err(format!("percentage {value} must be in the range 0..100"))
        }
    }

    /// An RE2-style regular expression (Rust's `regex` syntax is RE2's).
    pub fn regex(pattern: &str) -> Result<(), String> {
        regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim().to_string();
            format!("invalid regex `{pattern}`: {last}")
        })
    }

    /// An HTTP status code usable in a response (200–599).
    pub fn http_status(code: i64) -> Result<(), String> {
        if (200..=599).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP status {code} must be in the range 200..599"))
        }
    }

    /// An IP address or CIDR block (`10.0.0.0/8`, `::1`, `192.168.1.1`).
    pub fn ip_or_cidr(text: &str) -> Result<(), String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid IP address `{text}`"))?;
        if let Some(prefix) = prefix {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(p) if p <= max => {}
                _ => return Err(format!("bad CIDR range ({text})")),
            }
        }
        Ok(())
    }

    /// The nearest of `candidates` to `word` if it is close enough to be a likely typo.
    pub fn nearest<'a>(
        word: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        let word_lower = word.to_ascii_lowercase();
        let mut best: Option<(usize, &str)> = None;
        for candidate in candidates {
            let d = edit_distance(&word_lower, &candidate.to_ascii_lowercase());
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, candidate));
            }
        }
        let limit = (word.chars().count() / 3).max(1) + 1;
        best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
    }

    /// Levenshtein distance (with adjacent transpositions counted as one edit).
    pub fn edit_distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut prev2: Vec<usize> = vec![0; b.len() + 1];
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    cur[j] = cur[j].min(prev2[j - 2] + 1);
                }
            }
            prev2 = std::mem::replace(&mut prev, cur);
        }
        prev[b.len()]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn nearest_finds_typos() {
            assert_eq!(
                nearest("htpp", ["hosts", "gateways", "http", "tcp", "tls"]),
                Some("http")
            );
            assert_eq!(nearest("zzzzzz", ["hosts", "http"]), None);
            assert_eq!(
                nearest("STRCT", ["STRICT", "PERMISSIVE", "DISABLE", "UNSET"]),
                Some("STRICT")
            );
        }

        #[test]
        fn hosts_and_names() {
            assert!(wildcard_host("*.example.com").is_ok());
            assert!(wildcard_host("reviews").is_ok());
            assert!(wildcard_host("bad_host").is_err());
            assert!(dns1123_label("reviews-v1").is_ok());
            assert!(dns1123_label("Reviews").is_err());
            assert!(ip_or_cidr("10.20.0.0/33").is_err());
            assert!(ip_or_cidr("10.20.0.0/16").is_ok());
            assert!(ip_or_cidr("::1").is_ok());
        }
    }

    // ---- Security and telemetry rules (used by security/ and telemetry/) ----

    /// Rules shared by the policy kinds (PeerAuthentication, AuthorizationPolicy,
    /// RequestAuthentication, Telemetry). Kept in their own module so that names
    /// cannot collide with the networking rules above.
    pub mod policy {
        use crate::values::Duration;

        /// A duration Envoy is handed: at least 1ms, in whole milliseconds.
        pub fn duration_at_least_1ms(d: Duration) -> Result<(), String> {
            let d = d.get();
            if d < std::time::Duration::from_millis(1) {
                return Err(format!("duration `{}` must be at least 1ms", Duration(d)));
            }
            if !d.subsec_nanos().is_multiple_of(1_000_000) {
                return Err(format!(
                    "duration `{}` is finer than a millisecond; only whole milliseconds are supported",
                    Duration(d)
                ));
            }
            Ok(())
        }

        /// A header name made only of letters, digits, `-` and `_` (what Istio
        /// accepts for headers it creates, such as JWT claim outputs).
        pub fn plain_header_name(name: &str) -> Result<(), String> {
            if name.is_empty() {
                return Err("header name must not be empty".into());
            }
            if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` is not a valid header name (letters, digits, '-' and '_' only)"
                ))
            }
        }

        /// An HTTP header name as Envoy accepts it: RFC 7230 token characters,
        /// optionally after a leading `:` for pseudo-headers.
        pub fn token_header_name(name: &str) -> Result<(), String> {
            let body = name.strip_prefix(':').unwrap_or(name);
            let ok = !body.is_empty()
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_|~`".contains(&b));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_|~`)"
                ))
            }
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn durations_need_whole_milliseconds() {
                let d = |t: &str| Duration::parse(t).expect("valid");
                assert!(duration_at_least_1ms(d("1ms")).is_ok());
                assert!(duration_at_least_1ms(d("5s")).is_ok());
                assert!(duration_at_least_1ms(d("500us")).is_err());
                assert!(duration_at_least_1ms(d("1.5ms")).is_err());
            }

            #[test]
            fn header_names() {
                assert!(plain_header_name("x-user_id").is_ok());
                assert!(plain_header_name(":authority").is_err());
                assert!(token_header_name(":authority").is_ok());
                assert!(token_header_name("bad header").is_err());
            }
        }
    }
}

/// The resource's own name and namespace must be DNS-1123 (Istio checks the name; Kubernetes the namespace).
pub fn check_metadata(meta: &ObjectMeta, c: &mut Checker) {
    c.at("metadata", |c| {
        if meta.name.is_empty() && meta.generate_name.is_none() {
            c.error_at("name", "name is required");
        } else if !meta.name.is_empty()
            && let Err(e) = rules::dns1123_subdomain(&meta.name)
        {
            c.error_at("name", e);
        }
        if let Some(ns) = &meta.namespace
            && let Err(e) = rules::dns1123_label(ns)
        {
            c.error_at("namespace", e);
        }
    });
}
