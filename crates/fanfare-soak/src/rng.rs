//! The soak's one source of randomness: SplitMix64, written here so that a seed means the same
//! schedule on every machine and with every dependency version.

use std::time::Duration;

/// A seeded pseudo-random generator (SplitMix64). Not for cryptography: it only has to be
/// fast, well spread and the same everywhere for the same seed.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        // Multiply-shift instead of `%`: no modulo bias worth speaking of, and no division.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let low_ms = low.as_millis() as u64;
        let high_ms = (high.as_millis() as u64).max(low_ms);
        Duration::from_millis(low_ms + self.below(high_ms - low_ms + 1))
    }

    /// One item of `items`, `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let index = self.below(items.len() as u64) as usize;
        items.get(index)
    }

    /// True with probability one half.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A new generator for one part of the soak (a viewer), independent of this one's stream.
    pub fn fork(&mut self, salt: u64) -> SeededRng {
        SeededRng::new(self.next_u64() ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_another_seed_others() {
        let first: Vec<u64> = (0..8)
            .scan(SeededRng::new(7), |rng, _| Some(rng.next_u64()))
            .collect();
        let again: Vec<u64> = (0..8)
            .scan(SeededRng::new(7), |rng, _| Some(rng.next_u64()))
            .collect();
        let other: Vec<u64> = (0..8)
            .scan(SeededRng::new(8), |rng, _| Some(rng.next_u64()))
            .collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn bounded_draws_stay_in_their_range() {
        let mut rng = SeededRng::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            let drawn = rng.between(Duration::from_secs(3), Duration::from_secs(15));
            assert!(drawn >= Duration::from_secs(3) && drawn <= Duration::from_secs(15));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.pick::<u8>(&[]), None);
    }
}
