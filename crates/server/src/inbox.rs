//! The bounded queue through which routed messages reach a session's owner task.
//!
//! Publishers push from any thread without waiting; the owner drains it in batches. When the
//! owner can't keep up (its client reads slowly), QoS 0 messages are dropped past
//! `qos0_limit` and QoS 1/2 past `reliable_limit`, so memory stays bounded however slow the
//! reader is. Dropped messages are counted by the caller.

use parking_lot::Mutex;
use std::collections::VecDeque;
use thingmq_broker::Routed;
use thingmq_codec::QoS;
use tokio::sync::Notify;

/// A session's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    items: Mutex<VecDeque<Routed>>,
    notify: Notify,
    qos0_limit: usize,
    reliable_limit: usize,
}

impl Inbox {
    pub(crate) fn new(qos0_limit: usize, reliable_limit: usize) -> Inbox {
        Inbox {
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            qos0_limit,
            reliable_limit,
        }
    }

    /// Queues a message and wakes the owner; false when it was dropped for the limit.
    pub(crate) fn push(&self, routed: Routed) -> bool {
        let mut items = self.items.lock();
        let limit = if routed.qos == QoS::AtMostOnce {
            self.qos0_limit
        } else {
            self.reliable_limit
        };
        if items.len() >= limit {
            return false;
        }
        let was_empty = items.is_empty();
        items.push_back(routed);
        drop(items);
        // One wake-up per batch: the owner drains everything it finds.
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Moves up to `max` queued messages into `into`. When more are left the owner is woken
    /// again, so it comes back for them once it has written what it took.
    pub(crate) fn drain_into(&self, into: &mut Vec<Routed>, max: usize) {
        let mut items = self.items.lock();
        let n = items.len().min(max);
        into.extend(items.drain(..n));
        let more = !items.is_empty();
        drop(items);
        if more {
            self.notify.notify_one();
        }
    }

    /// Resolves when something was pushed since the last drain.
    pub(crate) async fn wait(&self) {
        self.notify.notified().await
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
