//! Helpers shared by the virtualservice, gateway, k8sgateway and schema analyzers:
//! reading the raw JSON of a resource, Kubernetes label selectors, Istio host names
//! (wildcards, short names, namespace scopes) and the X.509 checks behind gateway
//! credentials.
//!
//! Everything here works on [`Resource::raw`], so it does not depend on the typed specs.

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_api::Resource;

/// The API group of Istio's networking kinds.
pub const NETWORKING: &str = "networking.istio.io";
/// The API group of the Kubernetes Gateway API.
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";
/// The gateway name that means "the sidecars of the mesh".
pub const MESH_GATEWAY: &str = "mesh";
/// The cluster's DNS suffix for Services.
pub const KUBE_DOMAIN: &str = "svc.cluster.local";
/// `exportTo` value for every namespace.
pub const EXPORT_ALL: &str = "*";
/// `exportTo` value for the resource's own namespace.
pub const EXPORT_LOCAL: &str = ".";

// ---------------------------------------------------------------------------------------
// Raw JSON access

/// The text of `v`, or `""` when it is absent or not text.
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The items of `v`, or none when it is absent or not a list.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The texts of a list of strings (other items are skipped).
pub fn texts(v: &Value) -> Vec<String> {
    items(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// A mapping of text to text (`selector:`, `matchLabels:`); other values are skipped.
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// A port-like number (`number: 80`, or `"80"`), 0 when absent or not a number.
pub fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// True when `v` is absent or null.
pub fn is_absent(v: &Value) -> bool {
    v.is_null()
}

// ---------------------------------------------------------------------------------------
// Names

/// The namespace of `r`, `""` when none is written (the harness keeps none).
pub fn ns(r: &Resource) -> &str {
    r.meta.namespace.as_deref().unwrap_or("")
}

/// `namespace/name`, or just `name` for a resource without a namespace.
pub fn full_name(r: &Resource) -> String {
    join_name(ns(r), &r.meta.name)
}

/// `namespace/name`, or just `name` when the namespace is empty.
pub fn join_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Resolves a reference written as `name` (in `default_ns`) or `namespace/name`.
pub fn short_or_full(default_ns: &str, reference: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((n, name)) => (n.to_string(), name.to_string()),
        None => (default_ns.to_string(), reference.to_string()),
    }
}

/// The resource of `group`/`kind` named `namespace/name` (empty namespace = none written).
pub fn find<'c>(
    resources: impl IntoIterator<Item = &'c Resource>,
    namespace: &str,
    name: &str,
) -> Option<&'c Resource> {
    resources
        .into_iter()
        .find(|r| r.meta.name == name && ns(r) == namespace)
}

// ---------------------------------------------------------------------------------------
// Label selectors

/// Kubernetes equality selector semantics: every pair of `selector` is on `labels`
/// (so an empty selector selects everything).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The selector as Kubernetes prints it: `k1=v1,k2=v2`, sorted by key.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `k1=v1,k2=v2` back into a selector (pairs without exactly one `=` are skipped).
pub fn parse_selector(text: &str) -> BTreeMap<String, String> {
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
pub fn gateway_selector(gw: &Resource) -> BTreeMap<String, String> {
    string_map(&gw.raw["spec"]["selector"])
}

// ---------------------------------------------------------------------------------------
// Hosts

/// True for `*` and `*.example.com`.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Istio's host matching: equal names, or a wildcard that covers the other name
/// (when both are wildcards, the narrower one is covered by the wider one).
pub fn host_matches(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => {
            if a.len() < b.len() {
                b[1..].ends_with(&a[1..])
            } else {
                a[1..].ends_with(&b[1..])
            }
        }
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// Gateway-style hosts (`ns/host`) visible from `namespace`, with the namespace part
/// removed: `ns/host` is kept when `ns` is `*` or `namespace`, plain hosts always.
pub fn names_for_namespace(hosts: &[String], namespace: &str) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            Some((n, rest)) => {
                let rest = rest.split('/').next().unwrap_or(rest);
                (n == namespace || n == "*").then(|| rest.to_string())
            }
            None => Some(h.clone()),
        })
        .collect()
}

/// A short name (`reviews`) as a FQDN in `namespace`; wildcards and dotted names are kept.
pub fn to_fqdn(namespace: &str, host: &str) -> String {
    if is_short_name(host) {
        format!("{host}.{namespace}.{KUBE_DOMAIN}")
    } else {
        host.to_string()
    }
}

/// True for a name without dots that is not a wildcard (`reviews`).
pub fn is_short_name(host: &str) -> bool {
    !host.starts_with('*') && !host.contains('.')
}

/// `scope/fqdn`: a host as seen from a namespace scope (`*` for every namespace).
pub fn scoped_fqdn(scope: &str, namespace: &str, host: &str) -> String {
    format!("{scope}/{}", to_fqdn(namespace, host))
}

/// Splits `scope/fqdn`.
pub fn split_scoped(scoped: &str) -> (&str, &str) {
    scoped.split_once('/').unwrap_or(("", scoped))
}

/// `(namespace, name)` of a Service FQDN `name.namespace.svc.cluster.local`.
pub fn name_from_fqdn(fqdn: &str) -> Option<(String, String)> {
    let rest = fqdn.strip_suffix(".svc.cluster.local")?;
    let (name, namespace) = rest.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then(|| (namespace.to_string(), name.to_string()))
}

/// `(namespace, name)` a destination host refers to: a Service FQDN names its own
/// namespace; any other host is taken as a name in `default_ns`.
pub fn resource_name_from_host(default_ns: &str, host: &str) -> (String, String) {
    name_from_fqdn(host).unwrap_or_else(|| (default_ns.to_string(), host.to_string()))
}

/// True when `exportTo` exports to every namespace (empty, or containing `*`).
pub fn exports_to_all(export_to: &[String]) -> bool {
    export_to.is_empty() || export_to.iter().any(|e| e == EXPORT_ALL)
}

// ---------------------------------------------------------------------------------------
// Workloads

/// The Pods of the input (core Kubernetes).
pub fn pods<'c>(cx: &'c crate::Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of("", "Pod")
}

/// The Services of the input (core Kubernetes).
pub fn services<'c>(cx: &'c crate::Context<'_>) -> impl Iterator<Item = &'c Resource> + 'c {
    cx.of("", "Service")
}

// ---------------------------------------------------------------------------------------
// Certificates

/// Decodes standard base64 (padding optional, whitespace ignored).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut padding = false;
    for c in text.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding = true;
            continue;
        }
        if padding {
            return None;
        }
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The bytes of the first PEM block in `data` (what Go's `pem.Decode` returns), if any.
pub fn pem_first_block(data: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let label = loop {
        let line = lines.next()?.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ")
            && let Some(label) = rest.strip_suffix("-----")
        {
            break label.to_string();
        }
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines {
        let line = line.trim();
        if line == end {
            return base64_decode(&body);
        }
        // PEM headers (`Proc-Type: ...`) carry no base64.
        if !line.contains(':') {
            body.push_str(line);
        }
    }
    None
}

/// One DER element: (tag, contents, rest).
fn der_next(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Seconds since the Unix epoch of an ASN.1 UTCTime (0x17) or GeneralizedTime (0x18).
fn der_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute) = (field(0)?, field(2)?, field(4)?, field(6)?);
    let second = field(8).unwrap_or(0);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The validity window `(not_before, not_after)` of each DER certificate in `der`.
pub fn certificate_validity(mut der: &[u8]) -> Result<Vec<(i64, i64)>, &'static str> {
    const SEQUENCE: u8 = 0x30;
    let bad = "not an X.509 certificate";
    let mut out = Vec::new();
    while !der.is_empty() {
        let (tag, cert, rest) = der_next(der).ok_or(bad)?;
        der = rest;
        if tag != SEQUENCE {
            return Err(bad);
        }
        let (tag, tbs, after_tbs) = der_next(cert).ok_or(bad)?;
        if tag != SEQUENCE {
            return Err(bad);
        }
        // signatureAlgorithm and signatureValue follow the signed part.
        let (alg_tag, _, after_alg) = der_next(after_tbs).ok_or(bad)?;
        let (sig_tag, _, _) = der_next(after_alg).ok_or(bad)?;
        if alg_tag != SEQUENCE || sig_tag != 0x03 {
            return Err(bad);
        }
        let (mut tag, mut body, mut rest) = der_next(tbs).ok_or(bad)?;
        if tag == 0xa0 {
            // [0] version
            (tag, body, rest) = der_next(rest).ok_or(bad)?;
        }
        let _ = body;
        if tag != 0x02 {
            return Err(bad); // serialNumber
        }
        let (t1, _, rest) = der_next(rest).ok_or(bad)?; // signature
        let (t2, _, rest) = der_next(rest).ok_or(bad)?; // issuer
        let (t3, validity, _) = der_next(rest).ok_or(bad)?;
        if t1 != SEQUENCE || t2 != SEQUENCE || t3 != SEQUENCE {
            return Err(bad);
        }
        let (nb_tag, nb, rest) = der_next(validity).ok_or(bad)?;
        let (na_tag, na, _) = der_next(rest).ok_or(bad)?;
        let not_before = der_time(nb_tag, nb).ok_or(bad)?;
        let not_after = der_time(na_tag, na).ok_or(bad)?;
        out.push((not_before, not_after));
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok(out)
}

/// Checks a PEM certificate as Istio does before serving it: the first PEM block must
/// hold X.509 certificates, each valid at `now` (seconds since the epoch).
pub fn check_certificate(pem: &[u8], now: i64) -> Result<(), &'static str> {
    let der = pem_first_block(pem).ok_or("the certificate is not PEM-encoded")?;
    for (not_before, not_after) in certificate_validity(&der)? {
        if now > not_after {
            return Err("the certificate has expired");
        }
        if now < not_before {
            return Err("the certificate is not valid yet");
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The value of `key` in a Secret: `data` (base64) or `stringData` (plain).
pub fn secret_value(secret: &Resource, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.raw["data"][key].as_str() {
        return base64_decode(v);
    }
    secret.raw["stringData"][key]
        .as_str()
        .map(|s| s.as_bytes().to_vec())
}

/// The certificate a gateway would serve from `secret`, found as Istio looks for it:
/// `cert`/`key`, else `tls.crt`/`tls.key`, both non-empty.
pub fn secret_certificate(secret: &Resource) -> Result<Vec<u8>, String> {
    for (cert, key) in [("cert", "key"), ("tls.crt", "tls.key")] {
        if let (Some(c), Some(k)) = (secret_value(secret, cert), secret_value(secret, key))
            && !c.is_empty()
            && !k.is_empty()
        {
            return Ok(c);
        }
    }
    let mut found: Vec<String> = ["data", "stringData"]
        .iter()
        .flat_map(|f| secret.raw[*f].as_object().into_iter().flatten())
        .map(|(k, _)| k.clone())
        .collect();
    found.sort();
    Err(format!(
        "it needs the keys `tls.crt` and `tls.key` (or `cert` and `key`), non-empty; it has {}",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_match_like_istio() {
        assert!(host_matches("*.example.com", "web.example.com"));
        assert!(host_matches("web.example.com", "*.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("*", "anything.org"));
        assert!(host_matches("*.d", "*.productpage.d"));
        assert!(host_matches("*.productpage.d", "*.d"));
        assert!(!host_matches("*.productpage.b", "*.productpage"));
        assert!(!host_matches("a.com", "b.com"));
        assert!(host_matches("a.com", "a.com"));
    }

    #[test]
    fn gateway_hosts_are_filtered_by_namespace() {
        let hosts = vec![
            "istio-system/a.com".to_string(),
            "*/b.com".to_string(),
            "c.com".to_string(),
        ];
        assert_eq!(
            names_for_namespace(&hosts, "default"),
            vec!["b.com", "c.com"]
        );
        assert_eq!(
            names_for_namespace(&hosts, "istio-system"),
            vec!["a.com", "b.com", "c.com"]
        );
    }

    #[test]
    fn short_names_become_fqdns() {
        assert_eq!(
            to_fqdn("default", "reviews"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(to_fqdn("default", "a.b"), "a.b");
        assert_eq!(to_fqdn("default", "*"), "*");
        assert_eq!(
            resource_name_from_host("x", "reviews.default.svc.cluster.local"),
            ("default".to_string(), "reviews".to_string())
        );
        assert_eq!(
            resource_name_from_host("x", "reviews"),
            ("x".to_string(), "reviews".to_string())
        );
        assert_eq!(name_from_fqdn(".svc.cluster.local"), None);
    }

    #[test]
    fn selectors_print_and_parse_sorted() {
        let sel: BTreeMap<String, String> = [("istio", "ingressgateway"), ("app", "gw")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(selector_string(&sel), "app=gw,istio=ingressgateway");
        assert_eq!(parse_selector(&selector_string(&sel)), sel);
        assert!(selector_matches(&BTreeMap::new(), &sel));
    }

    #[test]
    fn base64_round_trips_known_text() {
        assert_eq!(
            base64_decode("aHVzaCBodXNoIGh1c2gK").as_deref(),
            Some(&b"hush hush hush\n"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI").as_deref(), Some(&b"ab"[..]));
        assert!(base64_decode("a$b").is_none());
    }

    #[test]
    fn civil_days_are_right() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(der_time(0x17, b"230314061541Z"), Some(1_678_774_541));
        assert_eq!(der_time(0x18, b"21220218061836Z"), Some(4_800_838_716));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(check_certificate(b"hush hush hush\n", 0).is_err());
        let pem = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(check_certificate(pem, 0).is_err());
    }
}
