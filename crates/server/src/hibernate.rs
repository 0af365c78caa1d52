//! Hibernation: a session task with nothing to do for `[limits] hibernate_after` stops being
//! a tokio task until something happens to it.
//!
//! Most connections of a device fleet are idle most of the time, and an idle session's
//! tokio task is most of what it costs: the task cell (384 bytes, tokio aligns it to 128)
//! and the socket's registration with tokio's reactor (256 bytes). A hibernating session
//! keeps only its state (the [`SessionTask`], moved into a [`Sleeper`]); its socket, if it has
//! one, is watched by the [`Dormitory`]'s own epoll thread, and a waker of its own sits in
//! its inbox (which its timer entry wakes too) and its control queue. Whichever fires
//! first — bytes or a hang-up on the socket, a message routed to it, a takeover or admin
//! request, a deadline (keep-alive, expiry, will delay), shutdown — revives it: the socket
//! goes back to tokio and the task is spawned again, where it left off. EMQX does the same
//! with its connection processes (`hibernate_after`).
//!
//! Only plain TCP connections and offline sessions hibernate: a TLS or WebSocket stream
//! keeps state above the socket that cannot be parked as a file descriptor.

use crate::connection::Link;
use crate::listener::Slots;
use crate::session_task::{Running, SessionTask};
use parking_lot::Mutex;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Wake, Waker};
use std::time::Duration;
use tokio::net::TcpStream;

/// The epoll token of the poll thread's own waker.
const STOP_TOKEN: mio::Token = mio::Token(usize::MAX);

/// Where hibernating sessions wait.
#[derive(Debug)]
pub(crate) struct Dormitory {
    /// How long a session task is idle before it hibernates.
    pub(crate) after: Duration,
    runtime: tokio::runtime::Handle,
    /// Registers and deregisters parked sockets with the poll thread's epoll.
    registry: mio::Registry,
    /// Sleepers with a parked socket; a socket's epoll token is its index here.
    sockets: Mutex<Sockets>,
    stop: AtomicBool,
    stop_waker: mio::Waker,
}

/// The sleepers whose socket is parked, in a slab: a vector indexed by epoll token with a
/// list of the free slots (a word per sleeper, where a hash map by token was ~30 bytes).
///
/// A token is reused once its sleeper is revived. An event the poll thread took for the old
/// sleeper just before may then wake the new one: a spurious wake-up, after which the
/// revived task finds nothing to do and hibernates again.
#[derive(Debug, Default)]
struct Sockets {
    slots: Vec<Option<Arc<Sleeper>>>,
    free: Vec<u32>,
}

impl Sockets {
    /// The sleeper's token. There are never more than there are file descriptors, so a
    /// `u32` holds it.
    fn insert(&mut self, sleeper: Arc<Sleeper>) -> u32 {
        match self.free.pop() {
            Some(token) => {
                self.slots[token as usize] = Some(sleeper);
                token
            }
            None => {
                self.slots.push(Some(sleeper));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn get(&self, token: usize) -> Option<&Arc<Sleeper>> {
        self.slots.get(token)?.as_ref()
    }

    fn remove(&mut self, token: u32) {
        if let Some(slot) = self.slots.get_mut(token as usize) {
            if slot.take().is_some() {
                self.free.push(token);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A hibernating session. It is the waker its inbox and control queue hold. Only the task
/// and its parked socket (the dormitory is the task's broker's), in 224 bytes with the
/// `Arc`'s counts: an allocator size class (see the size test in `session_task.rs`).
#[derive(Debug, Default)]
pub(crate) struct Sleeper(Mutex<SleepState>);

/// An enum rather than optional fields and a flag: the states without a task fit in the
/// task's unused bit patterns, so they cost no word of their own. The large variant is the
/// point: the whole sleeper is one allocation, and boxing the task would make it two.
#[derive(Debug, Default)]
#[allow(clippy::large_enum_variant)]
enum SleepState {
    /// Its wakers are being registered; the task is not in yet.
    #[default]
    Falling,
    /// Woken: revived, or to be revived as soon as the task is in.
    Woken,
    Asleep {
        task: SessionTask,
        socket: Option<Parked>,
    },
}

/// A hibernating connection's socket, off tokio's reactor and on the dormitory's epoll.
#[derive(Debug)]
struct Parked {
    stream: std::net::TcpStream,
    slots: Slots,
    /// Its epoll token: its index in [`Sockets`] (`u32`, so it shares a word with the
    /// file descriptor).
    token: u32,
}

impl Dormitory {
    /// Starts the poll thread. Must be called inside the tokio runtime the revived tasks run
    /// on.
    pub(crate) fn start(after: Duration) -> std::io::Result<Arc<Dormitory>> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let stop_waker = mio::Waker::new(poll.registry(), STOP_TOKEN)?;
        let dormitory = Arc::new(Dormitory {
            after,
            runtime: tokio::runtime::Handle::current(),
            registry,
            sockets: Mutex::new(Sockets::default()),
            stop: AtomicBool::new(false),
            stop_waker,
        });
        let weak = Arc::downgrade(&dormitory);
        std::thread::Builder::new()
            .name("thingmq-dormitory".into())
            .spawn(move || watch_sockets(poll, weak))?;
        Ok(dormitory)
    }

    /// Stops the poll thread (the server is gone).
    pub(crate) fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_waker.wake();
    }
}

/// Also when the server never got going (a listener failed to bind after the dormitory was
/// started): the poll thread must not outlive it.
impl Drop for Dormitory {
    fn drop(&mut self) {
        self.close();
    }
}

/// The poll thread: revives the sleeper of every socket that becomes readable (bytes,
/// end of stream or an error).
fn watch_sockets(mut poll: mio::Poll, dormitory: Weak<Dormitory>) {
    let mut events = mio::Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(
                "hibernation poll failed: {e}; hibernating sockets are no longer watched"
            );
            return;
        }
        let Some(dormitory) = dormitory.upgrade() else {
            return;
        };
        if dormitory.stop.load(Ordering::SeqCst) {
            return;
        }
        for event in events.iter() {
            if event.token() == STOP_TOKEN {
                continue;
            }
            let sleeper = dormitory.sockets.lock().get(event.token().0).cloned();
            if let Some(sleeper) = sleeper {
                sleeper.revive();
            }
        }
    }
}

impl Sleeper {
    /// Spawns the session task again, with its socket back on tokio's reactor. A no-op when
    /// already revived (several of its wakers may fire).
    fn revive(&self) {
        let SleepState::Asleep { mut task, socket } =
            std::mem::replace(&mut *self.0.lock(), SleepState::Woken)
        else {
            return;
        };
        // Only a task that hibernated is here, and only with a dormitory.
        let Some(dormitory) = task.dormitory().cloned() else {
            return;
        };
        task.metrics()
            .sessions_hibernating
            .fetch_sub(1, Ordering::Relaxed);
        task.woke();
        if let Some(Parked {
            stream,
            slots,
            token,
        }) = socket
        {
            dormitory.sockets.lock().remove(token);
            let fd = stream.as_raw_fd();
            let _ = dormitory.registry.deregister(&mut mio::unix::SourceFd(&fd));
            // Registering with tokio's reactor needs its context; this may run on any thread
            // (a publisher's, the timers', the poll thread).
            let _guard = dormitory.runtime.enter();
            match TcpStream::from_std(stream) {
                Ok(stream) => task.resume_link(Link {
                    io: Box::new(stream),
                    rbuf: Default::default(),
                    wbuf: Default::default(),
                    unflushed: false,
                    _permits: slots,
                }),
                Err(e) => {
                    tracing::warn!(client_id = %task.client_id(), "cannot resume a hibernated connection: {e}");
                    // Handled in the task, not here: this runs inside whoever woke us (a
                    // publisher, the timers, the poll thread), and losing a connection can
                    // publish a will and change the router.
                    dormitory.runtime.spawn(async move {
                        task.lost_while_asleep();
                        Running::new(task).await
                    });
                    return;
                }
            }
        }
        dormitory.runtime.spawn(Running::new(task));
    }
}

impl Wake for Sleeper {
    fn wake(self: Arc<Self>) {
        self.revive();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.revive();
    }
}

/// Puts `task` to sleep (its tokio task is ending). Its socket, if any, must be plain TCP
/// with nothing buffered ([`SessionTask::can_hibernate`]).
pub(crate) fn hibernate(dormitory: &Arc<Dormitory>, mut task: SessionTask) {
    let socket = match task.take_link().map(park_socket) {
        None => None,
        Some(Ok(socket)) => Some(socket),
        Some(Err(e)) => {
            // The connection is gone with the stream; the task runs on (its session may have
            // ended with it).
            tracing::warn!(client_id = %task.client_id(), "cannot hibernate a connection: {e}");
            task.lost_while_asleep();
            dormitory.runtime.spawn(Running::new(task));
            return;
        }
    };
    let sleeper = Arc::new(Sleeper::default());
    let waker = Waker::from(sleeper.clone());
    // Its wakers go in first, then the task: a wake in between leaves it `Woken`, seen below.
    let mut busy = task.wait_asleep(&mut Context::from_waker(&waker));
    let socket = socket.map(|(stream, slots)| Parked {
        token: dormitory.sockets.lock().insert(sleeper.clone()),
        stream,
        slots,
    });
    if let Some(parked) = socket.as_ref() {
        let token = parked.token;
        let fd = parked.stream.as_raw_fd();
        // Edge-triggered, and epoll reports a socket that is readable already when it is
        // added, so bytes that came since our last read are not missed.
        if let Err(e) = dormitory.registry.register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(token as usize),
            mio::Interest::READABLE,
        ) {
            tracing::warn!(client_id = %task.client_id(), "cannot watch a hibernating connection: {e}");
            busy = true;
        }
    }
    let metrics = task.metrics();
    metrics.sessions_hibernating.fetch_add(1, Ordering::Relaxed);
    metrics.hibernations_total.fetch_add(1, Ordering::Relaxed);
    let wake_now = {
        let mut s = sleeper.0.lock();
        let woken = matches!(*s, SleepState::Woken);
        *s = SleepState::Asleep { task, socket };
        woken || busy
    };
    if wake_now {
        sleeper.revive();
    }
}

/// The socket of a plain TCP link, off tokio's reactor, with the link's connection permits.
fn park_socket(link: Link) -> std::io::Result<(std::net::TcpStream, Slots)> {
    let Link { io, _permits, .. } = link;
    let tcp = io
        .into_any()
        .downcast::<TcpStream>()
        .map_err(|_| std::io::Error::other("not a plain TCP stream"))?;
    Ok((tcp.into_std()?, _permits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_poll_thread_stops_when_closed() {
        let d = Dormitory::start(Duration::from_secs(1)).unwrap();
        assert_eq!(d.sockets.lock().len(), 0);
        d.close();
    }

    #[test]
    fn a_freed_socket_token_is_reused_and_a_stale_one_finds_nothing() {
        let mut sockets = Sockets::default();
        let a = sockets.insert(Arc::new(Sleeper::default()));
        let b = sockets.insert(Arc::new(Sleeper::default()));
        assert_ne!(a, b);
        sockets.remove(a);
        assert!(sockets.get(a as usize).is_none());
        sockets.remove(a);
        assert_eq!(sockets.len(), 1);
        let c = sockets.insert(Arc::new(Sleeper::default()));
        assert_eq!(c, a, "the freed slot is taken first");
        assert_eq!(sockets.len(), 2);
        assert!(sockets.get(99).is_none());
    }
}
