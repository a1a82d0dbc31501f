//! When to run a plugin next.
//!
//! After a success: at [`REFRESH_FRACTION`] of the answer's `cacheDuration`, so a
//! failing refresh has the remaining fifth of the lifetime to be retried before the
//! copies' credentials expire; bounded below by the entry's `minRefresh` (a plugin is a
//! process and usually a cloud API call: a tiny `cacheDuration` must not become a hot
//! loop) and above by `maxRefresh`. Without a `cacheDuration` the answer is refreshed
//! every `maxRefresh`; with `0s` (the kubelet would not cache it at all) every
//! `minRefresh`.
//!
//! After a failure: exponential backoff from [`BACKOFF_FIRST`], doubling, at most
//! [`BACKOFF_MAX`] (or `maxRefresh` if smaller), with "equal jitter" (a uniformly random
//! point in the upper half of each step), so many entries failing together (a cloud API
//! outage) do not retry in lockstep. A failure never changes what the copies hold.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::response::Lifetime;

pub(crate) const REFRESH_FRACTION: f64 = 0.8;
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait after a successful fetch.
pub(crate) fn after_success(lifetime: Lifetime, min: Duration, max: Duration) -> Duration {
    match lifetime {
        Lifetime::Unspecified => max,
        Lifetime::DoNotCache => min,
        Lifetime::For(d) => d.mul_f64(REFRESH_FRACTION).clamp(min, max),
    }
}

/// Failed attempts in a row and the waits between them.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    failures: u32,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(max_refresh: Duration) -> Backoff {
        Backoff {
            failures: 0,
            cap: BACKOFF_MAX.min(max_refresh).max(BACKOFF_FIRST),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The un-jittered step after the next failure.
    fn step(&self) -> Duration {
        BACKOFF_FIRST
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap)
    }

    /// Records a failure and returns the wait before the next attempt; `random` is any
    /// uniformly distributed number (see [`random`]).
    pub(crate) fn failed(&mut self, random: u64) -> Duration {
        let step = self.step();
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let spread = (step - half).as_millis().max(1) as u64;
        half + Duration::from_millis(random % spread)
    }
}

/// A random number from the process's hash seed: jitter needs no cryptographic quality,
/// only different values per call and per process.
pub(crate) fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn refresh_at_four_fifths_within_floor_and_ceiling() {
        let (min, max) = (S(30), S(3600));
        assert_eq!(after_success(Lifetime::For(S(600)), min, max), S(480));
        // ECR's 12 h token: the ceiling
        assert_eq!(after_success(Lifetime::For(S(43200)), min, max), max);
        // a 10 s token: the floor wins (a hot loop is worse; the README says so)
        assert_eq!(after_success(Lifetime::For(S(10)), min, max), min);
        assert_eq!(after_success(Lifetime::Unspecified, min, max), max);
        assert_eq!(after_success(Lifetime::DoNotCache, min, max), min);
        assert_eq!(
            after_success(Lifetime::For(S(5)), S(1), max),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_resets() {
        let mut b = Backoff::new(S(3600));
        let mut lows = Vec::new();
        let mut highs = Vec::new();
        for _ in 0..12 {
            let step = b.step();
            let mut probe = b.clone();
            lows.push(probe.failed(0));
            let mut probe = b.clone();
            highs.push(probe.failed(u64::MAX));
            let d = b.failed(random());
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        assert_eq!(lows[0], Duration::from_millis(500));
        assert_eq!(lows[1], S(1));
        assert_eq!(lows[2], S(2));
        assert_eq!(*lows.last().unwrap(), BACKOFF_MAX / 2, "capped");
        assert!(highs.iter().zip(&lows).all(|(h, l)| h >= l));
        b.reset();
        assert!(b.failed(0) <= S(1));
        // a small maxRefresh caps the backoff too
        let mut b = Backoff::new(S(10));
        for _ in 0..10 {
            assert!(b.failed(random()) <= S(10));
        }
    }

    #[test]
    fn random_varies() {
        let a: std::collections::HashSet<u64> = (0..8).map(|_| random()).collect();
        assert!(a.len() > 1);
    }
}
