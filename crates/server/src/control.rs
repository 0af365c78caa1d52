//! The queue through which a session task gets its control messages (a new connection for
//! its client id, admin requests, server shutdown).
//!
//! It has the semantics of the bounded `tokio::sync::mpsc` channel it replaces — senders wait
//! while [`CAPACITY`] messages are queued, a send to a task that is gone returns the message,
//! the receiver sees the end once every sender is dropped — but costs an idle session no
//! allocation beyond the shared state itself: tokio's channel allocates a block of 32 slots
//! per channel up front, and it was ~7% of the memory of an idle connection. Control messages
//! are rare, so a mutex is no contention point here.

use crate::session_task::Control;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// Messages queued at most; a sender beyond it waits (an admin request to a session task
/// that does not keep up waits too, bounded by the caller's timeout).
pub(crate) const CAPACITY: usize = 8;

/// Wakes senders waiting for room in a full queue (or for its receiver to close), of every
/// queue: one for all rather than one per session (32 bytes of every idle connection).
/// Senders wait for room only when an admin request or a takeover meets a task that does
/// not keep up, and a woken sender looks at its own queue again.
static ROOM: Notify = Notify::const_new();

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Boxed and made on the first message: almost always empty, and a `VecDeque` is four
    /// words of every session.
    #[allow(clippy::box_collection)] // the box is the point (see above)
    items: Option<Box<VecDeque<Control>>>,
    /// The receiving task, while it waits for a message.
    waker: Option<Waker>,
    senders: u32,
    closed: bool,
}

impl State {
    fn push(&mut self, control: Control) {
        self.items
            .get_or_insert_with(Box::default)
            .push_back(control);
    }

    /// The first message, and whether the queue was full before it was taken (a sender may
    /// wait for the room).
    fn pop(&mut self) -> Option<(Control, bool)> {
        let items = self.items.as_mut()?;
        let was_full = items.len() >= CAPACITY;
        let c = items.pop_front();
        if items.is_empty() {
            self.items = None;
        }
        c.map(|c| (c, was_full))
    }

    fn len(&self) -> usize {
        self.items.as_ref().map_or(0, |i| i.len())
    }
}

/// The sending side; cheap to clone (the registry holds one per session).
#[derive(Debug)]
pub(crate) struct ControlSender(Arc<Shared>);

/// The receiving side, owned by the session task.
#[derive(Debug)]
pub(crate) struct ControlReceiver(Arc<Shared>);

/// A bounded control queue.
pub(crate) fn channel() -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: None,
            waker: None,
            senders: 1,
            closed: false,
        }),
    });
    (ControlSender(shared.clone()), ControlReceiver(shared))
}

impl ControlSender {
    /// Queues `control`, waiting while the queue is full; gives it back when the receiver is
    /// gone (closed or dropped).
    pub(crate) async fn send(&self, control: Control) -> Result<(), Control> {
        loop {
            let room = ROOM.notified();
            tokio::pin!(room);
            // Registered before looking, so a pop or close between the look and the wait
            // is not missed.
            room.as_mut().enable();
            {
                let mut s = self.0.state.lock();
                if s.closed {
                    return Err(control);
                }
                if s.len() < CAPACITY {
                    s.push(control);
                    let waker = s.waker.take();
                    drop(s);
                    if let Some(w) = waker {
                        w.wake();
                    }
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Queues [`Control::Stop`] without waiting, beyond the capacity if need be: shutdown
    /// must reach a task whose queue is full, and is sent once per task.
    pub(crate) fn stop(&self) {
        let mut s = self.0.state.lock();
        if s.closed {
            return;
        }
        s.push(Control::Stop);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Clone for ControlSender {
    fn clone(&self) -> Self {
        self.0.state.lock().senders += 1;
        ControlSender(self.0.clone())
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.senders -= 1;
        if s.senders == 0 {
            let waker = s.waker.take();
            drop(s);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl ControlReceiver {
    /// The next message; `Ready(None)` once the queue is empty and every sender is gone.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Control>> {
        let mut s = self.0.state.lock();
        if let Some((c, was_full)) = s.pop() {
            drop(s);
            if was_full {
                ROOM.notify_waiters();
            }
            return Poll::Ready(Some(c));
        }
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Leaves `waker` to be woken by the next message (or by the last sender going); true
    /// when there is one already. For a hibernating session, whose waker is not a task's.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        let mut s = self.0.state.lock();
        if s.len() > 0 || s.senders == 0 {
            return true;
        }
        s.waker = Some(waker.clone());
        false
    }

    /// The next message without waiting.
    pub(crate) fn try_recv(&self) -> Option<Control> {
        let (c, was_full) = self.0.state.lock().pop()?;
        if was_full {
            ROOM.notify_waiters();
        }
        Some(c)
    }

    /// Refuses further messages; those already queued can still be taken with
    /// [`ControlReceiver::try_recv`].
    pub(crate) fn close(&self) {
        self.0.state.lock().closed = true;
        ROOM.notify_waiters();
    }
}

impl Drop for ControlReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn kick() -> Control {
        Control::Kick(oneshot::channel().0)
    }

    /// What a waiting sender's task returned, once something woke it (within a second).
    async fn woken(sender: tokio::task::JoinHandle<bool>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), sender)
            .await
            .expect("the waiting sender is woken")
            .unwrap()
    }

    async fn recv(rx: &ControlReceiver) -> Option<Control> {
        std::future::poll_fn(|cx| rx.poll_recv(cx)).await
    }

    #[test]
    fn the_shared_state_fits_the_64_byte_size_class() {
        // Every session holds one, hibernated or not; with the `Arc`'s two counts. (112
        // bytes with a `Notify` and the `VecDeque` inline.)
        let size = std::mem::size_of::<Shared>() + 16;
        assert!(size <= 64, "control queue is {size} bytes");
    }

    #[tokio::test]
    async fn room_in_one_queue_wakes_its_sender_while_another_queue_stays_full() {
        let (tx, rx) = channel();
        let (other_tx, _other_rx) = channel();
        for _ in 0..CAPACITY {
            tx.send(kick()).await.unwrap();
            other_tx.send(kick()).await.unwrap();
        }
        let (tx2, other_tx2) = (tx.clone(), other_tx.clone());
        let sender = tokio::spawn(async move { tx2.send(kick()).await.is_ok() });
        let other = tokio::spawn(async move { other_tx2.send(kick()).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_some());
        assert!(woken(sender).await, "room wakes the sender");
        // Woken too (one notification for all), it finds its queue still full and waits on.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!other.is_finished());
        other.abort();
    }

    #[tokio::test]
    async fn a_sent_message_is_received() {
        let (tx, rx) = channel();
        tx.send(kick()).await.unwrap();
        assert!(matches!(recv(&rx).await, Some(Control::Kick(_))));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(async move { recv(&rx).await.is_some() });
        tokio::task::yield_now().await;
        tx.send(kick()).await.unwrap();
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn the_receiver_sees_the_end_when_every_sender_is_dropped() {
        let (tx, rx) = channel();
        let other = tx.clone();
        drop(tx);
        let waiter = tokio::spawn(async move { recv(&rx).await.is_none() });
        tokio::task::yield_now().await;
        drop(other);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_send_after_close_returns_the_message() {
        let (tx, rx) = channel();
        tx.send(kick()).await.unwrap();
        rx.close();
        assert!(matches!(tx.send(kick()).await, Err(Control::Kick(_))));
        // What was queued before the close is still there for the owner to pass on.
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_sender_waits_while_the_queue_is_full_and_goes_on_when_room_is_made() {
        let (tx, rx) = channel();
        for _ in 0..CAPACITY {
            tx.send(kick()).await.unwrap();
        }
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(kick())).await;
        assert!(blocked.is_err(), "a full queue makes the sender wait");
        let tx2 = tx.clone();
        let sender = tokio::spawn(async move { tx2.send(kick()).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_some());
        assert!(woken(sender).await, "room wakes the sender");
    }

    #[tokio::test]
    async fn a_sender_waiting_on_a_full_queue_gets_its_message_back_when_the_receiver_goes() {
        let (tx, rx) = channel();
        for _ in 0..CAPACITY {
            tx.send(kick()).await.unwrap();
        }
        let sender = tokio::spawn(async move { tx.send(kick()).await.is_err() });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(woken(sender).await, "close gives the message back");
    }
}
