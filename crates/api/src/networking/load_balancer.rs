//! Load balancing (`loadBalancer:` of a traffic policy): a simple algorithm,
//! consistent hashing or backend utilization, plus locality-aware routing,
//! zone-aware routing and slow-start warmup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{check_min_1ms, is_default};
use super::destination_rule::OutlierDetection;
use crate::check::Checker;
use crate::values::Duration;

/// Algorithms that need no configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// `loadBalancer:`; `simple`, `consistentHash` and `backendUtilization` exclude each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Deprecated: use `warmup.duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
}

/// Hashing a request attribute so the same client keeps reaching the same endpoint.
/// Exactly one hash key (`httpHeaderName`, `httpCookie`, `useSourceIp`,
/// `httpQueryParameterName`) should be set, and at most one of `ringHash` and `maglev`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

/// A cookie to hash on; Envoy creates it when absent and `ttl` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// An extra attribute of a generated cookie (`SameSite=Strict`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Ketama ring hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default, skip_serializing_if = "is_default")]
    pub minimum_ring_size: u64,
}

/// Maglev hashing; the table size must be a prime below 5000011.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default, skip_serializing_if = "is_default")]
    pub table_size: u64,
}

/// Weighting endpoints by the load they report (ORCA).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_stabilization_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_utilization_penalty_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_names_for_computing_utilization: Vec<String>,
}

/// Locality-aware routing: either weighted `distribute` or ordered `failover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from locality `from` is split over the localities in `to` (weights sum to 100).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// When region `from` has no healthy endpoints, send its traffic to region `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Prefer endpoints in the caller's zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u32>,
}

/// Slow start: new endpoints get a growing share of traffic over `duration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Warmup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Envoy's primality test for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

impl LoadBalancerSettings {
    pub(crate) fn check(&self, c: &mut Checker, outlier: Option<&OutlierDetection>) {
        let policies = [
            self.simple.is_some(),
            self.consistent_hash.is_some(),
            self.backend_utilization.is_some(),
        ];
        if policies.iter().filter(|p| **p).count() > 1 {
            c.error("only one of simple, consistentHash or backendUtilization may be set");
        }
        if let Some(hash) = &self.consistent_hash {
            c.at("consistentHash", |c| hash.check(c));
        }
        if let Some(locality) = &self.locality_lb_setting {
            c.at("localityLbSetting", |c| locality.check(c, outlier));
        }
        if let Some(zone) = &self.zone_aware_lb_setting
            && zone.min_cluster_size == Some(0)
        {
            c.error_at(
                "zoneAwareLbSetting.minClusterSize",
                "minClusterSize must be at least 1",
            );
        }
        check_min_1ms(c, "warmupDurationSecs", self.warmup_duration_secs);
        if let Some(warm) = &self.warmup {
            c.at("warmup", |c| {
                match warm.duration {
                    None => c.error_at("duration", "duration is required"),
                    Some(_) => super::common::check_duration(c, "duration", warm.duration),
                }
                if let Some(p) = warm.minimum_percent
                    && !(0.0..=100.0).contains(&p)
                {
                    c.error_at(
                        "minimumPercent",
                        format!("minimumPercent {p} must be in the range 0..100"),
                    );
                }
                if let Some(a) = warm.aggression
                    && a < 1.0
                {
                    c.error_at(
                        "aggression",
                        format!("aggression should be greater than or equal to 1 (got {a})"),
                    );
                }
            });
        }
    }
}

impl ConsistentHashLb {
    fn check(&self, c: &mut Checker) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        match keys {
            0 => c.warn("consistentHash sets no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName)"),
            1 => {}
            _ => c.error("only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set"),
        }
        if let Some(cookie) = &self.http_cookie
            && cookie.name.is_empty()
        {
            c.error_at("httpCookie.name", "name required for HttpCookie");
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            c.error("only one of ringHash or maglev may be set");
        }
        if self.minimum_ring_size != 0 {
            c.warn("consistent hash minimumRingSize is deprecated, use ringHash.minimumRingSize instead");
            if self.ring_hash.is_some() || self.maglev.is_some() {
                c.error("only one of minimumRingSize or maglev/ringHash can be specified");
            }
        }
        if let Some(maglev) = &self.maglev {
            let size = maglev.table_size;
            c.at("maglev.tableSize", |c| {
                if size == 0 {
                    c.error("tableSize must be set for maglev");
                }
                if size >= 5_000_011 {
                    c.error("tableSize must be less than 5000011 for maglev");
                }
                if !is_prime(size) {
                    c.error(format!(
                        "tableSize must be a prime number for maglev (got {size})"
                    ));
                }
            });
        }
    }
}

impl LocalityLbSetting {
    fn check(&self, c: &mut Checker, outlier: Option<&OutlierDetection>) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            c.error("can not simultaneously specify 'distribute' and 'failover'");
            return;
        }
        if !self.failover.is_empty()
            && let Some(label) = self
                .failover_priority
                .iter()
                .find(|l| TOPOLOGY_LABELS.contains(&l.as_str()))
        {
            c.error(format!(
                "can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"
            ));
            return;
        }
        let mut sources = Vec::new();
        for (i, d) in self.distribute.iter().enumerate() {
            let at = format!("distribute[{i}]");
            sources.push(d.from.as_str());
            let mut total: u64 = 0;
            for weight in d.to.values() {
                if *weight == 0 || *weight > 100 {
                    c.error_at(&at, "locality weight must be in range [1, 100]");
                    return;
                }
                total += u64::from(*weight);
            }
            if total != 100 {
                c.error_at(&at, format!("total locality weight {total} != 100"));
                return;
            }
            if let Err(e) = localities(d.to.keys().map(String::as_str)) {
                c.error_at(&at, e);
            }
        }
        if let Err(e) = localities(sources.into_iter()) {
            c.error_at("distribute", e);
        }
        if (!self.failover.is_empty() || !self.failover_priority.is_empty()) && outlier.is_none() {
            c.warn("outlier detection policy must be provided for failover");
        }
        c.each("failover", &self.failover, |c, _, f| {
            if f.from == f.to {
                c.error("locality lb failover settings must specify different regions");
            }
            if f.from.contains('/') || f.to.contains('/') {
                c.error("locality lb failover only specify region");
            }
            if f.from.contains('*') || f.to.contains('*') {
                c.error("locality lb failover region should not contain '*' wildcard");
            }
        });
    }
}

/// `region[/zone[/subzone]]` patterns, at most one trailing `*`, none covering another.
fn localities<'a>(list: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in list {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        let covers = |a: &[&str], b: &[&str]| {
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x == y || *x == "*" || *y == "*")
        };
        if seen.iter().any(|s| covers(s, &parts)) {
            return Err(format!(
                "locality {locality} overlap with previous specified ones"
            ));
        }
        seen.push(parts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maglev_table_size_must_be_prime() {
        assert!(is_prime(65537));
        assert!(!is_prime(1000));
        assert!(is_prime(2));
    }

    #[test]
    fn locality_weights_must_sum_to_100() {
        let setting = LocalityLbSetting {
            distribute: vec![LocalityDistribute {
                from: "us-west/zone1/*".into(),
                to: [
                    ("us-west/zone1/*".to_string(), 60),
                    ("us-west/zone2/*".to_string(), 30),
                ]
                .into_iter()
                .collect(),
            }],
            ..Default::default()
        };
        let mut c = Checker::new("lb");
        setting.check(&mut c, None);
        let f = c.into_findings();
        assert!(
            f[0].message.contains("total locality weight 90 != 100"),
            "{f:?}"
        );
    }

    #[test]
    fn overlapping_localities_are_rejected() {
        assert!(localities(["us-west/*", "us-west/zone1"].into_iter()).is_err());
        assert!(localities(["us-west/zone1", "us-west/zone2"].into_iter()).is_ok());
        assert!(localities(["us-west//z"].into_iter()).is_err());
    }
}
