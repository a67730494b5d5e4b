//! Host names, addresses and sockets as Istio reads them: DNS names with an optional
//! leading wildcard, `namespace/host` pairs, IPs and CIDRs, Unix sockets, and when
//! one host name covers another.

use std::net::IpAddr;

/// A DNS-1123 label as Istio checks it: letters (either case), digits and `-`,
/// at most 63, starting and ending with a letter or digit.
pub(crate) fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// The first label of a host: `*`, a label, or a label written after `*` or `*-`.
fn is_wildcard_label(label: &str) -> bool {
    if label.len() > 63 {
        return false;
    }
    if label == "*" {
        return true;
    }
    let rest = label
        .strip_prefix("*-")
        .or_else(|| label.strip_prefix('*'))
        .unwrap_or(label);
    is_dns_label(rest)
}

fn preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name \"{name}\" too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Dot-separated labels; the last may be empty (a trailing dot), and the top-level
/// label may not be all digits.
fn dns_labels(domain: &str, whole: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let top = labels.last().copied().unwrap_or("");
    if top.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name \"{whole}\" invalid (top level domain \"{top}\" cannot be all-numeric)"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if i == labels.len() - 1 && label.is_empty() {
            break;
        }
        if !is_dns_label(label) {
            return Err(format!(
                "domain name \"{whole}\" invalid (label \"{label}\" invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified (or short) DNS name without wildcards.
pub(crate) fn fqdn(name: &str) -> Result<(), String> {
    preconditions(name)?;
    dns_labels(name, name)
}

/// A DNS name whose first label may be a wildcard (`*`, `*.example.com`, `*foo.com`).
pub(crate) fn wildcard_domain(name: &str) -> Result<(), String> {
    preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name \"{name}\" invalid (label \"{first}\" invalid)"
        ));
    }
    match rest {
        Some(rest) => dns_labels(rest, name),
        None => Ok(()),
    }
}

/// Wildcards must be a whole leading label: `*` or `*.example.com`, not `*foo.com`.
pub(crate) fn partial_wildcard(name: &str) -> Result<(), String> {
    if name.contains('*') && name != "*" && !name.starts_with("*.") {
        return Err(format!("partial wildcard \"{name}\" not allowed"));
    }
    Ok(())
}

/// A VirtualService host bound to a gateway, where SNI hosts may also use the
/// `outbound_.<port>_._.<host>` names that AUTO_PASSTHROUGH generates.
pub(crate) fn gateway_bound_domain(sni: bool, name: &str) -> Result<(), String> {
    preconditions(name)?;
    if sni && name.starts_with("outbound_") {
        let format = "outbound_.<PORT>_._.<HOSTNAME>";
        let parts: Vec<&str> = name.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {name} invalid, should follow '{format}' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let hostname = parts[3].trim_matches('.');
        if !port.bytes().any(|b| b.is_ascii_digit()) {
            return Err(format!(
                "domain name \"{name}\" invalid (label \"{port}\" invalid). should follow {format} format"
            ));
        }
        if !hostname.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name \"{name}\" invalid (label \"{hostname}\" invalid). should follow {format} format"
            ));
        }
        return Ok(());
    }
    wildcard_domain(name)
}

/// The host part of a Gateway server host or a Sidecar egress host.
fn hostname_part(name: &str, gateway: bool, errors: &mut Vec<String>) {
    if name != "*" && !name.contains('.') {
        errors.push(format!(
            "short names (non FQDN) are not allowed: \"{name}\""
        ));
    }
    if let Err(e) = wildcard_domain(name) {
        // Gateways also accept an IP address here; Sidecars do not.
        if !gateway || !is_ip(name) {
            errors.push(e);
        }
    }
    if let Err(e) = partial_wildcard(name) {
        errors.push(e);
    }
}

/// `namespace/host` (Sidecar egress, Gateway servers), where a Gateway may also give a bare host.
pub(crate) fn namespace_slash_host(host: &str, gateway: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let Some((ns, name)) = host.split_once('/') else {
        if gateway {
            hostname_part(host, true, &mut errors);
        } else {
            errors.push(format!("host `{host}` must be of form namespace/dnsName"));
        }
        return errors;
    };
    if ns.is_empty() || name.is_empty() {
        errors.push("config namespace and dnsName in host entry cannot be empty".into());
    }
    let special = ns == "*" || ns == "." || (!gateway && ns == "~");
    if !special && !is_dns_label(ns) {
        let what = if gateway { "gateway" } else { "sidecar" };
        errors.push(format!("invalid namespace value \"{ns}\" in {what}"));
    }
    hostname_part(name, gateway, &mut errors);
    errors
}

/// True for `*` and `*.example.com` (any host written with a leading `*`).
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// True when two hosts can name the same service: equal names, or a wildcard that
/// covers the other name (of two wildcards, the wider one covers the narrower).
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

/// True when every name `a` covers is also covered by `b` (`b` may be a wildcard).
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (is_wildcard(a), is_wildcard(b)) {
        (true, true) => a.len() >= b.len() && a[1..].ends_with(&b[1..]),
        (true, false) => false,
        (false, true) => a.ends_with(&b[1..]),
        (false, false) => a == b,
    }
}

/// An IPv4 or IPv6 address.
pub(crate) fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// An IP address, with a message naming it when it is not one.
pub(crate) fn ip_address(text: &str) -> Result<(), String> {
    if is_ip(text) {
        Ok(())
    } else {
        Err(format!("{text} is not a valid IP"))
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn ip_subnet(text: &str) -> Result<(), String> {
    if text.matches('/').count() != 1 {
        return ip_address(text);
    }
    let bad = || format!("{text} is not a valid CIDR block");
    let (addr, bits) = text.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let ok = !bits.is_empty()
        && bits.len() <= 3
        && bits.bytes().all(|b| b.is_ascii_digit())
        && !(bits.len() > 1 && bits.starts_with('0'))
        && bits.parse::<u32>().is_ok_and(|b| b <= max);
    if ok { Ok(()) } else { Err(bad()) }
}

/// A Unix socket path (after `unix://`): absolute and not a directory, or `@abstract`.
pub(crate) fn unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains_follow_istio() {
        assert!(wildcard_domain("*.example.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("*foo.com").is_ok());
        assert!(wildcard_domain("Reviews.Default").is_ok());
        assert!(wildcard_domain("istio.io.").is_ok());
        let e = wildcard_domain("cart_v2.shop.svc").expect_err("underscore");
        assert!(e.contains("invalid (label \"cart_v2\" invalid)"), "{e}");
        assert!(wildcard_domain("").is_err());
        assert!(wildcard_domain("foo.*.com").is_err());
        assert!(wildcard_domain("1.2.3.4").is_err());
        assert!(fqdn("*.example.com").is_err());
    }

    #[test]
    fn overlapping_hosts_match() {
        assert!(host_matches("*.shop.example.com", "*.example.com"));
        assert!(host_matches("a.example.com", "*.example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
        assert!(host_subset_of("a.example.com", "*.example.com"));
        assert!(!host_subset_of("*.example.com", "a.example.com"));
        assert!(!host_subset_of(
            "billing.example.org",
            "payments.example.com"
        ));
    }

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
    fn wildcards_cover_their_suffix() {
        assert!(host_subset_of("a.example.com", "*.example.com"));
        assert!(host_subset_of("*.b.example.com", "*.example.com"));
        assert!(host_subset_of("anything.at.all", "*"));
        assert!(!host_subset_of("example.org", "*.example.com"));
        assert!(host_subset_of("a.com", "a.com"));
    }

    #[test]
    fn namespace_hosts() {
        assert!(namespace_slash_host("*/*", false).is_empty());
        assert!(namespace_slash_host("./foo.com", false).is_empty());
        assert!(namespace_slash_host("~/*", false).is_empty());
        assert!(!namespace_slash_host("foo.com", false).is_empty());
        assert!(namespace_slash_host("foo.com", true).is_empty());
        assert!(namespace_slash_host("1.2.3.4", true).is_empty());
        let e = namespace_slash_host("Shop_NS/shop.example.com", true);
        assert!(
            e[0].contains("invalid namespace value \"Shop_NS\" in gateway"),
            "{e:?}"
        );
        assert!(!namespace_slash_host("*shop.example.com", true).is_empty());
        assert!(!namespace_slash_host("ns/short", true).is_empty());
    }

    #[test]
    fn addresses() {
        assert!(ip_subnet("10.0.0.0/8").is_ok());
        assert!(ip_subnet("1.2.3.4/33").is_err());
        assert!(ip_subnet("001:db8::").is_ok());
        assert!(ip_subnet("2001:db8::/129").is_err());
        assert!(unix_address("@foo").is_ok());
        assert!(unix_address("/dir/").is_err());
        assert!(unix_address("relative").is_err());
    }
}
