//! One timer for the deadlines of every session (keep-alive, session expiry, will delay).
//!
//! A tokio `Sleep` per session was 112 bytes (128 with the allocator's header) of every idle
//! connection. Here a session has one entry in an ordered set and its waker in a hash map
//! (~60 bytes in all), and one task, the [`drive`] loop, sleeps until the earliest entry is
//! due, removes the due ones and wakes their sessions.
//!
//! The wakers are not the ordered map's values: a B-tree leaf of (key, waker) pairs is 368
//! bytes, in the allocator's 384-byte class with the session tasks' tokio cells, and the leaves
//! that outlive a connect storm kept most of those cells' pages from going back to the system
//! once the sessions hibernated (docs/benchmarks.md). Keys alone make 192-byte leaves; the map
//! of wakers is one large table of its own.
//!
//! Entries are not moved when a deadline moves later (a keep-alive deadline moves with
//! every packet): the session is woken at the old time, sees that its deadline has not come
//! and registers the new one. A deadline that moves earlier is registered at once.
//!
//! Time is counted in whole milliseconds from [`Timers::base`]: a deadline is rounded up, the
//! driver's clock down, so a deadline the driver reports as passed has passed.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::sync::{watch, Notify};

/// A point in time: milliseconds since [`Timers::base`], at least 1 (0 means "none" in
/// [`Registration`]).
type Tick = u64;

/// The deadlines of all sessions.
#[derive(Debug)]
pub(crate) struct Timers {
    base: Instant,
    entries: Mutex<Entries>,
    /// The driver's clock: every entry up to this tick has been woken.
    now: AtomicU64,
    /// Tells the driver that an entry earlier than the one it sleeps until was added.
    earlier: Notify,
}

/// Every registered session's deadline and waker; a session has at most one entry.
#[derive(Debug, Default)]
struct Entries {
    /// (tick, session id), earliest first.
    order: BTreeSet<(Tick, u64)>,
    /// By session id.
    wakers: HashMap<u64, Waker>,
}

impl Entries {
    fn insert(&mut self, at: Tick, id: u64, waker: Waker) {
        self.order.insert((at, id));
        self.wakers.insert(id, waker);
    }

    fn remove(&mut self, at: Tick, id: u64) {
        if self.order.remove(&(at, id)) {
            self.wakers.remove(&id);
        }
    }

    /// The earliest entry's tick.
    fn first(&self) -> Option<Tick> {
        self.order.first().map(|k| k.0)
    }

    /// Removes and returns the waker of the earliest entry if it is due at `tick`.
    fn pop_due(&mut self, tick: Tick) -> Option<Waker> {
        while let Some(&(at, id)) = self.order.first() {
            if at > tick {
                return None;
            }
            self.order.pop_first();
            if let Some(waker) = self.wakers.remove(&id) {
                return Some(waker);
            }
        }
        None
    }
}

/// A session's entry in [`Timers`]: the tick it is registered at, 0 for none. One word, so
/// that it costs the session task no more than the pointer to a `Sleep` it replaces.
#[derive(Debug, Default)]
pub(crate) struct Registration(Tick);

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            base: Instant::now(),
            entries: Mutex::new(Entries::default()),
            now: AtomicU64::new(0),
            earlier: Notify::new(),
        }
    }

    /// `at` in milliseconds since the timers' start, rounded down.
    pub(crate) fn now_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` milliseconds after the timers' start.
    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.base + std::time::Duration::from_millis(ms)
    }

    /// `at` in ticks, rounded up (so that it is not reported due early), and at least 1.
    fn tick_of(&self, at: Instant) -> Tick {
        let d = at.saturating_duration_since(self.base);
        let ms = d.as_nanos().div_ceil(1_000_000);
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }

    /// `Ready` once `deadline` has passed; otherwise makes sure the session `id` (whose task
    /// is `cx`'s) is woken by then. `reg` is the session's entry.
    pub(crate) fn poll(
        &self,
        reg: &mut Registration,
        id: u64,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let at = self.tick_of(deadline);
        let now = self.now.load(Ordering::Acquire);
        if at <= now {
            self.cancel(reg, id);
            return Poll::Ready(());
        }
        // Still waiting in the map, and due no later than the deadline: it will wake us in
        // time (the task's waker does not change between polls; tokio's is per task).
        if reg.0 > now && reg.0 <= at {
            return Poll::Pending;
        }
        let mut entries = self.entries.lock();
        if reg.0 != 0 {
            entries.remove(reg.0, id);
        }
        entries.insert(at, id, cx.waker().clone());
        let first = entries.first() == Some(at);
        drop(entries);
        reg.0 = at;
        if first {
            self.earlier.notify_one();
        }
        // The driver may have moved past `at` between our look at its clock and the insert,
        // in which case it did not see the entry: look again.
        if self.now.load(Ordering::Acquire) >= at {
            self.cancel(reg, id);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Removes the session's entry, if any (its deadline is gone or the session is).
    pub(crate) fn cancel(&self, reg: &mut Registration, id: u64) {
        if reg.0 != 0 {
            self.entries.lock().remove(reg.0, id);
            reg.0 = 0;
        }
    }

    /// Entries in the map (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        let entries = self.entries.lock();
        assert_eq!(entries.order.len(), entries.wakers.len());
        entries.order.len()
    }

    /// Wakes every entry due at `now`; the tick of the next entry, if any.
    fn fire(&self, now: Instant) -> Option<Tick> {
        let d = now.saturating_duration_since(self.base);
        let tick = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        let next = {
            let mut entries = self.entries.lock();
            // Published under the lock: a session that registers after this sees the new
            // clock (and finds itself due), one that registered before is in the map.
            self.now.store(tick, Ordering::Release);
            while let Some(waker) = entries.pop_due(tick) {
                due.push(waker);
            }
            entries.first()
        };
        for w in due {
            w.wake();
        }
        next
    }
}

/// Runs the timers until `shutdown`: sleeps until the earliest entry, or until an earlier
/// one is added.
pub(crate) async fn drive(timers: Arc<Timers>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = timers.fire(Instant::now());
        let sleep = async {
            match next {
                Some(t) => {
                    let at = timers.base + std::time::Duration::from_millis(t);
                    tokio::time::sleep_until(at.into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = timers.earlier.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::time::Duration;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn an_entry_is_woken_when_due_and_not_before() {
        let t = Timers::new();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut reg = Registration::default();
        let deadline = t.base + Duration::from_millis(100);
        assert!(t.poll(&mut reg, 1, deadline, &mut cx).is_pending());
        assert_eq!(t.fire(t.base + Duration::from_millis(99)), Some(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(t.fire(t.base + Duration::from_millis(100)), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(t.poll(&mut reg, 1, deadline, &mut cx).is_ready());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_later_deadline_keeps_the_earlier_entry_and_is_registered_when_it_fires() {
        let t = Timers::new();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut reg = Registration::default();
        assert!(t
            .poll(&mut reg, 1, t.base + Duration::from_millis(10), &mut cx)
            .is_pending());
        let later = t.base + Duration::from_millis(50);
        assert!(t.poll(&mut reg, 1, later, &mut cx).is_pending());
        assert_eq!(t.len(), 1, "the entry is not moved later");
        t.fire(t.base + Duration::from_millis(10));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken at the old time");
        assert!(t.poll(&mut reg, 1, later, &mut cx).is_pending());
        assert_eq!(t.fire(t.base + Duration::from_millis(20)), Some(50));
        t.fire(later);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(t.poll(&mut reg, 1, later, &mut cx).is_ready());
    }

    #[test]
    fn an_earlier_deadline_replaces_the_entry() {
        let t = Timers::new();
        let (_count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut reg = Registration::default();
        assert!(t
            .poll(&mut reg, 7, t.base + Duration::from_secs(60), &mut cx)
            .is_pending());
        assert!(t
            .poll(&mut reg, 7, t.base + Duration::from_millis(5), &mut cx)
            .is_pending());
        assert_eq!(t.len(), 1);
        assert_eq!(t.fire(t.base), Some(5));
        t.cancel(&mut reg, 7);
        assert_eq!(t.len(), 0);
        assert_eq!(t.fire(t.base), None);
    }

    #[test]
    fn a_deadline_is_not_reported_due_within_its_last_millisecond() {
        let t = Timers::new();
        let (_count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut reg = Registration::default();
        let deadline = t.base + Duration::from_micros(10_500);
        assert!(t.poll(&mut reg, 1, deadline, &mut cx).is_pending());
        t.fire(t.base + Duration::from_micros(10_900));
        assert!(t.poll(&mut reg, 1, deadline, &mut cx).is_pending());
        t.fire(t.base + Duration::from_millis(11));
        assert!(t.poll(&mut reg, 1, deadline, &mut cx).is_ready());
    }

    #[tokio::test]
    async fn the_driver_wakes_a_task_at_its_deadline() {
        let t = Arc::new(Timers::new());
        let (stop, shutdown) = watch::channel(false);
        let driver = tokio::spawn(drive(t.clone(), shutdown));
        let deadline = Instant::now() + Duration::from_millis(30);
        let mut reg = Registration::default();
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| t.poll(&mut reg, 1, deadline, cx)),
        )
        .await
        .expect("woken");
        assert!(Instant::now() >= deadline);
        let _ = stop.send(true);
        driver.await.unwrap();
    }
    #[derive(Debug, Clone)]
    enum Op {
        Poll { id: usize, ms: u64 },
        Cancel { id: usize },
        Fire { ms: u64 },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..6usize, 1..60u64).prop_map(|(id, ms)| Op::Poll { id, ms }),
            (0..6usize).prop_map(|id| Op::Cancel { id }),
            (0..8u64).prop_map(|ms| Op::Fire { ms }),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of registrations, cancellations and firings: the entries are
        /// exactly the registrations not yet due, a firing wakes exactly the sessions whose
        /// registration came due since the last one, and it reports the earliest left.
        #[test]
        fn entries_match_the_sessions_registrations(ops in proptest::collection::vec(op(), 1..80)) {
            let t = Timers::new();
            let wakers: Vec<_> = (0..6).map(|_| waker()).collect();
            let mut regs: Vec<Registration> = (0..6).map(|_| Registration::default()).collect();
            let mut clock = 0u64;
            for op in ops {
                match op {
                    Op::Poll { id, ms } => {
                        let mut cx = Context::from_waker(&wakers[id].1);
                        let deadline = t.base + Duration::from_millis(clock + ms);
                        let _ = t.poll(&mut regs[id], id as u64, deadline, &mut cx);
                    }
                    Op::Cancel { id } => t.cancel(&mut regs[id], id as u64),
                    Op::Fire { ms } => {
                        let before: Vec<usize> =
                            wakers.iter().map(|w| w.0 .0.load(Ordering::SeqCst)).collect();
                        let due: Vec<bool> = regs.iter().map(|r| r.0 > clock && r.0 <= clock + ms).collect();
                        clock += ms;
                        let next = t.fire(t.base + Duration::from_millis(clock));
                        for id in 0..6 {
                            let woken = wakers[id].0 .0.load(Ordering::SeqCst) - before[id];
                            proptest::prop_assert_eq!(woken, usize::from(due[id]), "session {}", id);
                        }
                        let earliest = regs.iter().map(|r| r.0).filter(|&at| at > clock).min();
                        proptest::prop_assert_eq!(next, earliest);
                    }
                }
                let live = regs.iter().filter(|r| r.0 > t.now.load(Ordering::Acquire)).count();
                proptest::prop_assert_eq!(t.len(), live);
            }
        }
    }
}
