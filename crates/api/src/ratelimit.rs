//! Login rate limits: a token bucket per client address and one per user name, so neither
//! one address trying many names nor many addresses trying one name gets far. Pure: the
//! caller passes the time in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A bucket of `capacity` tokens refilled at one token per `refill`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// How big a bucket is and how fast it refills.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Attempts allowed in a burst.
    pub(crate) capacity: u32,
    /// Time for one attempt to come back.
    pub(crate) refill: Duration,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate.capacity),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let gained = elapsed.as_secs_f64() / rate.refill.as_secs_f64();
        self.tokens = (self.tokens + gained).min(f64::from(rate.capacity));
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(rate.refill.mul_f64(1.0 - self.tokens))
        }
    }

    /// Whether the bucket is full again (and so can be forgotten).
    fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= f64::from(rate.capacity)
    }
}

/// Buckets by key, bounded: when `max_keys` is reached, full buckets are forgotten (they
/// hold nothing a new bucket would not) and, if that is not enough, the key is refused.
#[derive(Debug)]
pub(crate) struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub(crate) fn new(rate: Rate, max_keys: usize) -> Self {
        Limiter {
            rate,
            max_keys,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub(crate) fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            let rate = self.rate;
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= self.max_keys {
                return Err(self.rate.refill);
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        capacity: 3,
        refill: Duration::from_secs(10),
    };

    #[test]
    fn bucket_allows_a_burst_then_refuses_until_a_token_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            assert_eq!(b.take(RATE, t0), Ok(()));
        }
        assert_eq!(b.take(RATE, t0), Err(Duration::from_secs(10)));
        let wait = b.take(RATE, t0 + Duration::from_secs(4)).unwrap_err();
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert_eq!(b.take(RATE, t0 + Duration::from_secs(10)), Ok(()));
        assert!(b.take(RATE, t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn bucket_never_holds_more_than_its_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(RATE, later), Ok(()));
        }
        assert!(b.take(RATE, later).is_err());
    }

    #[test]
    fn time_going_backwards_does_not_add_tokens() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut b = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            b.take(RATE, t0).unwrap();
        }
        assert!(b.take(RATE, t0 - Duration::from_secs(50)).is_err());
        assert!(b.take(RATE, t0).is_err());
    }

    #[test]
    fn limiter_keeps_a_bucket_per_key() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RATE, 100);
        for _ in 0..3 {
            l.take("a", t0).unwrap();
        }
        assert!(l.take("a", t0).is_err());
        assert_eq!(l.take("b", t0), Ok(()));
    }

    #[test]
    fn limiter_forgets_full_buckets_when_at_its_bound_and_refuses_when_none_are() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RATE, 2);
        l.take(1, t0).unwrap();
        l.take(2, t0).unwrap();
        assert!(l.take(3, t0).is_err(), "no room and no full bucket");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.take(3, later), Ok(()));
        assert_eq!(l.buckets.len(), 1);
    }
}
