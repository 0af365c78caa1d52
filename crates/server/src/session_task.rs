//! The task that owns one session: the only place a [`Session`] state machine meets I/O.
//!
//! It lives as long as the MQTT session, connected or not. While a connection is attached it
//! waits on socket reads, socket writes, its inbox, its deadline timer, control messages (a
//! new connection for the same client id) and server shutdown. Side effects the session asks
//! for ([`Output`]) are performed in order by [`SessionTask::perform`].
//!
//! One task per connection is most of what an idle connection costs, so the task is built to
//! be small while it waits: it polls its sources in place ([`SessionTask::poll_wake`]) rather
//! than through a future per source, holds no read or write buffer between packets, and
//! keeps rarely used state behind boxes made on demand.

use crate::admin::{ConnectionInfo, Inspected, SubscriptionInfo};
use crate::broker::{Broker, SessionHandle, SessionRef};
use crate::connection::{admit, Accepted, Link};
use crate::control::ControlReceiver;
use crate::metrics::Metrics;
use crate::rate::{LogLimiter, PublishLimiter};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use thingmq_broker::session::{CloseReason, DropReason, Output, Session, SubscriptionRecord};
use thingmq_broker::{ClientId, Routed, Violation};
use thingmq_codec::{decode, encode, DecodeError, Packet, ReasonCode, RetainHandling};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

/// Above this many unwritten bytes the task stops taking messages from its inbox, so a
/// client that reads slowly makes its inbox (bounded) fill instead of our memory.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Most messages taken from the inbox (or the retained backlog) per turn, so one turn adds a
/// bounded amount to the write buffer.
const DELIVERY_BATCH: usize = 256;
/// Most batches per turn, so one busy subscriber cannot hold its worker thread for long.
const MAX_BATCHES_PER_TURN: usize = 16;
/// How long a closing connection may take to receive its last packets.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How often one session logs that a limit bites (throttled, messages dropped).
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Messages to a session task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A new connection for this client id (reconnect or takeover).
    Attach(Box<Accepted>),
    /// The admin API asks for the session's subscriptions and queues.
    Inspect(oneshot::Sender<Inspected>),
    /// The admin API disconnects the client; answers whether one was connected.
    Kick(oneshot::Sender<bool>),
    /// The server is shutting down ([`Broker::stop_sessions`]).
    Stop,
}

/// What a session task uses while it has work and lets go of when it waits with none
/// ([`SessionTask::release_idle_buffers`]): one box, so an idle connection carries a pointer
/// for them instead of ~120 bytes of empty vectors.
#[derive(Default)]
struct Work {
    /// The connection to attach when the task first runs (none for a restored session).
    first: Option<Box<Accepted>>,
    /// What the session asked for and is not done yet.
    out: Vec<Output>,
    /// The outputs being performed while the next ones collect in `out`.
    batch: Vec<Output>,
    /// Messages taken from the inbox in one batch.
    routed: Vec<Routed>,
    /// Store changes of this session not yet submitted (submitted at the end of each
    /// `perform`, so the outputs of one packet are one atomic batch).
    ops: Vec<thingmq_store::Op>,
    /// Retained messages matched by a SUBSCRIBE, delivered in batches like the inbox so a
    /// subscription to `#` does not encode every retained message at once.
    backlog: VecDeque<Routed>,
    /// Set while a store batch we depend on is not applied.
    commit_wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Work {
    fn is_idle(&self) -> bool {
        self.first.is_none()
            && self.out.is_empty()
            && self.batch.is_empty()
            && self.routed.is_empty()
            && self.ops.is_empty()
            && self.backlog.is_empty()
            && self.commit_wait.is_none()
    }
}

/// The session's [`Work`], made when first needed (a function of the field, not of the
/// task, so it can be borrowed beside the task's other fields).
fn work(w: &mut Option<Box<Work>>) -> &mut Work {
    w.get_or_insert_with(Box::default)
}

/// What only a connection that meets a limit needs: its publish rate limiter, the pause it
/// imposes, and the throttles of the log lines about limits. One box, made on demand: ~200
/// bytes that most connections never use.
#[derive(Debug)]
struct Limits {
    /// Set when a publish rate limit applies to the connection.
    rate: Option<PublishLimiter>,
    /// Set while the rate limit keeps us from reading the client: when reading resumes.
    until: Option<Instant>,
    /// The timer for `until`.
    timer: Option<Pin<Box<Sleep>>>,
    throttle_log: LogLimiter,
    drop_log: LogLimiter,
}

impl Limits {
    fn new() -> Limits {
        Limits {
            rate: None,
            until: None,
            timer: None,
            throttle_log: LogLimiter::new(LIMIT_LOG_EVERY),
            drop_log: LogLimiter::new(LIMIT_LOG_EVERY),
        }
    }
}

/// What the task's loop does after a turn.
enum Next {
    Continue,
    Done,
    /// Idle for `[limits] hibernate_after`: hand the task to the dormitory.
    Hibernate,
}

/// What woke the session task (see [`SessionTask::poll_wake`]).
enum Wake {
    Control(Option<Control>),
    Committed,
    ThrottleOver,
    Written(io::Result<usize>),
    Read(io::Result<usize>),
    Inbox,
    Deadline,
}

pub(crate) struct SessionTask {
    broker: Arc<Broker>,
    me: SessionRef,
    session: Session,
    control: ControlReceiver,
    started: bool,
    /// The server is shutting down: the next turn suspends or ends the session.
    stopping: bool,
    /// Which of socket and inbox is polled first on the next wake-up, so that neither a
    /// flooding publisher nor a busy inbox starves the other.
    read_first: bool,
    /// Boxed: a link is ~100 bytes, which a hibernating session does not hold and which
    /// would make every task's tokio cell a size class larger (see the size test below).
    link: Option<Box<Link>>,
    /// Made while the task has work, dropped when it waits with none.
    work: Option<Box<Work>>,
    /// A client has connected (or the restored session had one): its access policy is the
    /// one of [`Self::username`] and the session's client id.
    identified: bool,
    /// The user name the client connected with. With the client id (the session's) this is
    /// who the client is; kept apart rather than as a `ClientInfo`, which would copy the
    /// client id again for every session. Boxed twice: one word here rather than two, which
    /// keeps a hibernating session in a smaller size class (see the size test); an extra
    /// 16 bytes only for a client that has a user name.
    #[allow(clippy::box_collection, clippy::redundant_allocation)]
    username: Option<Box<Box<str>>>,
    /// The connection is the platform's in-process link: every topic is allowed.
    internal: bool,
    /// The listener the connection came in on: whose access rules apply. (`u32`s here: they
    /// share a word, which keeps the task within its size class; see the size test.)
    listener: u32,
    /// Generation of the rules the session's policy was built from.
    access_generation: u32,
    /// Store batch that must be applied before more bytes go to the client: our own changes
    /// and those of messages routed to us.
    wait_seq: u64,
    /// Made when a publish rate limit is configured or a limit is first logged.
    limits: Option<Box<Limits>>,
}

impl std::fmt::Debug for SessionTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTask")
            .field("client_id", self.client_id())
            .finish_non_exhaustive()
    }
}

impl SessionTask {
    pub(crate) fn new(
        broker: Arc<Broker>,
        me: SessionRef,
        control: ControlReceiver,
    ) -> SessionTask {
        // Also what the server's shutdown waits for: every session task gone
        // ([`Broker::sessions_gone`]).
        Metrics::add(&broker.metrics.sessions, 1);
        let session = Session::new(broker.settings.clone());
        SessionTask {
            broker,
            me,
            session,
            control,
            started: false,
            stopping: false,
            read_first: true,
            link: None,
            work: None,
            identified: false,
            username: None,
            internal: false,
            listener: 0,
            access_generation: 0,
            wait_seq: 0,
            limits: None,
        }
    }

    /// A task for a session restored from the store, offline until its client reconnects.
    pub(crate) fn restored(
        broker: Arc<Broker>,
        me: SessionRef,
        (session, username, listener): (Session, Option<String>, thingmq_store::ListenerRef),
        control: ControlReceiver,
    ) -> SessionTask {
        let mut task = SessionTask::new(broker, me, control);
        task.identified = true;
        task.username = username.map(|u| Box::new(u.into_boxed_str()));
        match task
            .broker
            .restored_listener(&task.me.0.client_id, &listener)
        {
            Some(index) => task.listener = listener_index(index),
            None => {
                task.internal = true;
                task.listener = u32::MAX;
            }
        }
        task.session = session;
        // The last user's rules, of the listener it last came in on, apply to what is
        // queued and to the will until it reconnects.
        task.bind_policy();
        task.me
            .0
            .durable
            .store(task.session.persists(), Ordering::Release);
        task
    }

    /// The task for a new session, which attaches `first` when it first runs.
    pub(crate) fn with_connection(mut self, first: Box<Accepted>) -> SessionTask {
        work(&mut self.work).first = Some(first);
        self
    }

    /// What the task does when it first runs.
    fn start(&mut self) {
        match self.work.as_mut().and_then(|w| w.first.take()) {
            Some(first) => self.attach(*first, false),
            None => {
                // Wills and expiries that fell due while the server was down.
                self.session
                    .tick(Instant::now(), &mut work(&mut self.work).out);
                self.perform();
            }
        }
        // A connection handed over while the server was already stopping.
        self.stopping = self.broker.is_stopping();
    }

    /// One turn of the task's loop: waits for something to happen and handles it.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if self.stopping {
            if self.broker.store.is_some() {
                // The store keeps the session: it outlives this server process.
                self.session
                    .suspend(Instant::now(), &mut work(&mut self.work).out);
            } else {
                self.session
                    .shutdown(Instant::now(), &mut work(&mut self.work).out);
            }
            self.perform();
            return Poll::Ready(Next::Done);
        }
        if self.session.is_ended() {
            return Poll::Ready(Next::Done);
        }
        self.publish_depths();
        if self.broker.access_generation() != self.access_generation {
            self.bind_policy();
        }
        // While our writes to this client are backed up, take nothing more that would add
        // to them: neither its inbox nor its socket (a flooding publisher that does not
        // read its acknowledgements is throttled by TCP, not by our memory).
        let can_take = self
            .link
            .as_ref()
            .is_none_or(|l| l.wbuf.len() < WRITE_HIGH_WATER);
        // Nothing reaches the client (an acknowledgement above all) before the store has
        // what it depends on.
        let durable = self
            .broker
            .store
            .as_ref()
            .is_none_or(|s| s.is_committed(self.wait_seq));
        // Over its publish rate the client is not read at all (TCP slows it down); the
        // bytes already read wait, undecoded, in the read buffer.
        let throttled = self.limits.as_ref().is_some_and(|l| l.until.is_some());
        self.release_idle_buffers();
        match ready!(self.poll_wake(cx, can_take, durable, throttled)) {
            Wake::Control(Some(Control::Attach(a))) => self.attach(*a, true),
            Wake::Control(Some(Control::Inspect(reply))) => {
                let _ = reply.send(self.inspect());
            }
            Wake::Control(Some(Control::Kick(reply))) => {
                let connected = self.session.is_connected();
                if connected {
                    tracing::info!(client_id = %self.client_id(), "disconnected by an administrator");
                }
                self.session
                    .kick(Instant::now(), &mut work(&mut self.work).out);
                self.perform();
                let _ = reply.send(connected);
            }
            Wake::Control(Some(Control::Stop)) => self.stopping = true,
            Wake::Control(None) => return Poll::Ready(Next::Done),
            Wake::Committed => {}
            Wake::ThrottleOver => {
                if let Some(l) = self.limits.as_mut() {
                    l.until = None;
                    l.timer = None;
                }
                self.decode_all();
            }
            Wake::Written(Ok(n)) => {
                Metrics::add(&self.broker.metrics.bytes_sent, n as u64);
                if !can_take {
                    // We are not reading this client, so its PINGREQs go unseen;
                    // that it reads what we write shows it is alive.
                    self.session.touch(Instant::now());
                }
            }
            Wake::Written(Err(_)) => self.lost(),
            Wake::Read(n) => self.on_read(n),
            Wake::Inbox => self.on_inbox(),
            Wake::Deadline => {
                if throttled {
                    // We are the ones not reading: its PINGREQs may be waiting in the
                    // socket, so a throttled client is not timed out for keep-alive.
                    self.session.touch(Instant::now());
                }
                let now = Instant::now();
                self.session.tick(now, &mut work(&mut self.work).out);
                self.perform();
                if self.hibernate_at().is_some_and(|at| now >= at) {
                    return Poll::Ready(Next::Hibernate);
                }
            }
        }
        Poll::Ready(Next::Continue)
    }

    /// Polls everything the task waits on, in place: the task keeps no future per source
    /// across wake-ups (a `select!` over nine futures made each idle connection's task
    /// ~4.6 KB). The conditions are those of [`SessionTask::turn`].
    fn poll_wake(
        &mut self,
        cx: &mut Context<'_>,
        can_take: bool,
        durable: bool,
        throttled: bool,
    ) -> Poll<Wake> {
        if let Poll::Ready(c) = self.control.poll_recv(cx) {
            return Poll::Ready(Wake::Control(c));
        }
        if durable {
            if let Some(w) = self.work.as_mut() {
                w.commit_wait = None;
            }
        } else {
            let w = work(&mut self.work);
            let wait = w
                .commit_wait
                .get_or_insert_with(|| Box::pin(committed(&self.broker, self.wait_seq)));
            if wait.as_mut().poll(cx).is_ready() {
                w.commit_wait = None;
                return Poll::Ready(Wake::Committed);
            }
        }
        if let (true, Some(l)) = (durable, self.limits.as_mut()) {
            if let Some(until) = l.until {
                if poll_timer(&mut l.timer, until, cx).is_ready() {
                    return Poll::Ready(Wake::ThrottleOver);
                }
            }
        }
        let timers = &self.broker.timers;
        let deadline = match (self.session.next_deadline(), self.hibernate_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            // The deadline wakes us through the inbox's waker: it goes there first (only
            // for the deadline; below, the inbox is asked for messages if we can take them).
            self.me.0.inbox.park(cx);
            if timers.poll(&self.me.0, deadline).is_ready() {
                return Poll::Ready(Wake::Deadline);
            }
        } else {
            timers.cancel(&self.me.0);
        }
        if durable {
            if let Some(l) = self.link.as_mut() {
                if let Poll::Ready(r) = poll_write_part(l, cx) {
                    return Poll::Ready(Wake::Written(r));
                }
            }
        }
        // While our last batch is not stored, the client's next packets wait in its socket:
        // what we read but have not stored is bounded by one read.
        self.read_first = !self.read_first;
        for read in [self.read_first, !self.read_first] {
            if read {
                if let (true, true, false, Some(r)) =
                    (can_take, durable, throttled, self.link.as_mut())
                {
                    if let Poll::Ready(n) = poll_read_part(r, cx) {
                        return Poll::Ready(Wake::Read(n));
                    }
                }
            } else if can_take
                && (self.work.as_ref().is_some_and(|w| !w.backlog.is_empty())
                    || self.me.0.inbox.poll_ready(cx).is_ready())
            {
                return Poll::Ready(Wake::Inbox);
            }
        }
        Poll::Pending
    }

    fn limits(&mut self) -> &mut Limits {
        self.limits.get_or_insert_with(|| Box::new(Limits::new()))
    }

    /// Lets go of buffers nothing is using while the task waits, so an idle connection holds
    /// none: the read buffer once no partial packet is left in it, and the output vectors
    /// (a few hundred bytes per element) once the writes they caused are out.
    fn release_idle_buffers(&mut self) {
        if let Some(l) = self.link.as_mut() {
            if l.rbuf.is_empty() && l.rbuf.capacity() > 0 {
                l.rbuf = BytesMut::new();
            }
        }
        if self.link.as_ref().is_none_or(|l| l.wbuf.is_empty())
            && self.work.as_ref().is_some_and(|w| w.is_idle())
        {
            self.work = None;
        }
        self.session.release_idle();
    }

    /// Attaches a connection: the first one, a reconnect to an offline session, or a takeover
    /// of a connected one.
    fn attach(&mut self, a: Accepted, existing: bool) {
        let now = Instant::now();
        self.active(now);
        let client_id = a.connect.client_id.clone();
        if existing {
            if self.session.is_connected() {
                tracing::info!(%client_id, "session taken over by a new connection");
            }
            self.session.takeover(now, &mut work(&mut self.work).out);
            self.perform();
            if a.connect.clean_start {
                self.session.end(now, &mut work(&mut self.work).out);
                self.perform();
            }
        }
        // With Clean Start, or when the old session ended with its connection, the client
        // gets a fresh session in this same task.
        let session_present = existing && !self.session.is_ended();
        if self.session.is_ended() {
            self.fresh_session();
        }
        let Accepted {
            connect,
            link,
            assigned_id,
            peer,
            internal,
            listener,
        } = a;
        tracing::debug!(%client_id, %peer, protocol = ?connect.protocol, session_present, "client connected");
        self.listener = listener_index(listener);
        self.identified = true;
        self.username = connect.username.as_deref().map(|u| Box::new(Box::from(u)));
        let info = ConnectionInfo {
            peer,
            username: connect.username.as_deref().map(str::to_owned),
            protocol: connect.protocol,
            keep_alive: thingmq_broker::session::effective_keep_alive(
                connect.keep_alive,
                &self.broker.settings,
            ),
            connected_at_ms: crate::admin::unix_ms(std::time::SystemTime::now()),
            internal,
        };
        crate::sys::client_event(&self.broker, &client_id, "connected", &info, None);
        *self.me.0.connection.lock() = Some(info);
        self.internal = internal;
        self.bind_policy();
        // The platform's own components (in-process links) are not held to client limits.
        let (max_rate, max_bytes_rate) = if internal {
            (0, 0)
        } else {
            self.broker.publish_limits
        };
        let limiter = PublishLimiter::new(max_rate, max_bytes_rate, now);
        if limiter.is_active() {
            self.limits().rate = Some(limiter);
        } else if let Some(l) = self.limits.as_mut() {
            l.rate = None;
        }
        if let Some(l) = self.limits.as_mut() {
            l.until = None;
            l.timer = None;
        }
        self.link = Some(Box::new(link));
        self.me.0.online.store(true, Ordering::Relaxed);
        // The platform's own links are not network connections.
        if !internal {
            Metrics::add(&self.broker.metrics.connections, 1);
            Metrics::add(&self.broker.metrics.connections_total, 1);
        }
        self.session.attach(
            now,
            &connect,
            assigned_id,
            session_present,
            &mut work(&mut self.work).out,
        );
        self.perform();
        // Bytes that arrived right behind CONNECT are already buffered.
        self.decode_all();
    }

    /// Shows the queue and in-flight counts to `/metrics` and the client list; a store only
    /// when they changed keeps an idle session's shared line untouched.
    fn publish_depths(&self) {
        let shared = &self.me.0;
        let queued = u32::try_from(self.session.queued_len()).unwrap_or(u32::MAX);
        let inflight = u32::try_from(self.session.inflight_len()).unwrap_or(u32::MAX);
        if shared.queued.load(Ordering::Relaxed) != queued {
            shared.queued.store(queued, Ordering::Relaxed);
        }
        if shared.inflight.load(Ordering::Relaxed) != inflight {
            shared.inflight.store(inflight, Ordering::Relaxed);
        }
    }

    /// The session as the admin API shows it.
    fn inspect(&self) -> Inspected {
        Inspected {
            subscriptions: self
                .session
                .subscriptions()
                .map(|s| SubscriptionInfo {
                    filter: s.filter.to_string(),
                    share_group: s.share_group.as_ref().map(|g| g.to_string()),
                    qos: s.entry.options.qos as u8,
                    no_local: s.entry.options.no_local,
                    retain_as_published: s.entry.options.retain_as_published,
                    identifier: s.entry.identifier.map(|i| i.get()),
                })
                .collect(),
            queued: self.session.queued_len(),
            inflight: self.session.inflight_len(),
        }
    }

    /// Gives the session the policy for its client under the rules in force now.
    fn bind_policy(&mut self) {
        let (access, generation) = self.broker.access();
        self.access_generation = generation;
        if self.internal {
            self.session.set_policy(thingmq_broker::AllowAll::shared());
        } else if self.identified {
            let client = thingmq_auth::ClientInfo {
                client_id: self.client_id().to_string(),
                username: self.username().map(str::to_owned),
            };
            self.session
                .set_policy(access.policy_for(self.listener as usize, client));
        }
    }

    /// Replaces an ended session with a new one under a new identity in the registry.
    fn fresh_session(&mut self) {
        // The timer entry is the old session's.
        self.broker.timers.cancel(&self.me.0);
        let client_id = self.me.0.client_id.clone();
        let me = self.broker.new_session_ref(client_id.clone());
        let mut registry = self.broker.registry.lock();
        if let Some(h) = registry.get(&client_id).filter(|h| h.session == self.me) {
            let control = h.control.clone();
            registry.insert(SessionHandle {
                session: me.clone(),
                control,
            });
        }
        drop(registry);
        self.me = me;
        self.session = Session::new(self.broker.settings.clone());
        if let Some(w) = self.work.as_mut() {
            w.backlog.clear();
        }
        self.bind_policy();
    }

    fn on_read(&mut self, n: io::Result<usize>) {
        match n {
            Ok(0) | Err(_) => self.lost(),
            Ok(n) => {
                Metrics::add(&self.broker.metrics.bytes_received, n as u64);
                self.decode_all();
            }
        }
    }

    fn decode_all(&mut self) {
        let max = self.broker.settings.max_packet_size;
        // One clock read for everything one socket read brought: the packets arrived together,
        // and a read per packet was ~2.5% of a QoS 1 fan-in profile.
        let now = Instant::now();
        self.active(now);
        while let Some(link) = self.link.as_mut() {
            if let Some(rate) = self.limits.as_mut().and_then(|l| l.rate.as_mut()) {
                if let Some(until) = rate.blocked_until(now) {
                    self.throttle(now, until);
                    break;
                }
            }
            let before = link.rbuf.len();
            match decode(&mut link.rbuf, self.session.protocol(), max) {
                Ok(Some(packet)) => {
                    if let Packet::Publish(p) = &packet {
                        let m = &self.broker.metrics;
                        Metrics::add(&m.messages_received, 1);
                        Metrics::add(&m.received_by_qos[p.qos as usize], 1);
                        if let Some(rate) = self.limits.as_mut().and_then(|l| l.rate.as_mut()) {
                            rate.publish(now, before - link.rbuf.len());
                        }
                    }
                    if let Err(v) =
                        self.session
                            .handle_packet(now, packet, &mut work(&mut self.work).out)
                    {
                        self.log_violation(&v);
                    }
                    self.perform();
                }
                Ok(None) => break,
                Err(e) => {
                    let v = Violation::Decode(e);
                    self.log_violation(&v);
                    self.session.reject(now, &v, &mut work(&mut self.work).out);
                    self.perform();
                }
            }
        }
    }

    /// Stops reading the client until `until`: it publishes faster than its limits.
    fn throttle(&mut self, now: Instant, until: Instant) {
        let limits = self.limits();
        limits.until = Some(until);
        let logged = limits.throttle_log.check(now);
        Metrics::add(&self.broker.metrics.publish_throttled, 1);
        if let Some(more) = logged {
            tracing::info!(
                client_id = %self.client_id(),
                pause = ?until.saturating_duration_since(now),
                also_throttled_since_last_line = more,
                "publish rate limit reached (limits.max_publish_rate / max_publish_bytes_rate); \
                 not reading from the client until it is back under"
            );
        }
    }

    fn log_violation(&self, v: &Violation) {
        let m = &self.broker.metrics;
        match v {
            Violation::Decode(DecodeError::PacketTooLarge { .. }) => {
                Metrics::add(&m.packets_too_large, 1)
            }
            Violation::Mqtt_3_3_4_7 => Metrics::add(&m.receive_maximum_exceeded, 1),
            _ => {}
        }
        Metrics::add(&m.protocol_errors, 1);
        tracing::info!(
            client_id = %self.client_id(),
            reason = %v.reason_code(),
            "closing connection: {v}"
        );
    }

    fn on_inbox(&mut self) {
        let now = Instant::now();
        self.active(now);
        // Keep taking batches while the client's write buffer has room: a subscriber fed by
        // many publishers gets one turn for each of theirs, and one batch per turn made its
        // bounded inbox overflow while the broker still had CPU to spare.
        for _ in 0..MAX_BATCHES_PER_TURN {
            // Read before taking: whoever routed what we take submitted their store
            // changes before pushing it (read again per batch: publishers on other threads
            // keep pushing).
            let submitted = self.broker.store.as_ref().map(|s| s.submitted());
            let w = work(&mut self.work);
            let mut routed = std::mem::take(&mut w.routed);
            let from_backlog = w.backlog.len().min(DELIVERY_BATCH);
            routed.extend(w.backlog.drain(..from_backlog));
            self.me
                .0
                .inbox
                .drain_into(&mut routed, DELIVERY_BATCH - from_backlog);
            // A QoS 1/2 message is not sent before its publisher's batch is stored (or a
            // crash could make the publisher send it again: a duplicate, even for QoS 2).
            // QoS 0 promises nothing of the kind, so it does not wait — which keeps `$SYS`
            // (e.g. `$SYS/broker/store/status`) flowing while the store is failing.
            if let Some(submitted) = submitted.filter(|_| {
                routed
                    .iter()
                    .any(|r| r.qos != thingmq_codec::QoS::AtMostOnce)
            }) {
                self.wait_seq = self.wait_seq.max(submitted);
            }
            let taken = routed.len();
            for r in routed.drain(..) {
                self.session.deliver(now, r, &mut work(&mut self.work).out);
            }
            work(&mut self.work).routed = routed;
            self.perform();
            let room = self
                .link
                .as_ref()
                .is_some_and(|l| l.wbuf.len() < WRITE_HIGH_WATER);
            if taken < DELIVERY_BATCH || !room {
                break;
            }
        }
    }

    fn lost(&mut self) {
        tracing::debug!(client_id = %self.client_id(), "connection lost");
        self.session
            .connection_lost(Instant::now(), &mut work(&mut self.work).out);
        self.perform();
        self.close_connection();
    }

    /// Performs the session's outputs in order; outputs caused by performing them (e.g. the
    /// PUBACK after routing) are performed after.
    fn perform(&mut self) {
        while let Some(w) = self.work.as_mut().filter(|w| !w.out.is_empty()) {
            let spare = std::mem::take(&mut w.batch);
            let mut batch = std::mem::replace(&mut w.out, spare);
            for output in batch.drain(..) {
                self.apply(output);
            }
            work(&mut self.work).batch = batch;
        }
        if let Some(store) = &self.broker.store {
            self.me
                .0
                .durable
                .store(self.session.persists(), Ordering::Release);
            if let Some(w) = self.work.as_mut().filter(|w| !w.ops.is_empty()) {
                let seq = store.submit(std::mem::take(&mut w.ops));
                self.wait_seq = self.wait_seq.max(seq);
            }
        }
    }

    fn apply(&mut self, output: Output) {
        match output {
            Output::Send(packet) => self.send(&packet),
            Output::Publish { message, ack } => {
                if let Some(a) = ack.filter(|a| a.qos == thingmq_codec::QoS::ExactlyOnce) {
                    if self.broker.store.is_some() && self.session.persists() {
                        // Stored with the message: a resend after a crash is not routed again.
                        work(&mut self.work).ops.push(thingmq_store::Op::PutQos2 {
                            client_id: crate::persist::store_key(&self.me.0.client_id),
                            packet_id: a.packet_id.get(),
                        });
                    }
                }
                let ops = &mut work(&mut self.work).ops;
                let (n, seq) = self.broker.publish(&message, Some(&self.me), ops);
                self.wait_seq = self.wait_seq.max(seq);
                if let Some(ack) = ack {
                    let reason = if n == 0 {
                        ReasonCode::NoMatchingSubscribers
                    } else {
                        ReasonCode::Success
                    };
                    self.session
                        .publish_done(ack, reason, &mut work(&mut self.work).out);
                }
            }
            Output::Will(message) => {
                tracing::debug!(client_id = %self.client_id(), topic = %message.topic, "publishing will");
                let (_, seq) = self
                    .broker
                    .publish(&message, None, &mut work(&mut self.work).ops);
                self.wait_seq = self.wait_seq.max(seq);
            }
            // Only SUBSCRIBE needs the time: reading the clock for every output (each
            // delivered PUBLISH) cost ~7% of a fan-out profile.
            Output::Subscribe(record) => self.subscribe(Instant::now(), record),
            Output::Unsubscribe(record) => {
                self.broker.router.write().unsubscribe(
                    &record.filter,
                    record.share_group.as_deref(),
                    &self.me,
                );
            }
            Output::Close => self.close_connection(),
            Output::Dropped(reason) => {
                let m = &self.broker.metrics;
                let counter = match reason {
                    DropReason::QueueFull => &m.dropped_queue_full,
                    DropReason::Expired => &m.dropped_expired,
                    DropReason::TooLarge => &m.dropped_too_large,
                    DropReason::Offline => &m.dropped_offline,
                    DropReason::NotAuthorized => &m.denied,
                };
                Metrics::add(counter, 1);
                if matches!(reason, DropReason::QueueFull | DropReason::TooLarge) {
                    if let Some(more) = self.limits().drop_log.check(Instant::now()) {
                        tracing::warn!(
                            client_id = %self.client_id(),
                            ?reason,
                            also_dropped_since_last_line = more,
                            "message dropped for this client (mqtt.max_queued_messages / \
                             max_queued_bytes, or larger than its Maximum Packet Size)"
                        );
                    }
                }
            }
            Output::Denied { action, topic } => {
                Metrics::add(&self.broker.metrics.denied, 1);
                tracing::info!(client_id = %self.client_id(), action, %topic, "not authorized");
            }
            Output::Persist(op) => {
                if let Some(store) = &self.broker.store {
                    let username = self.username();
                    let listener = self
                        .broker
                        .listener_ref(self.internal, self.listener as usize);
                    let op = crate::persist::op(
                        self.client_id(),
                        (username, &listener),
                        op,
                        store.clock,
                    );
                    work(&mut self.work).ops.push(op);
                }
            }
            Output::Ended { orphans } => {
                // The task stops (or, on a clean-start reconnect, starts a fresh session)
                // once the session reports it has ended.
                tracing::debug!(client_id = %self.client_id(), "session ended");
                let ops = &mut work(&mut self.work).ops;
                let seq = self.broker.redistribute(orphans, &self.me, ops);
                self.wait_seq = self.wait_seq.max(seq);
            }
        }
    }

    fn subscribe(&mut self, now: Instant, record: SubscriptionRecord) {
        let is_new = self.broker.router.write().subscribe(
            &record.filter,
            record.share_group.as_deref(),
            self.me.clone(),
            record.entry,
        );
        let options = record.entry.options;
        // Retained messages are not sent for shared subscriptions (§4.8.2).
        let send_retained = record.share_group.is_none()
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => is_new,
                RetainHandling::Never => false,
            };
        if !send_retained {
            return;
        }
        let mut messages = Vec::new();
        self.broker
            .retained
            .read()
            .matching(&record.filter, &mut messages);
        // Queued for a persistent session, a QoS 1/2 retained message is its message like
        // any other routed to it: stored (a copy: the retained one may be replaced) with a
        // queue entry, in this packet's batch, so it is delivered after a crash even if it
        // was not sent yet. The SUBACK waits for that batch like everything this packet did.
        let store = self
            .broker
            .store
            .as_ref()
            .filter(|_| self.session.persists());
        for message in messages {
            if message.is_expired(now) {
                continue;
            }
            let mut routed = Routed {
                qos: message.qos.min(options.qos),
                message,
                // Retained messages sent on subscribe carry RETAIN [MQTT-3.3.1-8].
                retain: true,
                subscription_ids: record.entry.identifier.into_iter().collect(),
                share: None,
                store_id: None,
            };
            if let Some(store) = store.filter(|_| routed.qos != thingmq_codec::QoS::AtMostOnce) {
                let id = store.message_id();
                let ops = &mut work(&mut self.work).ops;
                ops.push(thingmq_store::Op::PutMessage {
                    id,
                    record: crate::persist::message_record(&routed.message, store.clock),
                });
                ops.push(thingmq_store::Op::PutEntry {
                    client_id: crate::persist::store_key(&self.me.0.client_id),
                    message_id: id,
                    entry: crate::persist::entry_record(&routed),
                });
                routed.store_id = Some(id);
            }
            work(&mut self.work).backlog.push_back(routed);
        }
    }

    fn send(&mut self, packet: &Packet) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if let Packet::Publish(p) = packet {
            let m = &self.broker.metrics;
            Metrics::add(&m.messages_sent, 1);
            Metrics::add(&m.sent_by_qos[p.qos as usize], 1);
        }
        if let Err(e) = encode(packet, self.session.protocol(), &mut link.wbuf) {
            tracing::warn!(client_id = %self.client_id(), "cannot encode packet: {e}");
        }
    }

    /// When the task hibernates unless something happens first: `[limits] hibernate_after`
    /// after its last activity, if nothing it is doing stops it from hibernating.
    fn hibernate_at(&self) -> Option<Instant> {
        let dormitory = self.broker.dormitory.as_ref()?;
        if !self.can_hibernate() {
            return None;
        }
        let active = self.me.0.active_at.load(Ordering::Relaxed);
        let after = u64::try_from(dormitory.after.as_millis()).unwrap_or(u64::MAX);
        Some(self.broker.timers.instant_of(active.saturating_add(after)))
    }

    /// Nothing is in progress that a hibernating task could not pick up again: no partial
    /// packet read, no bytes to write, no work, no store batch or throttle to wait for, and
    /// a connection (if any) that is plain TCP.
    fn can_hibernate(&self) -> bool {
        self.started
            && !self.stopping
            && !self.session.is_ended()
            && self.work.as_ref().is_none_or(|w| w.is_idle())
            && self.limits.as_ref().is_none_or(|l| l.until.is_none())
            && self
                .broker
                .store
                .as_ref()
                .is_none_or(|s| s.is_committed(self.wait_seq))
            && self.link.as_ref().is_none_or(|l| {
                l.rbuf.is_empty()
                    && l.wbuf.is_empty()
                    && !l.unflushed
                    && (*l.io).as_any().is::<tokio::net::TcpStream>()
            })
    }

    /// Records activity (a read, a delivery, a wake-up), which puts hibernation off.
    fn active(&self, now: Instant) {
        if self.broker.dormitory.is_some() {
            let ms = self.broker.timers.now_ms(now);
            self.me.0.active_at.store(ms, Ordering::Relaxed);
        }
    }

    /// The connection, taken out to hibernate (with the buffers the task lets go of when
    /// it waits: a hibernating task keeps none).
    pub(crate) fn take_link(&mut self) -> Option<Link> {
        self.release_idle_buffers();
        self.link.take().map(|l| *l)
    }

    /// The connection back from hibernation.
    pub(crate) fn resume_link(&mut self, link: Link) {
        self.link = Some(Box::new(link));
    }

    fn username(&self) -> Option<&str> {
        self.username.as_deref().map(|u| &**u)
    }

    pub(crate) fn client_id(&self) -> &ClientId {
        &self.me.0.client_id
    }

    pub(crate) fn dormitory(&self) -> Option<&Arc<crate::hibernate::Dormitory>> {
        self.broker.dormitory.as_ref()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.broker.metrics
    }

    /// Leaves `cx`'s waker (a hibernating task's) wherever something can happen to the
    /// session: its control queue, its inbox and the timers. True if something already has.
    pub(crate) fn wait_asleep(&mut self, cx: &mut Context<'_>) -> bool {
        let control = self.control.register(cx.waker());
        // The inbox's waker is also the one the session's timer entry wakes: it goes in
        // before the deadline.
        let inbox = self.me.0.inbox.poll_ready(cx).is_ready();
        let timers = &self.broker.timers;
        let due = self
            .session
            .next_deadline()
            .is_some_and(|d| timers.poll(&self.me.0, d).is_ready());
        control || inbox || due
    }

    /// Woken from hibernation: the wake-up counts as activity, so the task handles what woke
    /// it before it may hibernate again. (Its timer entry stays: it names the session, not
    /// the sleeper.)
    pub(crate) fn woke(&mut self) {
        self.active(Instant::now());
    }

    /// The parked socket could not be taken back (or put away): the connection is lost.
    pub(crate) fn lost_while_asleep(&mut self) {
        // What `close_connection` does for a connection it still holds; then as any loss.
        self.disconnected();
        self.lost();
    }

    /// Drops the connection; unwritten bytes (e.g. a DISCONNECT with a reason) are written by
    /// a short-lived task so this one never blocks on a slow client.
    fn close_connection(&mut self) {
        if let Some(link) = self.link.take() {
            self.disconnected();
            // The connection's places under the connection caps are given back now, not
            // when the lingering close below is over: the client is gone for the broker.
            let Link {
                mut io, mut wbuf, ..
            } = *link;
            let committed = committed(&self.broker, self.wait_seq);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_LINGER, async {
                    committed.await;
                    let _ = io.write_all_buf(&mut wbuf).await;
                    let _ = io.shutdown().await;
                    // Lingering close: read (and discard) what the client still sends until
                    // it closes too. Closing a socket with unread bytes makes the kernel send
                    // RST, which can destroy the DISCONNECT (reason code) before the client
                    // reads it.
                    let mut sink = [0u8; 4096];
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    }

    /// Marks the client offline: the connection is gone.
    fn disconnected(&mut self) {
        self.me.0.online.store(false, Ordering::Relaxed);
        if let Some(info) = self.me.0.connection.lock().take() {
            let reason = self
                .session
                .close_reason()
                .unwrap_or(CloseReason::ConnectionLost);
            crate::sys::client_event(
                &self.broker,
                &self.me.0.client_id,
                "disconnected",
                &info,
                Some(&reason.name()),
            );
        }
        if !self.internal {
            self.broker
                .metrics
                .connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes this task from the registry (unless a newer session owns the id) and passes
    /// on connections that were sent to it meanwhile.
    fn leave_registry(&mut self) {
        self.broker
            .registry
            .lock()
            .remove_if_owned(&self.me.0.client_id, &self.me);
        self.control.close();
        while let Some(control) = self.control.try_recv() {
            // Admin requests are dropped unanswered: the session is gone.
            if let Control::Attach(a) = control {
                // Admitted afresh, holding the server's shutdown open as its handshake did:
                // this task may be the last one the shutdown waits for.
                let alive = self.broker.alive.as_ref().map(|w| w.upgrade());
                if matches!(alive, Some(None)) {
                    // The server is past waiting for handshakes: the connection closes.
                    tracing::debug!(client_id = %a.connect.client_id, "connection dropped: server shutting down");
                    continue;
                }
                let broker = self.broker.clone();
                tokio::spawn(async move {
                    admit(broker, *a).await;
                    drop(alive);
                });
            }
        }
    }
}

/// The spawned future of a session task: the task's loop. It waits in one place
/// ([`SessionTask::poll_wake`]), so it needs no `async fn`, and tokio's task holds the
/// session task inline — one allocation per session instead of an `async fn`'s future plus
/// the boxed task it drives (~400 bytes of every idle connection). The task is moved out
/// when it hibernates ([`crate::hibernate`]), which ends the tokio task.
#[derive(Debug)]
pub(crate) struct Running(Option<SessionTask>);

impl Running {
    pub(crate) fn new(task: SessionTask) -> Running {
        Running(Some(task))
    }
}

impl Future for Running {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(task) = this.0.as_mut() else {
            return Poll::Ready(());
        };
        if !task.started {
            task.started = true;
            task.start();
        }
        loop {
            match ready!(task.turn(cx)) {
                Next::Continue => {}
                Next::Done => break,
                Next::Hibernate => {
                    // `hibernate_at` is only ever set with a dormitory.
                    if let Some(d) = task.broker.dormitory.clone() {
                        if let Some(task) = this.0.take() {
                            crate::hibernate::hibernate(&d, task);
                        }
                        return Poll::Ready(());
                    }
                }
            }
        }
        task.close_connection();
        task.leave_registry();
        this.0 = None;
        Poll::Ready(())
    }
}

impl Drop for SessionTask {
    fn drop(&mut self) {
        self.broker.timers.cancel(&self.me.0);
        if self.broker.metrics.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.broker.sessions_done.notify_waiters();
        }
    }
}

/// A listener's index as the task keeps it (there are never 4 billion listeners).
fn listener_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Bytes read at most per read into an empty buffer.
const READ_CHUNK: usize = 8 * 1024;

/// Reads what the socket has. With no partial packet buffered the read goes to a buffer on
/// the stack and only the bytes that came are copied into a buffer of their size, so a
/// connection keeps no read buffer while it waits; behind a partial packet they are appended.
fn poll_read_part(l: &mut Link, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut rb = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(&mut l.io).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    l.rbuf.extend_from_slice(rb.filled());
    Poll::Ready(Ok(n))
}

/// Writes what is buffered, or flushes once all is written (TLS and WebSocket streams may
/// hold written bytes until flushed). Pending without a waker when there is nothing to do:
/// only this task adds to the buffer, and it polls again after doing so.
fn poll_write_part(l: &mut Link, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if !l.wbuf.is_empty() {
        let n = ready!(Pin::new(&mut l.io).poll_write(cx, &l.wbuf))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        l.wbuf.advance(n);
        l.unflushed = true;
        if l.wbuf.is_empty() {
            // An idle connection keeps no write buffer.
            l.wbuf = BytesMut::new();
        }
        return Poll::Ready(Ok(n));
    }
    if l.unflushed {
        ready!(Pin::new(&mut l.io).poll_flush(cx))?;
        l.unflushed = false;
        return Poll::Ready(Ok(0));
    }
    Poll::Pending
}

/// Polls a timer for `deadline`, making it on first use and moving it when the deadline
/// changed.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if t.deadline() != deadline {
        t.as_mut().reset(deadline);
    }
    t.as_mut().poll(cx)
}

/// Resolves once store batch `seq` is applied (at once without a store).
fn committed(broker: &Broker, seq: u64) -> impl std::future::Future<Output = ()> + Send + 'static {
    let wait = broker.store.as_ref().map(|s| s.committed(seq));
    async move {
        if let Some(w) = wait {
            w.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection holds one task and its future for as long as it is connected, so
    /// their sizes are most of the memory of an idle connection (docs/benchmarks.md). The
    /// bounds hold for debug builds, whose futures are larger than release ones.
    #[tokio::test]
    async fn an_idle_session_task_and_its_future_stay_small() {
        let broker = Arc::new(Broker::new(
            thingmq_broker::BrokerSettings::default(),
            1000,
            crate::access::AccessControl::load(&[]).unwrap(),
            None,
        ));
        let me = broker.new_session_ref("c".into());
        let (_tx, rx) = crate::control::channel();
        let task = SessionTask::new(broker, me, rx);
        let task_size = std::mem::size_of_val(&task);
        let session_size = std::mem::size_of::<Session>();
        // The task is the spawned future: 4,608 bytes for an `async fn` future alone with a
        // `select!` over nine futures, then 384 bytes of future driving a 776-byte boxed
        // task; 640 bytes of session with its will and alias maps inline.
        // tokio's task cell is ~104 bytes plus the future, rounded up to 128: at most 280
        // bytes of task make a 384-byte cell (408 made it 512, 536 640, 576 768). For that
        // the link is boxed, the rate limiter and log throttles share one box, and the
        // session boxes its connection state and its outgoing window and queue.
        let sleeper_size = std::mem::size_of::<crate::hibernate::Sleeper>();
        let shared_size = std::mem::size_of::<crate::broker::SessionShared>();
        println!("SessionTask {task_size} B, Session {session_size} B, Sleeper {sleeper_size} B, SessionShared {shared_size} B");
        // A hibernating session is the task and its parked socket, in one allocation: with
        // the `Arc`'s two counts at most 224 bytes, a size class of jemalloc's (232 made it
        // 256, the class of tokio's socket registrations, which hibernation frees; 320 was
        // the class before). For that the task is at most 184 bytes: the session keeps no
        // copy of the client id (the shared state has it) and its will's deadline is in the
        // will's box, the timer entry is in the shared state, the first connection waits in
        // the work box, a user name is boxed twice, listener and rules generation are `u32`s,
        // and the server's shutdown counts tasks instead of holding a channel sender in each.
        assert!(task_size <= 184, "SessionTask is {task_size} bytes");
        assert!(session_size <= 104, "Session is {session_size} bytes");
        assert!(sleeper_size + 16 <= 224, "Sleeper is {sleeper_size} bytes");
        // Each session's shared state (its `Arc` with two counts) outlives its tokio task
        // when it hibernates, and tokio's socket registration (256 bytes) does not: in the
        // same size class, the survivors kept half of every page of that class (10,000
        // connections: 2.5 MB) from going back to the system. 248 bytes was that class.
        assert!(
            shared_size + 16 <= 224,
            "SessionShared is {shared_size} bytes"
        );
    }
}
