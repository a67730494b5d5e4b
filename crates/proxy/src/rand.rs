//! A fast per-thread random source for load balancing, weighted picks and fault
//! percentages. Not for secrets.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    mix(t ^ addr.rotate_left(32)) | 1
}

/// SplitMix64's finaliser: spreads bits of any input evenly.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniformly random u64 (xorshift64*).
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A uniformly random number in `0..n` (n > 0).
pub fn below(n: u64) -> u64 {
    ((next_u64() as u128 * n as u128) >> 64) as u64
}

/// True with probability `percent`/100.
pub fn chance(percent: f64) -> bool {
    if percent <= 0.0 {
        return false;
    }
    if percent >= 100.0 {
        return true;
    }
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 < percent
}

/// A stable 64-bit hash of bytes (FNV-1a, then mixed), for consistent hashing.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_lands_near_its_percentage() {
        let n = 100_000;
        let hits = (0..n).filter(|_| chance(10.0)).count() as f64;
        // 10% of 100k: sd = sqrt(n p (1-p)) ~ 95; allow 5 sd.
        assert!((hits - 10_000.0).abs() < 5.0 * 95.0, "{hits}");
        assert!(!(0..1000).any(|_| chance(0.0)));
        assert!((0..1000).all(|_| chance(100.0)));
    }

    #[test]
    fn below_stays_in_range() {
        assert!((0..10_000).all(|_| below(7) < 7));
    }
}
