//! The bounded queue through which routed messages reach a session's owner task.
//!
//! Publishers push from any thread without waiting; the owner drains it in batches. When the
//! owner can't keep up (its client reads slowly), QoS 0 messages are dropped past
//! `qos0_limit` and QoS 1/2 past `reliable_limit`, so memory stays bounded however slow the
//! reader is. Dropped messages are counted by the caller.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use thingmq_broker::Routed;
use thingmq_codec::QoS;

/// A session's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// `u32`s: with the two fields of `usize` the session's shared state was a size class
    /// larger (see the size test in `session_task.rs`).
    qos0_limit: u32,
    reliable_limit: u32,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Routed>,
    /// The owner, while it waits for messages. A waker under the queue's own lock instead of
    /// a `Notify`: the owner polls it in place, so waiting keeps no future alive per session.
    waker: Option<Waker>,
}

impl Inbox {
    pub(crate) fn new(qos0_limit: usize, reliable_limit: usize) -> Inbox {
        Inbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waker: None,
            }),
            qos0_limit: u32::try_from(qos0_limit).unwrap_or(u32::MAX),
            reliable_limit: u32::try_from(reliable_limit).unwrap_or(u32::MAX),
        }
    }

    /// Queues a message and wakes the owner; false when it was dropped for the limit.
    pub(crate) fn push(&self, routed: Routed) -> bool {
        let mut s = self.state.lock();
        let limit = if routed.qos == QoS::AtMostOnce {
            self.qos0_limit
        } else {
            self.reliable_limit
        };
        if s.items.len() >= limit as usize {
            return false;
        }
        s.items.push_back(routed);
        // One wake-up per batch: the owner drains everything it finds.
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        true
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
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Resolves while messages are queued.
    #[cfg(test)]
    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use thingmq_broker::Message;

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
        let inbox = Inbox::new(2, 3);
        assert!(inbox.push(routed(QoS::AtMostOnce)));
        assert!(inbox.push(routed(QoS::AtMostOnce)));
        assert!(!inbox.push(routed(QoS::AtMostOnce)));
        assert!(inbox.push(routed(QoS::AtLeastOnce)));
        assert!(!inbox.push(routed(QoS::AtLeastOnce)));
        let mut out = vec![];
        inbox.drain_into(&mut out, 10);
        assert_eq!(out.len(), 3);
        assert!(inbox.push(routed(QoS::AtMostOnce)));
    }

    #[tokio::test]
    async fn a_partial_drain_wakes_the_owner_again() {
        let inbox = Inbox::new(10, 10);
        for _ in 0..3 {
            inbox.push(routed(QoS::AtMostOnce));
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
