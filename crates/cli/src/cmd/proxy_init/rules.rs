//! The capture rules `trellis proxy init` programs, as one `iptables-restore` input
//! for the nat table: a pure function of the options, so it is tested without root.
//!
//! Outbound TCP goes to the proxy's outbound port and inbound TCP to its inbound
//! port; the proxy's own connections (its uid and gid) are left alone, so they are
//! never captured again, and so is the app's loopback traffic, except a connection
//! the proxy makes to the pod's own address, which is the pod calling itself through
//! a service and is served as inbound.

use std::net::IpAddr;

/// Ports the proxy serves itself, never redirected inbound: the capture ports,
/// health (15021), metrics (15020, 15090).
pub const PROXY_PORTS: [u16; 5] = [15001, 15006, 15020, 15021, 15090];

/// Our chains in the nat table.
pub const INBOUND: &str = "TRELLIS_INBOUND";
pub const IN_REDIRECT: &str = "TRELLIS_IN_REDIRECT";
pub const OUTPUT: &str = "TRELLIS_OUTPUT";
pub const REDIRECT: &str = "TRELLIS_REDIRECT";
pub const DNS: &str = "TRELLIS_DNS";

/// Which addresses or ports a rule covers: all (`*`) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

impl<T> Selection<T> {
    fn is_none(&self) -> bool {
        matches!(self, Selection::Only(v) if v.is_empty())
    }
}

/// An IP range (`10.0.0.0/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Why an option's value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{0}` is not an IP range (ADDRESS or ADDRESS/PREFIX)")]
    Range(String),
    #[error("`{0}` is not a port (1-65535)")]
    Port(String),
}

impl std::str::FromStr for Cidr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Cidr, ParseError> {
        let bad = || ParseError::Range(s.to_string());
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { ip, prefix })
    }
}

/// A comma-separated list, where `*` means all (Istio's annotation syntax).
pub fn parse_selection<T: std::str::FromStr>(text: &str) -> Result<Selection<T>, T::Err> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.contains(&"*") {
        return Ok(Selection::All);
    }
    items
        .into_iter()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map(Selection::Only)
}

/// A port in a list option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(pub u16);

impl std::str::FromStr for Port {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Port, ParseError> {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(Port)
            .ok_or_else(|| ParseError::Port(s.to_string()))
    }
}

/// What to capture (the flags of `trellis proxy init`, Istio's annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub include_outbound: Selection<Cidr>,
    pub exclude_outbound: Vec<Cidr>,
    pub exclude_outbound_ports: Vec<Port>,
    pub include_inbound_ports: Selection<Port>,
    pub exclude_inbound_ports: Vec<Port>,
    /// Where the app's DNS queries (UDP port 53) go, when redirected: the proxy's
    /// DNS server.
    pub redirect_dns: Option<u16>,
}

/// IPv4 or IPv6: which `*tables-restore` the rules are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn has(self, c: &Cidr) -> bool {
        c.ip.is_ipv4() == (self == Family::V4)
    }
}

impl Rules {
    /// The `iptables-restore --noflush` input for `family`: our chains, created (or
    /// emptied) and filled, and jumps to them from PREROUTING and OUTPUT.
    pub fn restore_input(&self, family: Family) -> String {
        let mut out = String::new();
        let mut rule = |line: String| {
            out.push_str(&line);
            out.push('\n');
        };
        rule("*nat".into());
        for chain in [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT] {
            rule(format!(":{chain} - [0:0]"));
        }
        if self.redirect_dns.is_some() && family == Family::V4 {
            rule(format!(":{DNS} - [0:0]"));
        }
        rule(format!(
            "-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        rule(format!(
            "-A {REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));

        // Inbound: everything but the proxy's own ports, or only the listed ports.
        if !self.include_inbound_ports.is_none() {
            rule(format!("-A PREROUTING -p tcp -j {INBOUND}"));
            match &self.include_inbound_ports {
                Selection::All => {
                    let mut skipped: Vec<u16> = PROXY_PORTS.to_vec();
                    skipped.extend(self.exclude_inbound_ports.iter().map(|p| p.0));
                    skipped.sort_unstable();
                    skipped.dedup();
                    for port in skipped {
                        rule(format!("-A {INBOUND} -p tcp --dport {port} -j RETURN"));
                    }
                    rule(format!("-A {INBOUND} -p tcp -j {IN_REDIRECT}"));
                }
                Selection::Only(ports) => {
                    for port in ports.iter().filter(|p| {
                        !PROXY_PORTS.contains(&p.0) && !self.exclude_inbound_ports.contains(p)
                    }) {
                        rule(format!(
                            "-A {INBOUND} -p tcp --dport {} -j {IN_REDIRECT}",
                            port.0
                        ));
                    }
                }
            }
        }

        // Outbound.
        rule(format!("-A OUTPUT -p tcp -j {OUTPUT}"));
        for port in &self.exclude_outbound_ports {
            rule(format!("-A {OUTPUT} -p tcp --dport {} -j RETURN", port.0));
        }
        let lo = family.loopback();
        for (kind, id) in [("uid", self.proxy_uid), ("gid", self.proxy_gid)] {
            // The proxy calling its own pod's address: served as inbound.
            rule(format!(
                "-A {OUTPUT} -o lo ! -d {lo} -m owner --{kind}-owner {id} -j {IN_REDIRECT}"
            ));
            // The app's loopback traffic stays on loopback.
            rule(format!(
                "-A {OUTPUT} -o lo -m owner ! --{kind}-owner {id} -j RETURN"
            ));
            // The proxy's own upstream connections are never captured (no loop).
            rule(format!(
                "-A {OUTPUT} -m owner --{kind}-owner {id} -j RETURN"
            ));
        }
        rule(format!("-A {OUTPUT} -d {lo} -j RETURN"));
        for range in self.exclude_outbound.iter().filter(|c| family.has(c)) {
            rule(format!("-A {OUTPUT} -d {range} -j RETURN"));
        }
        match &self.include_outbound {
            Selection::All => rule(format!("-A {OUTPUT} -j {REDIRECT}")),
            Selection::Only(ranges) => {
                for range in ranges.iter().filter(|c| family.has(c)) {
                    rule(format!("-A {OUTPUT} -d {range} -j {REDIRECT}"));
                }
            }
        }
        // DNS: the app's UDP queries to the proxy, the proxy's own to the resolver.
        // (IPv4 only: the DNS server listens on 127.0.0.1.)
        if let Some(port) = self.redirect_dns.filter(|_| family == Family::V4) {
            rule(format!("-A OUTPUT -p udp --dport 53 -j {DNS}"));
            rule(format!(
                "-A {DNS} -m owner --uid-owner {} -j RETURN",
                self.proxy_uid
            ));
            rule(format!(
                "-A {DNS} -m owner --gid-owner {} -j RETURN",
                self.proxy_gid
            ));
            rule(format!("-A {DNS} -p udp -j REDIRECT --to-ports {port}"));
        }
        rule("COMMIT".into());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Rules {
        Rules {
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_port: 15001,
            inbound_port: 15006,
            include_outbound: Selection::All,
            exclude_outbound: vec![],
            exclude_outbound_ports: vec![],
            include_inbound_ports: Selection::All,
            exclude_inbound_ports: vec![],
            redirect_dns: None,
        }
    }

    fn lines(rules: &Rules, family: Family) -> Vec<String> {
        rules
            .restore_input(family)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn position(lines: &[String], rule: &str) -> usize {
        lines
            .iter()
            .position(|l| l == rule)
            .unwrap_or_else(|| panic!("no rule {rule:?} in {lines:#?}"))
    }

    #[test]
    fn defaults_capture_all_tcp_but_the_proxys_own_and_its_ports() {
        let l = lines(&defaults(), Family::V4);
        assert_eq!(l.first().map(String::as_str), Some("*nat"));
        assert_eq!(l.last().map(String::as_str), Some("COMMIT"));
        for chain in [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT] {
            position(&l, &format!(":{chain} - [0:0]"));
        }
        position(
            &l,
            "-A TRELLIS_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        );
        position(
            &l,
            "-A TRELLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        );
        for port in PROXY_PORTS {
            position(
                &l,
                &format!("-A TRELLIS_INBOUND -p tcp --dport {port} -j RETURN"),
            );
        }
        // The proxy's exemption comes before the catch-all redirect.
        let exempt = position(&l, "-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN");
        let gid = position(&l, "-A TRELLIS_OUTPUT -m owner --gid-owner 1337 -j RETURN");
        let all = position(&l, "-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT");
        assert!(exempt < all && gid < all);
        let inbound_all = position(&l, "-A TRELLIS_INBOUND -p tcp -j TRELLIS_IN_REDIRECT");
        assert!(position(&l, "-A TRELLIS_INBOUND -p tcp --dport 15090 -j RETURN") < inbound_all);
        position(&l, "-A TRELLIS_OUTPUT -d 127.0.0.1/32 -j RETURN");
    }

    #[test]
    fn exclusions_come_before_the_redirect_and_follow_the_family() {
        let mut r = defaults();
        r.exclude_outbound = vec![
            "10.99.0.0/16".parse().expect("cidr"),
            "fd00::/8".parse().expect("cidr"),
        ];
        r.exclude_outbound_ports = vec![Port(7001)];
        r.exclude_inbound_ports = vec![Port(8081)];
        let l = lines(&r, Family::V4);
        let all = position(&l, "-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT");
        assert!(position(&l, "-A TRELLIS_OUTPUT -d 10.99.0.0/16 -j RETURN") < all);
        assert!(position(&l, "-A TRELLIS_OUTPUT -p tcp --dport 7001 -j RETURN") < all);
        position(&l, "-A TRELLIS_INBOUND -p tcp --dport 8081 -j RETURN");
        assert!(!l.iter().any(|x| x.contains("fd00::")), "{l:#?}");
        let v6 = lines(&r, Family::V6);
        position(&v6, "-A TRELLIS_OUTPUT -d fd00::/8 -j RETURN");
        position(&v6, "-A TRELLIS_OUTPUT -d ::1/128 -j RETURN");
        assert!(!v6.iter().any(|x| x.contains("10.99.")));
    }

    #[test]
    fn listed_inclusions_redirect_only_what_they_name() {
        let mut r = defaults();
        r.include_outbound = parse_selection("10.96.0.0/12, 192.168.1.7").expect("ranges");
        r.include_inbound_ports = parse_selection("9080,15021").expect("ports");
        let l = lines(&r, Family::V4);
        position(&l, "-A TRELLIS_OUTPUT -d 10.96.0.0/12 -j TRELLIS_REDIRECT");
        position(
            &l,
            "-A TRELLIS_OUTPUT -d 192.168.1.7/32 -j TRELLIS_REDIRECT",
        );
        assert!(!l.contains(&"-A TRELLIS_OUTPUT -j TRELLIS_REDIRECT".to_string()));
        position(
            &l,
            "-A TRELLIS_INBOUND -p tcp --dport 9080 -j TRELLIS_IN_REDIRECT",
        );
        // A proxy port is never redirected, even when listed.
        assert!(
            !l.iter()
                .any(|x| x.contains("--dport 15021 -j TRELLIS_IN_REDIRECT"))
        );
    }

    #[test]
    fn empty_inclusions_capture_nothing_that_way() {
        let mut r = defaults();
        r.include_outbound = parse_selection("").expect("empty");
        r.include_inbound_ports = parse_selection("").expect("empty");
        let l = lines(&r, Family::V4);
        assert!(
            !l.iter().any(|x| x.contains("-j TRELLIS_REDIRECT")),
            "{l:#?}"
        );
        assert!(!l.iter().any(|x| x.starts_with("-A PREROUTING")), "{l:#?}");
    }

    #[test]
    fn dns_queries_go_to_the_proxy_except_its_own() {
        assert!(
            !lines(&defaults(), Family::V4)
                .iter()
                .any(|l| l.contains(DNS))
        );
        let mut r = defaults();
        r.redirect_dns = Some(15053);
        let l = lines(&r, Family::V4);
        position(&l, ":TRELLIS_DNS - [0:0]");
        position(&l, "-A OUTPUT -p udp --dport 53 -j TRELLIS_DNS");
        let redirect = position(&l, "-A TRELLIS_DNS -p udp -j REDIRECT --to-ports 15053");
        assert!(position(&l, "-A TRELLIS_DNS -m owner --uid-owner 1337 -j RETURN") < redirect);
        assert!(position(&l, "-A TRELLIS_DNS -m owner --gid-owner 1337 -j RETURN") < redirect);
        assert!(redirect < position(&l, "COMMIT"));
        // The DNS server listens on IPv4 only: IPv6 queries are left alone.
        assert!(!lines(&r, Family::V6).iter().any(|l| l.contains(DNS)));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            parse_selection::<Cidr>("10.0.0.0/33"),
            Err(ParseError::Range("10.0.0.0/33".into()))
        );
        assert_eq!(
            parse_selection::<Port>("80,http"),
            Err(ParseError::Port("http".into()))
        );
        assert_eq!(parse_selection::<Port>("80, *"), Ok(Selection::All));
    }
}
