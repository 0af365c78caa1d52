//! Pacing of a rate-limited publisher: how many messages are due at a given elapsed time,
//! and when the next one is. Pure (elapsed time passed in), so the schedule is testable.
//!
//! The schedule is absolute (message `n` is due at `offset + n / rate`), not "sleep one
//! interval after each send": a late wake-up is caught up by sending the messages that fell
//! due meanwhile, so the average rate holds even when the timer is coarse.

use std::time::Duration;

/// A constant-rate schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacer {
    /// Messages per second for this publisher.
    rate: f64,
    /// Where this publisher's schedule starts, so many publishers do not fire in lock-step.
    offset: Duration,
}

impl Pacer {
    /// `rate` must be positive.
    pub(crate) fn new(rate: f64, offset: Duration) -> Pacer {
        Pacer { rate, offset }
    }

    /// Messages due (in total since the start) once `elapsed` has passed.
    pub(crate) fn due(&self, elapsed: Duration) -> u64 {
        match elapsed.checked_sub(self.offset) {
            None => 0,
            Some(t) => (t.as_secs_f64() * self.rate).floor() as u64 + 1,
        }
    }

    /// Elapsed time at which message number `n` (0-based) is due.
    pub(crate) fn at(&self, n: u64) -> Duration {
        self.offset + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_is_due_at_the_offset() {
        let p = Pacer::new(1000.0, Duration::from_millis(5));
        assert_eq!(p.due(Duration::from_millis(4)), 0);
        assert_eq!(p.due(Duration::from_millis(5)), 1);
        assert_eq!(p.at(0), Duration::from_millis(5));
    }

    #[test]
    fn one_second_at_a_rate_sends_that_many() {
        let p = Pacer::new(250.0, Duration::ZERO);
        // Messages 0..=249 are due before 1 s; message 250 is due exactly at 1 s.
        assert_eq!(p.due(Duration::from_millis(999)), 250);
        assert_eq!(p.at(250), Duration::from_secs(1));
    }

    #[test]
    fn a_late_wake_up_catches_up() {
        let p = Pacer::new(100.0, Duration::ZERO);
        // Asleep for 100 ms: 11 messages are due at once (0, 10, ..., 100 ms).
        assert_eq!(p.due(Duration::from_millis(100)), 11);
    }
}
