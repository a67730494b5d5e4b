//! Load balancing: picking one endpoint of a cluster. The tables (weighted index
//! lists, hash rings, Maglev tables) are built when the config is compiled; a pick
//! reads them and skips endpoints that outlier detection has ejected.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use trellis_model::{HashAlgorithm, LoadBalancer};

use crate::rand;
use crate::state::{ClusterState, EndpointState};

/// Maglev table size: a prime, as the algorithm requires (Envoy's default).
const MAGLEV_SIZE: usize = 65_537;
/// Virtual nodes on the hash ring (Envoy's default minimum ring size).
const RING_SIZE: usize = 1024;

/// The compiled balancer of one cluster.
pub struct Balancer {
    algorithm: Algorithm,
    /// Below this share of healthy endpoints, ejections are ignored (Envoy's panic
    /// threshold, Istio's `minHealthPercent`); 0 never panics.
    panic_threshold: u32,
}

enum Algorithm {
    RoundRobin { order: Vec<usize> },
    LeastRequest,
    Random { order: Vec<usize> },
    Ring { ring: Vec<(u64, usize)> },
    Maglev { table: Vec<u32> },
}

impl Balancer {
    /// Builds the tables for `endpoints` with their `weights`.
    pub fn build(
        lb: &LoadBalancer,
        endpoints: &[Arc<EndpointState>],
        weights: &[u32],
        min_health_percent: u32,
    ) -> Self {
        Balancer {
            algorithm: Algorithm::build(lb, endpoints, weights),
            panic_threshold: min_health_percent,
        }
    }

    /// Picks an endpoint index, avoiding ejected endpoints and those in `avoid`
    /// (hosts already tried by this request) while any other is available.
    pub fn pick(
        &self,
        state: &ClusterState,
        endpoints: &[Arc<EndpointState>],
        hash: Option<u64>,
        avoid: &[usize],
    ) -> Option<usize> {
        let panic = self.panic_threshold > 0 && {
            let healthy = endpoints.iter().filter(|e| !e.is_ejected()).count();
            healthy * 100 < self.panic_threshold as usize * endpoints.len()
        };
        self.algorithm.pick(state, endpoints, hash, avoid, panic)
    }
}

impl Algorithm {
    fn build(lb: &LoadBalancer, endpoints: &[Arc<EndpointState>], weights: &[u32]) -> Self {
        let order = weighted_order(weights);
        match lb {
            LoadBalancer::RoundRobin | LoadBalancer::Passthrough => Algorithm::RoundRobin { order },
            LoadBalancer::LeastRequest => Algorithm::LeastRequest,
            LoadBalancer::Random => Algorithm::Random { order },
            LoadBalancer::ConsistentHash(policy) => match policy.algorithm {
                HashAlgorithm::RingHash => Algorithm::Ring {
                    ring: build_ring(endpoints, weights),
                },
                HashAlgorithm::Maglev => Algorithm::Maglev {
                    table: build_maglev(endpoints, weights),
                },
            },
        }
    }

    fn pick(
        &self,
        state: &ClusterState,
        endpoints: &[Arc<EndpointState>],
        hash: Option<u64>,
        avoid: &[usize],
        panic: bool,
    ) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let healthy = |i: usize| panic || !endpoints[i].is_ejected();
        let usable = |i: usize| healthy(i) && !avoid.contains(&i);
        let choice = match self {
            Algorithm::RoundRobin { order } => {
                let start = state.round_robin.fetch_add(1, Ordering::Relaxed);
                scan(order.len(), start, |k| order[k], usable)
            }
            Algorithm::Random { order } => {
                let start = rand::below(order.len() as u64) as usize;
                scan(order.len(), start, |k| order[k], usable)
            }
            Algorithm::LeastRequest => least_request(endpoints, &usable),
            Algorithm::Ring { ring } => {
                let h = hash.unwrap_or_else(rand::next_u64);
                let start = ring.partition_point(|(point, _)| *point < h) % ring.len().max(1);
                scan(ring.len(), start, |k| ring[k].1, usable)
            }
            Algorithm::Maglev { table } => {
                let h = hash.unwrap_or_else(rand::next_u64);
                let i = table[(h % table.len() as u64) as usize] as usize;
                if usable(i) {
                    Some(i)
                } else {
                    least_request(endpoints, &usable)
                }
            }
        };
        // Every healthy host was tried already: a retry may go back to one of them.
        choice.or_else(|| {
            if avoid.is_empty() {
                None
            } else {
                self.pick(state, endpoints, hash, &[], panic)
                    .filter(|i| healthy(*i))
            }
        })
    }
}

fn scan(
    len: usize,
    start: usize,
    at: impl Fn(usize) -> usize,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    (0..len).map(|k| at((start + k) % len)).find(|i| usable(*i))
}

/// Power of two choices: two random usable endpoints, the one with fewer requests in flight.
fn least_request(
    endpoints: &[Arc<EndpointState>],
    usable: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let n = endpoints.len();
    let a = rand::below(n as u64) as usize;
    let first = (0..n).map(|k| (a + k) % n).find(|i| usable(*i))?;
    let b = rand::below(n as u64) as usize;
    let second = (0..n)
        .map(|k| (b + k) % n)
        .find(|i| usable(*i))
        .unwrap_or(first);
    let load = |i: usize| endpoints[i].active.load(Ordering::Relaxed);
    Some(if load(second) < load(first) {
        second
    } else {
        first
    })
}

/// Endpoint indexes repeated by weight (weights reduced by their common divisor).
fn weighted_order(weights: &[u32]) -> Vec<usize> {
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let mut order = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        for _ in 0..(w / g).clamp(1, 128) {
            order.push(i);
        }
    }
    // Interleave so that consecutive picks spread over endpoints.
    let mut spread: Vec<(u64, usize)> = order
        .iter()
        .enumerate()
        .map(|(k, i)| (rand::mix(k as u64 ^ (*i as u64) << 32), *i))
        .collect();
    spread.sort_unstable();
    spread.into_iter().map(|(_, i)| i).collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn build_ring(endpoints: &[Arc<EndpointState>], weights: &[u32]) -> Vec<(u64, usize)> {
    let total: u64 = weights
        .iter()
        .map(|w| u64::from((*w).max(1)))
        .sum::<u64>()
        .max(1);
    let mut ring = Vec::with_capacity(RING_SIZE + endpoints.len());
    for (i, e) in endpoints.iter().enumerate() {
        let share = (RING_SIZE as u64 * u64::from(weights[i].max(1))).div_ceil(total);
        for replica in 0..share {
            ring.push((rand::hash(format!("{}_{replica}", e.addr).as_bytes()), i));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev's permutation fill: each endpoint takes its preferred free slots in turn.
fn build_maglev(endpoints: &[Arc<EndpointState>], weights: &[u32]) -> Vec<u32> {
    let m = MAGLEV_SIZE as u64;
    let mut table = vec![u32::MAX; MAGLEV_SIZE];
    if endpoints.is_empty() {
        return vec![0; MAGLEV_SIZE];
    }
    let prefs: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| {
            let name = e.addr.to_string();
            let offset = rand::hash(name.as_bytes()) % m;
            let skip = rand::hash(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; endpoints.len()];
    // Weighted Maglev: an endpoint takes as many slots per round as its reduced weight.
    let g = weights
        .iter()
        .copied()
        .filter(|w| *w > 0)
        .fold(0, gcd)
        .max(1);
    let turns: Vec<u32> = weights.iter().map(|w| (w / g).clamp(1, 16)).collect();
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in prefs.iter().enumerate() {
            for _ in 0..turns[i] {
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == MAGLEV_SIZE {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::HashPolicy;

    fn cluster(n: usize) -> (ClusterState, Vec<Arc<EndpointState>>) {
        let state = ClusterState::default();
        let eps = (0..n)
            .map(|i| state.endpoint(format!("127.0.0.1:{}", 1000 + i).parse().expect("addr")))
            .collect();
        (state, eps)
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let (state, eps) = cluster(3);
        let b = Balancer::build(&LoadBalancer::RoundRobin, &eps, &[1, 1, 1], 0);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[b.pick(&state, &eps, None, &[]).expect("pick")] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        for algorithm in [HashAlgorithm::RingHash, HashAlgorithm::Maglev] {
            let (state, eps) = cluster(4);
            let lb = LoadBalancer::ConsistentHash(HashPolicy {
                key: Default::default(),
                algorithm: algorithm.clone(),
            });
            let b = Balancer::build(&lb, &eps, &[1, 1, 1, 1], 0);
            let mut seen = [0; 4];
            for key in 0..2000u64 {
                let h = rand::hash(&key.to_le_bytes());
                let first = b.pick(&state, &eps, Some(h), &[]).expect("pick");
                assert_eq!(b.pick(&state, &eps, Some(h), &[]), Some(first));
                seen[first] += 1;
            }
            assert!(seen.iter().all(|n| *n > 300), "{algorithm:?}: {seen:?}");
        }
    }

    #[test]
    fn retries_avoid_hosts_already_tried() {
        let (state, eps) = cluster(2);
        let b = Balancer::build(&LoadBalancer::Random, &eps, &[1, 1], 0);
        for _ in 0..50 {
            assert_eq!(b.pick(&state, &eps, None, &[0]), Some(1));
        }
        // With every host tried, a retry may reuse one.
        assert!(b.pick(&state, &eps, None, &[0, 1]).is_some());
    }

    #[test]
    fn below_min_health_ejections_are_ignored() {
        use crate::state::{Outcome, record_outcome};
        let (state, eps) = cluster(3);
        let policy = trellis_model::OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_ms: 60_000,
            max_ejection_percent: 100,
            ..Default::default()
        };
        for e in &eps[..2] {
            record_outcome(&state, &eps, e, Some(&policy), Outcome::Status(500));
        }
        let strict = Balancer::build(&LoadBalancer::RoundRobin, &eps, &[1, 1, 1], 0);
        assert!((0..30).all(|_| strict.pick(&state, &eps, None, &[]) == Some(2)));
        // One healthy of three is below 50%: the proxy panics and uses every endpoint.
        let panicking = Balancer::build(&LoadBalancer::RoundRobin, &eps, &[1, 1, 1], 50);
        let picked: std::collections::BTreeSet<usize> = (0..30)
            .filter_map(|_| panicking.pick(&state, &eps, None, &[]))
            .collect();
        assert_eq!(picked.len(), 3);
    }
}
