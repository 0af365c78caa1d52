//! One timer for the deadlines of every session (keep-alive, session expiry, will delay).
//!
//! A tokio `Sleep` per session was 112 bytes (128 with the allocator's header) of every idle
//! connection. Here a session has one entry in an ordered set (~30 bytes), and one task, the
//! [`drive`] loop, sleeps until the earliest entry is due, removes the due ones and wakes
//! their sessions.
//!
//! An entry is the deadline and the session itself ([`Target`]), not a waker: a session is
//! woken through the waker its inbox holds, which its task leaves there before it looks at
//! its deadline (see [`Timers::poll`]). Wakers beside the keys made the B-tree's leaves
//! 368 bytes, in the allocator's 384-byte class with the session tasks' tokio cells, where
//! the leaves that outlived a connect storm kept most of those cells' pages from going back
//! to the system once the sessions hibernated; a hash map of wakers by session beside the
//! keys was ~46 bytes a session (docs/benchmarks.md).
//!
//! Entries are not moved when a deadline moves later (a keep-alive deadline moves with
//! every packet): the session is woken at the old time, sees that its deadline has not come
//! and registers the new one. A deadline that moves earlier is registered at once.
//!
//! Time is counted in whole milliseconds from [`Timers::base`]: a deadline is rounded up, the
//! driver's clock down, so a deadline the driver reports as passed has passed.

use parking_lot::Mutex;
use std::cmp::Ordering as Order;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::sync::{watch, Notify};

/// A point in time: milliseconds since [`Timers::base`], at least 1 (0 means "none" in
/// [`Registration`]).
type Tick = u64;

/// What an entry wakes when it comes due.
pub(crate) trait Target: Send + Sync + 'static {
    /// Wakes the task waiting for this target's deadline, if it is waiting.
    fn wake(&self);
    /// Its entry. Only the task that owns the target registers and cancels it.
    fn registration(&self) -> &Registration;
}

/// The deadlines of all sessions.
#[derive(Debug)]
pub(crate) struct Timers<T> {
    base: Instant,
    /// Every registered deadline, earliest first; a target has at most one.
    entries: Mutex<BTreeSet<Entry<T>>>,
    /// The driver's clock: every entry up to this tick has been woken.
    now: AtomicU64,
    /// Tells the driver that an entry earlier than the one it sleeps until was added.
    earlier: Notify,
}

/// A deadline and whose it is. Ordered by time, then by the target's address (unique while
/// the entry holds it): two words, so a B-tree leaf is 192 bytes.
#[derive(Debug)]
struct Entry<T> {
    at: Tick,
    target: Arc<T>,
}

impl<T> Entry<T> {
    fn key(&self) -> (Tick, usize) {
        (self.at, Arc::as_ptr(&self.target) as *const () as usize)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Order {
        self.key().cmp(&other.key())
    }
}

/// A target's entry in [`Timers`]: the tick it is registered at, 0 for none. Kept by the
/// target (a session's shared state, which has room for it) rather than its task, whose
/// size is tight (see the size test in `session_task.rs`). Atomic only to be shareable:
/// one task reads and writes it.
#[derive(Debug, Default)]
pub(crate) struct Registration(AtomicU64);

impl Registration {
    fn get(&self) -> Tick {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, at: Tick) {
        self.0.store(at, Ordering::Relaxed)
    }
}

impl<T: Target> Timers<T> {
    pub(crate) fn new() -> Timers<T> {
        Timers {
            base: Instant::now(),
            entries: Mutex::new(BTreeSet::new()),
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

    /// `Ready` once `deadline` has passed; otherwise makes sure `target` is woken by then.
    ///
    /// The caller's waker must be where [`Target::wake`] finds it *before* this is called:
    /// an entry that comes due between this call and the caller's waiting would otherwise
    /// wake nobody.
    pub(crate) fn poll(&self, target: &Arc<T>, deadline: Instant) -> Poll<()> {
        let reg = target.registration();
        let at = self.tick_of(deadline);
        let now = self.now.load(Ordering::Acquire);
        if at <= now {
            self.cancel(target);
            return Poll::Ready(());
        }
        // Still waiting in the set, and due no later than the deadline: it will wake us in
        // time.
        let registered = reg.get();
        if registered > now && registered <= at {
            return Poll::Pending;
        }
        let mut entries = self.entries.lock();
        if registered != 0 {
            entries.remove(&Entry {
                at: registered,
                target: target.clone(),
            });
        }
        entries.insert(Entry {
            at,
            target: target.clone(),
        });
        let first = entries.first().map(|e| e.at) == Some(at);
        drop(entries);
        reg.set(at);
        if first {
            self.earlier.notify_one();
        }
        // The driver may have moved past `at` between our look at its clock and the insert,
        // in which case it did not see the entry: look again.
        if self.now.load(Ordering::Acquire) >= at {
            self.cancel(target);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Removes the target's entry, if any (its deadline is gone or the session is).
    pub(crate) fn cancel(&self, target: &Arc<T>) {
        let reg = target.registration();
        let at = reg.get();
        if at != 0 {
            self.entries.lock().remove(&Entry {
                at,
                target: target.clone(),
            });
            reg.set(0);
        }
    }

    /// Entries in the set (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Wakes every entry due at `now`; the tick of the next entry, if any.
    fn fire(&self, now: Instant) -> Option<Tick> {
        let d = now.saturating_duration_since(self.base);
        let tick = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        let next = {
            let mut entries = self.entries.lock();
            // Published under the lock: a session that registers after this sees the new
            // clock (and finds itself due), one that registered before is in the set.
            self.now.store(tick, Ordering::Release);
            while entries.first().is_some_and(|e| e.at <= tick) {
                due.extend(entries.pop_first());
            }
            entries.first().map(|e| e.at)
        };
        // Outside the lock: waking a hibernating session revives it then and there.
        for e in due {
            e.target.wake();
        }
        next
    }
}

/// Runs the timers until `shutdown`: sleeps until the earliest entry, or until an earlier
/// one is added.
pub(crate) async fn drive<T: Target>(timers: Arc<Timers<T>>, mut shutdown: watch::Receiver<bool>) {
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
    use std::time::Duration;

    /// Counts its wake-ups.
    #[derive(Debug, Default)]
    struct Count(AtomicUsize, Registration);
    impl Target for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn registration(&self) -> &Registration {
            &self.1
        }
    }
    impl Count {
        fn woken(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Wakes a task (for the driver test).
    #[derive(Debug, Default)]
    struct Task(Mutex<Option<std::task::Waker>>, Registration);
    impl Target for Task {
        fn wake(&self) {
            if let Some(w) = self.0.lock().take() {
                w.wake();
            }
        }
        fn registration(&self) -> &Registration {
            &self.1
        }
    }

    #[test]
    fn an_entry_is_woken_when_due_and_not_before() {
        let t = Timers::<Count>::new();
        let count = Arc::new(Count::default());
        let deadline = t.base + Duration::from_millis(100);
        assert!(t.poll(&count, deadline).is_pending());
        assert_eq!(t.fire(t.base + Duration::from_millis(99)), Some(100));
        assert_eq!(count.woken(), 0);
        assert_eq!(t.fire(t.base + Duration::from_millis(100)), None);
        assert_eq!(count.woken(), 1);
        assert!(t.poll(&count, deadline).is_ready());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_later_deadline_keeps_the_earlier_entry_and_is_registered_when_it_fires() {
        let t = Timers::<Count>::new();
        let count = Arc::new(Count::default());
        assert!(t
            .poll(&count, t.base + Duration::from_millis(10))
            .is_pending());
        let later = t.base + Duration::from_millis(50);
        assert!(t.poll(&count, later).is_pending());
        assert_eq!(t.len(), 1, "the entry is not moved later");
        t.fire(t.base + Duration::from_millis(10));
        assert_eq!(count.woken(), 1, "woken at the old time");
        assert!(t.poll(&count, later).is_pending());
        assert_eq!(t.fire(t.base + Duration::from_millis(20)), Some(50));
        t.fire(later);
        assert_eq!(count.woken(), 2);
        assert!(t.poll(&count, later).is_ready());
    }

    #[test]
    fn an_earlier_deadline_replaces_the_entry() {
        let t = Timers::<Count>::new();
        let count = Arc::new(Count::default());
        assert!(t
            .poll(&count, t.base + Duration::from_secs(60))
            .is_pending());
        assert!(t
            .poll(&count, t.base + Duration::from_millis(5))
            .is_pending());
        assert_eq!(t.len(), 1);
        assert_eq!(t.fire(t.base), Some(5));
        t.cancel(&count);
        assert_eq!(t.len(), 0);
        assert_eq!(t.fire(t.base), None);
    }

    #[test]
    fn a_deadline_is_not_reported_due_within_its_last_millisecond() {
        let t = Timers::<Count>::new();
        let count = Arc::new(Count::default());
        let deadline = t.base + Duration::from_micros(10_500);
        assert!(t.poll(&count, deadline).is_pending());
        t.fire(t.base + Duration::from_micros(10_900));
        assert!(t.poll(&count, deadline).is_pending());
        t.fire(t.base + Duration::from_millis(11));
        assert!(t.poll(&count, deadline).is_ready());
    }

    #[tokio::test]
    async fn the_driver_wakes_a_task_at_its_deadline() {
        let t = Arc::new(Timers::<Task>::new());
        let (stop, shutdown) = watch::channel(false);
        let driver = tokio::spawn(drive(t.clone(), shutdown));
        let deadline = Instant::now() + Duration::from_millis(30);
        let task = Arc::new(Task::default());
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| {
                // The waker first, where the entry's target finds it; then the deadline.
                *task.0.lock() = Some(cx.waker().clone());
                t.poll(&task, deadline)
            }),
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

    /// Each target's registered tick.
    fn regs(targets: &[Arc<Count>]) -> impl Iterator<Item = Tick> + '_ {
        targets.iter().map(|c| c.registration().get())
    }

    proptest::proptest! {
        /// Whatever the order of registrations, cancellations and firings: the entries are
        /// exactly the registrations not yet due, a firing wakes exactly the sessions whose
        /// registration came due since the last one, and it reports the earliest left.
        #[test]
        fn entries_match_the_sessions_registrations(ops in proptest::collection::vec(op(), 1..80)) {
            let t = Timers::<Count>::new();
            let targets: Vec<Arc<Count>> = (0..6).map(|_| Arc::default()).collect();
            let mut clock = 0u64;
            for op in ops {
                match op {
                    Op::Poll { id, ms } => {
                        let deadline = t.base + Duration::from_millis(clock + ms);
                        let _ = t.poll(&targets[id], deadline);
                    }
                    Op::Cancel { id } => t.cancel(&targets[id]),
                    Op::Fire { ms } => {
                        let before: Vec<usize> =
                            targets.iter().map(|c| c.woken()).collect();
                        let due: Vec<bool> = regs(&targets).map(|at| at > clock && at <= clock + ms).collect();
                        clock += ms;
                        let next = t.fire(t.base + Duration::from_millis(clock));
                        for id in 0..6 {
                            let woken = targets[id].woken() - before[id];
                            proptest::prop_assert_eq!(woken, usize::from(due[id]), "session {}", id);
                        }
                        let earliest = regs(&targets).filter(|&at| at > clock).min();
                        proptest::prop_assert_eq!(next, earliest);
                    }
                }
                let live = regs(&targets).filter(|&at| at > t.now.load(Ordering::Acquire)).count();
                proptest::prop_assert_eq!(t.len(), live);
            }
        }
    }
}
