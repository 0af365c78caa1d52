//! The bounded queue through which routed messages reach a session's owner task.
//!
//! Publishers push from any thread without waiting; the owner drains it in batches. When the
//! owner can't keep up (its client reads slowly), QoS 0 messages are dropped past
//! [`Limits::qos0`] and QoS 1/2 past [`Limits::reliable`], so memory stays bounded however
//! slow the reader is. Dropped messages are counted by the caller.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use thingmq_broker::Routed;
use thingmq_codec::QoS;

/// A session's inbox. Its waker is also how the session's timer entry wakes the task
/// ([`crate::timers::Target`]).
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Routed>,
    /// The owner, while it waits. A waker under the queue's own lock instead of a `Notify`:
    /// the owner polls it in place, so waiting keeps no future alive per session.
    waker: Option<Waker>,
    /// The owner waits for messages ([`Inbox::poll_ready`]), not only for its deadline
    /// ([`Inbox::park`]): a push wakes it.
    wants: bool,
}

/// The queue limits, from the broker's settings (the same for every session, so not kept
/// in each inbox).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// QoS 0 messages past this many queued are dropped.
    pub(crate) qos0: usize,
    /// QoS 1 and 2 messages past this many queued are dropped.
    pub(crate) reliable: usize,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waker: None,
                wants: false,
            }),
        }
    }

    /// Queues a message and wakes the owner if it waits for one; false when it was dropped
    /// for the limit.
    pub(crate) fn push(&self, routed: Routed, limits: Limits) -> bool {
        let mut s = self.state.lock();
        let limit = if routed.qos == QoS::AtMostOnce {
            limits.qos0
        } else {
            limits.reliable
        };
        if s.items.len() >= limit {
            return false;
        }
        s.items.push_back(routed);
        // One wake-up per batch: the owner drains everything it finds.
        let waker = if std::mem::take(&mut s.wants) {
            s.waker.take()
        } else {
            None
        };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Wakes the owner whatever it waits for (its deadline came).
    pub(crate) fn wake(&self) {
        let waker = {
            let mut s = self.state.lock();
            s.wants = false;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Moves up to `max` queued messages into `into`. What is left makes
    /// [`Inbox::poll_ready`] ready again, so the owner comes back for it once it has written
    /// what it took.
    pub(crate) fn drain_into(&self, into: &mut Vec<Routed>, max: usize) {
        let mut s = self.state.lock();
        let n = s.items.len().min(max);
        into.extend(s.items.drain(..n));
        if s.items.is_empty() && s.items.capacity() > 1024 {
            // Give back what a burst took; a small queue is kept so that a steady stream
            // does not reallocate it under the lock on every drain.
            s.items = VecDeque::new();
        }
    }

    /// Ready while messages are queued; otherwise wakes the task once one is pushed.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock();
        if !s.items.is_empty() {
            return Poll::Ready(());
        }
        s.set_waker(cx);
        s.wants = true;
        Poll::Pending
    }

    /// Leaves the task's waker for [`Inbox::wake`] only: it waits, but not for messages
    /// (it cannot take more now). A push does not wake it.
    pub(crate) fn park(&self, cx: &mut Context<'_>) {
        let mut s = self.state.lock();
        s.set_waker(cx);
        s.wants = false;
    }

    /// Resolves while messages are queued.
    #[cfg(test)]
    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

impl State {
    fn set_waker(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use thingmq_broker::Message;

    const LIMITS: Limits = Limits {
        qos0: 10,
        reliable: 10,
    };

    /// A waker that counts its wake-ups.
    fn counter() -> (Arc<AtomicUsize>, Waker) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        (n.clone(), Waker::from(Arc::new(Count(n))))
    }

    #[test]
    fn a_push_wakes_an_owner_waiting_for_messages_once_and_a_parked_one_not_at_all() {
        let inbox = Inbox::new();
        let (n, w) = counter();
        let mut cx = Context::from_waker(&w);
        assert!(inbox.poll_ready(&mut cx).is_pending());
        inbox.push(routed(QoS::AtMostOnce), LIMITS);
        inbox.push(routed(QoS::AtMostOnce), LIMITS);
        assert_eq!(n.load(Ordering::SeqCst), 1, "one wake-up per batch");
        inbox.drain_into(&mut vec![], 10);
        inbox.park(&mut cx);
        inbox.push(routed(QoS::AtMostOnce), LIMITS);
        assert_eq!(n.load(Ordering::SeqCst), 1, "parked: not woken by a push");
        assert!(inbox.poll_ready(&mut cx).is_ready());
    }

    #[test]
    fn wake_reaches_a_parked_owner_and_a_waiting_one() {
        let inbox = Inbox::new();
        let (n, w) = counter();
        let mut cx = Context::from_waker(&w);
        inbox.park(&mut cx);
        inbox.wake();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        inbox.wake();
        assert_eq!(n.load(Ordering::SeqCst), 1, "the waker was taken");
        assert!(inbox.poll_ready(&mut cx).is_pending());
        inbox.wake();
        assert_eq!(n.load(Ordering::SeqCst), 2);
        // Woken by the deadline, the owner no longer waits for messages until it says so.
        inbox.push(routed(QoS::AtMostOnce), LIMITS);
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    fn routed(qos: QoS) -> Routed {
        Routed {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: Default::default(),
                qos,
                retain: false,
                properties: Default::default(),
                expires_at: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
            share: None,
            store_id: None,
        }
    }

    #[test]
    fn qos0_is_dropped_at_its_limit_while_qos1_still_fits() {
        let inbox = Inbox::new();
        let l = Limits {
            qos0: 2,
            reliable: 3,
        };
        assert!(inbox.push(routed(QoS::AtMostOnce), l));
        assert!(inbox.push(routed(QoS::AtMostOnce), l));
        assert!(!inbox.push(routed(QoS::AtMostOnce), l));
        assert!(inbox.push(routed(QoS::AtLeastOnce), l));
        assert!(!inbox.push(routed(QoS::AtLeastOnce), l));
        let mut out = vec![];
        inbox.drain_into(&mut out, 10);
        assert_eq!(out.len(), 3);
        assert!(inbox.push(routed(QoS::AtMostOnce), l));
    }

    #[tokio::test]
    async fn a_partial_drain_wakes_the_owner_again() {
        let inbox = Inbox::new();
        for _ in 0..3 {
            inbox.push(routed(QoS::AtMostOnce), LIMITS);
        }
        inbox.wait().await;
        let mut out = vec![];
        inbox.drain_into(&mut out, 2);
        assert_eq!(out.len(), 2);
        // Would hang if the remaining message did not re-arm the wake-up.
        tokio::time::timeout(std::time::Duration::from_secs(1), inbox.wait())
            .await
            .expect("owner is woken for the rest");
        inbox.drain_into(&mut out, 2);
        assert_eq!(out.len(), 3);
    }
}
