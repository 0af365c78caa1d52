//! Per-connection publish limits (`limits.max_publish_rate`, `limits.max_publish_bytes_rate`)
//! as token buckets, and a limiter for log lines that could otherwise flood the log. Pure:
//! time is passed in, so both are tested without sleeping.
//!
//! A limit is enforced by back-pressure: when a bucket is empty the session task stops
//! decoding and reading the client's socket until [`PublishLimiter::blocked_until`], so TCP
//! flow control slows the publisher and nothing is buffered on our side.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How often a limit that bites across many connections may log.
const SHARED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Tokens are counted in billionths so that refills by the nanosecond are exact integers
/// (no float drift that would make "ready at" land a hair early and spin).
const SCALE: i128 = 1_000_000_000;

/// A token bucket of `rate` tokens per second holding at most one second's worth.
///
/// A take may drive the bucket below zero (a packet larger than the bucket must still pass
/// eventually); the bucket is then blocked until it has refilled above zero, so the long-run
/// rate is exact and a burst is at most one second's worth plus one packet.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens per second (> 0).
    rate: i128,
    /// Tokens × [`SCALE`]; may be negative (debt).
    tokens: i128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be above 0.
    pub(crate) fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = i128::from(rate.max(1));
        TokenBucket {
            rate,
            tokens: rate * SCALE,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as i128;
        self.last = self.last.max(now);
        // rate tokens per second = rate × SCALE scaled tokens per 1e9 ns = rate per ns.
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * SCALE);
    }

    /// Takes `n` tokens, going into debt if there are fewer.
    pub(crate) fn take(&mut self, now: Instant, n: u64) {
        self.refill(now);
        self.tokens -= i128::from(n) * SCALE;
    }

    /// `None` while tokens are left; otherwise the instant the bucket has refilled above
    /// zero.
    pub(crate) fn blocked_until(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        if self.tokens > 0 {
            return None;
        }
        // Nanoseconds until tokens > 0: (-tokens) / rate, rounded up, plus one.
        let ns = (-self.tokens) / self.rate + 1;
        Some(now + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }
}

/// The publish limits of one connection: messages per second and bytes per second, each
/// optional.
#[derive(Debug, Clone)]
pub(crate) struct PublishLimiter {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl PublishLimiter {
    /// Limits from the config; 0 means no limit of that kind.
    pub(crate) fn new(max_rate: u64, max_bytes_rate: u64, now: Instant) -> PublishLimiter {
        PublishLimiter {
            messages: (max_rate > 0).then(|| TokenBucket::new(max_rate, now)),
            bytes: (max_bytes_rate > 0).then(|| TokenBucket::new(max_bytes_rate, now)),
        }
    }

    /// Whether any limit is configured (the task skips the bookkeeping otherwise).
    pub(crate) fn is_active(&self) -> bool {
        self.messages.is_some() || self.bytes.is_some()
    }

    /// Counts one received PUBLISH of `size` bytes (the whole packet).
    pub(crate) fn publish(&mut self, now: Instant, size: usize) {
        if let Some(b) = &mut self.messages {
            b.take(now, 1);
        }
        if let Some(b) = &mut self.bytes {
            b.take(now, size as u64);
        }
    }

    /// `None` when the next packet may be read now; otherwise when reading may resume.
    pub(crate) fn blocked_until(&mut self, now: Instant) -> Option<Instant> {
        let m = self.messages.as_mut().and_then(|b| b.blocked_until(now));
        let b = self.bytes.as_mut().and_then(|b| b.blocked_until(now));
        m.max(b)
    }
}

/// Lets a repeated log line through at most once per `every`, counting what it held back, so
/// a limit that bites thousands of times a second logs a line a minute with a count.
#[derive(Debug, Clone)]
pub(crate) struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter that lets one line through per `every`.
    pub(crate) fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line should be logged now, `n` being how many were held back since
    /// the last one; `None` to hold this one back.
    pub(crate) fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Broker-wide log limiters for limits that bite across many connections at once (a
/// connection flood, a slow subscriber of a busy topic); per-connection events log through
/// the connection's own [`LogLimiter`].
#[derive(Debug)]
pub(crate) struct LimitLogs {
    pub(crate) connect_timeout: Mutex<LogLimiter>,
    pub(crate) connections_refused: Mutex<LogLimiter>,
    pub(crate) queue_full: Mutex<LogLimiter>,
    /// Failed TLS/WebSocket handshakes and bad PROXY headers: cheap for a scanner to cause.
    pub(crate) handshake_failed: Mutex<LogLimiter>,
}

impl Default for LimitLogs {
    fn default() -> Self {
        let l = || Mutex::new(LogLimiter::new(SHARED_LOG_EVERY));
        LimitLogs {
            connect_timeout: l(),
            connections_refused: l(),
            queue_full: l(),
            handshake_failed: l(),
        }
    }
}

/// [`LogLimiter::check`] on a shared limiter, now.
pub(crate) fn should_log(limiter: &Mutex<LogLimiter>) -> Option<u64> {
    limiter.lock().check(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_lets_one_seconds_worth_through_at_once_then_blocks() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert_eq!(b.blocked_until(t0), None);
            b.take(t0, 1);
        }
        assert_eq!(b.blocked_until(t0), Some(t0 + Duration::from_nanos(1)));
        // After 100 ms one token is back, and it is used up again.
        assert_eq!(b.blocked_until(t0 + ms(100)), None);
        b.take(t0 + ms(100), 1);
        assert!(b.blocked_until(t0 + ms(100)).is_some());
    }

    #[test]
    fn bucket_in_debt_is_blocked_until_it_refills_above_zero() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        // One 3,000-byte packet against 1,000 bytes/s: 2,000 in debt, 2 s to pay back.
        b.take(t0, 3000);
        let until = b.blocked_until(t0).unwrap();
        assert!(until > t0 + ms(1999) && until <= t0 + ms(2001), "{until:?}");
        assert!(b.blocked_until(t0 + ms(1500)).is_some());
        assert_eq!(b.blocked_until(until), None);
    }

    #[test]
    fn bucket_never_holds_more_than_one_second_after_idling() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(b.blocked_until(later), None);
            b.take(later, 1);
        }
        assert!(b.blocked_until(later).is_some());
    }

    #[test]
    fn long_run_rate_is_the_configured_one() {
        // Take a message whenever allowed, for 10 simulated seconds.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, t0);
        let mut now = t0;
        let mut taken = 0;
        while now < t0 + Duration::from_secs(10) {
            match b.blocked_until(now) {
                None => {
                    b.take(now, 1);
                    taken += 1;
                }
                Some(until) => now = until,
            }
        }
        // 50 at once (the full bucket) + 50/s for 10 s.
        assert!((549..=551).contains(&taken), "{taken}");
    }

    #[test]
    fn time_going_backwards_does_not_add_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, t0);
        b.take(t0, 1);
        assert!(b.blocked_until(t0 - Duration::from_secs(5)).is_some());
        assert!(b.blocked_until(t0).is_some());
    }

    #[test]
    fn limiter_is_blocked_by_whichever_limit_is_stricter() {
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(100, 1000, t0);
        assert!(l.is_active());
        // 500 bytes twice: the byte bucket is empty after two messages.
        l.publish(t0, 500);
        assert_eq!(l.blocked_until(t0), None);
        l.publish(t0, 500);
        let until = l.blocked_until(t0).unwrap();
        assert!(until <= t0 + ms(1), "{until:?}");
        // Tiny messages: the message bucket decides.
        let mut l = PublishLimiter::new(2, 1_000_000, t0);
        l.publish(t0, 10);
        l.publish(t0, 10);
        let until = l.blocked_until(t0).unwrap();
        assert!(until > t0 && until <= t0 + ms(1), "{until:?}");
        l.publish(until, 10);
        let until2 = l.blocked_until(until).unwrap();
        assert!(until2 >= until + ms(499), "{until2:?}");
    }

    #[test]
    fn no_limits_never_block() {
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(0, 0, t0);
        assert!(!l.is_active());
        for _ in 0..10_000 {
            l.publish(t0, 1_000_000);
        }
        assert_eq!(l.blocked_until(t0), None);
    }

    #[test]
    fn log_limiter_lets_one_line_through_per_interval_with_the_held_back_count() {
        let t0 = Instant::now();
        let mut log = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(log.check(t0), Some(0));
        assert_eq!(log.check(t0 + ms(10)), None);
        assert_eq!(log.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(log.check(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(log.check(t0 + Duration::from_secs(61)), None);
    }
}
