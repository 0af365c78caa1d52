//! Per-device uplink rate limit: a token bucket per device, time passed in.
//!
//! Alibaba's platform answers a device that sends faster than its quota with code 429 and
//! drops the message; so does thingmq, so one chatty device cannot fill the history writer's
//! queue for the whole fleet. Replies to the platform's own requests are never throttled
//! (the platform asked for them).

use std::collections::HashMap;
use std::hash::Hash;

/// Token buckets keyed by device.
#[derive(Debug)]
pub struct Throttle<K> {
    /// Tokens added per second; 0 turns the limit off.
    rate_per_sec: u32,
    /// Bucket size: how many messages a device may send at once after a quiet spell.
    burst: u32,
    buckets: HashMap<K, Bucket>,
}

impl<K> Default for Throttle<K> {
    /// No limit.
    fn default() -> Self {
        Self {
            rate_per_sec: 0,
            burst: 1,
            buckets: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths (integer arithmetic: no drift, no float in the hot path).
    milli_tokens: u64,
    last_ms: i64,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    /// A limit of `rate_per_sec` messages per second with bursts of `burst` (at least 1).
    /// `rate_per_sec = 0` allows everything.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate_per_sec,
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether `key` may send a message at `now_ms`; takes a token when it may.
    pub fn allow(&mut self, key: &K, now_ms: i64) -> bool {
        if self.rate_per_sec == 0 {
            return true;
        }
        let full = u64::from(self.burst) * 1000;
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            milli_tokens: full,
            last_ms: now_ms,
        });
        // A clock step backwards refills nothing and takes nothing away.
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.last_ms)).unwrap_or(0);
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(self.rate_per_sec)))
            .min(full);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Forgets a device (it disconnected or was deleted): the map holds connected devices only.
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Devices with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no device has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let mut t = Throttle::new(10, 5);
        assert_eq!((0..8).filter(|_| t.allow(&"d", T)).count(), 5);
        // 10/s: one token per 100 ms.
        assert!(!t.allow(&"d", T + 99));
        assert!(t.allow(&"d", T + 100));
        assert!(!t.allow(&"d", T + 150));
        // A quiet second refills the bucket to its size, not beyond.
        assert_eq!((0..20).filter(|_| t.allow(&"d", T + 10_000)).count(), 5);
    }

    #[test]
    fn devices_have_their_own_buckets() {
        let mut t = Throttle::new(1, 1);
        assert!(t.allow(&"a", T));
        assert!(!t.allow(&"a", T));
        assert!(t.allow(&"b", T));
        t.forget(&"a");
        assert!(t.allow(&"a", T));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn zero_rate_is_no_limit_and_keeps_no_state() {
        let mut t = Throttle::new(0, 1);
        assert!((0..1000).all(|_| t.allow(&"d", T)));
        assert!(t.is_empty());
    }

    #[test]
    fn a_clock_step_backwards_neither_refills_nor_panics() {
        let mut t = Throttle::new(1, 1);
        assert!(t.allow(&"d", T));
        assert!(!t.allow(&"d", T - 60_000));
        assert!(!t.allow(&"d", T + 500));
        assert!(t.allow(&"d", T + 1000));
    }
}
