//! State shared by all tasks: the subscription router, retained messages, the session
//! registry and metrics. The publish path takes only read locks (router) so many publishers
//! route in parallel on all cores.

use crate::access::AccessControl;
use crate::control::ControlSender;
use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::persist::{self, StoreHandle};
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use thingmq_broker::retain::RetainStore;
use thingmq_broker::router::{Delivery, Router, Subscriber};
use thingmq_broker::{BrokerSettings, ClientId, Message, Routed};
use thingmq_store::{ListenerRef, Op};

/// What the router holds for a session: its inbox and whether it is connected.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) client_id: ClientId,
    pub(crate) inbox: Inbox,
    pub(crate) online: AtomicBool,
    /// The attached connection, for the admin API; written by the session task on attach
    /// and close only.
    pub(crate) connection: Mutex<Option<crate::admin::ConnectionInfo>>,
    /// The session is kept in the store: QoS 1/2 messages routed to it are stored (once)
    /// with a queue entry for it before the publisher is acknowledged.
    pub(crate) durable: AtomicBool,
    /// Messages waiting in the session's queue and its unacknowledged deliveries, as its
    /// task last saw them: written by that task only when they change, so `/metrics` and
    /// the client list read every session's depth without asking each task.
    pub(crate) queued: AtomicU32,
    pub(crate) inflight: AtomicU32,
    /// When the session's task last had something to do, in [`crate::timers::Timers`]
    /// milliseconds: it hibernates once this is `[limits] hibernate_after` ago. (Here, not
    /// in the task, because the task's size is tight: see `session_task.rs`.)
    pub(crate) active_at: AtomicU64,
    /// The session's entry in the broker's timers (written by its task only).
    pub(crate) timer: crate::timers::Registration,
}

/// A session's deadline wakes its task through the waker in its inbox, where the task
/// leaves it before it registers the deadline.
impl crate::timers::Target for SessionShared {
    fn wake(&self) {
        self.inbox.wake();
    }
    fn registration(&self) -> &crate::timers::Registration {
        &self.timer
    }
}

/// A cheap, comparable reference to a session (by identity, not client id: a client id can
/// belong to a new session after the old one ended).
#[derive(Debug, Clone)]
pub(crate) struct SessionRef(pub(crate) Arc<SessionShared>);

/// By address: unique while a reference holds the session, and no word of its own.
impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SessionRef {}
impl Hash for SessionRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state)
    }
}
impl Subscriber for SessionRef {
    fn is_available(&self) -> bool {
        self.0.online.load(Ordering::Relaxed)
    }
}

/// A registry entry: how to reach the task that owns a client id's session.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub(crate) session: SessionRef,
    pub(crate) control: ControlSender,
}

/// Every session's [`SessionHandle`], by client id.
///
/// A set of handles found by the client id their session holds, not a map keyed by a copy
/// of it: the key would add 32 bytes per session to the table.
#[derive(Debug, Default)]
pub(crate) struct Registry(HashSet<Entry>);

/// A handle in the [`Registry`], hashed and compared by its session's client id.
#[derive(Debug)]
struct Entry(SessionHandle);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.session.0.client_id
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that the set can be searched with a `&str`.
        Borrow::<str>::borrow(self).hash(state)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        Borrow::<str>::borrow(self) == Borrow::<str>::borrow(other)
    }
}
impl Eq for Entry {}

impl Registry {
    /// The handle of `client_id`'s session.
    pub(crate) fn get(&self, client_id: &str) -> Option<&SessionHandle> {
        self.0.get(client_id).map(|e| &e.0)
    }

    /// Adds `handle`, replacing the one of the same client id.
    pub(crate) fn insert(&mut self, handle: SessionHandle) {
        self.0.replace(Entry(handle));
    }

    /// Removes `client_id`'s handle if it is still `session`'s (a newer session may have
    /// taken the client id meanwhile).
    pub(crate) fn remove_if_owned(&mut self, client_id: &str, session: &SessionRef) {
        if self.get(client_id).is_some_and(|h| h.session == *session) {
            self.0.remove(client_id);
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &SessionHandle> {
        self.0.iter().map(|e| &e.0)
    }
}

/// The broker's shared state.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) settings: Arc<BrokerSettings>,
    pub(crate) outbound_queue: usize,
    /// Per-connection publish limits: (messages/s, bytes/s), 0 = none (`[limits]`).
    pub(crate) publish_limits: (u64, u64),
    pub(crate) router: RwLock<Router<SessionRef>>,
    pub(crate) retained: RwLock<RetainStore<Arc<Message>>>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    /// Password and ACL rules; replaced as a whole on reload.
    access: RwLock<Arc<AccessControl>>,
    /// Bumped on every reload, so session tasks know to rebind their policy (wrapping:
    /// only compared for equality).
    access_generation: AtomicU32,
    /// Password checks running at once. Each argon2id check takes ~19 MiB and tens of
    /// milliseconds, so a CONNECT flood must queue here rather than exhaust memory.
    pub(crate) password_checks: tokio::sync::Semaphore,
    /// Publish `$SYS/brokers/clients/{connected,disconnected}` events (`sys.client_events`).
    pub(crate) client_events: bool,
    /// The store task, when sessions are persisted.
    pub(crate) store: Option<Arc<StoreHandle>>,
    /// Keeps limits that bite often from flooding the log.
    pub(crate) limit_logs: crate::rate::LimitLogs,
    /// Each listener as `protocol bind-address`, in config order: how a stored session
    /// names the listener whose access rules apply to it.
    pub(crate) listeners: Vec<ByteString>,
    /// Where idle sessions hibernate (`[limits] hibernate_after`; none when 0).
    pub(crate) dormitory: Option<Arc<crate::hibernate::Dormitory>>,
    /// The deadlines of every session (run by [`crate::timers::drive`]).
    pub(crate) timers: Arc<crate::timers::Timers<SessionShared>>,
    /// The server is shutting down: a session task started from now on stops at once (those
    /// already in the registry are told by [`Broker::stop_sessions`]).
    stopping: AtomicBool,
    /// Told when the last session task is gone (`metrics.sessions` reaches 0). A count
    /// rather than a channel sender in every task: a word less of every idle session.
    pub(crate) sessions_done: tokio::sync::Notify,
    /// What keeps the server's shutdown waiting for connections on their way to a session
    /// task (a strong sender per handshake); `None` for a broker without a server (tests).
    pub(crate) alive: Option<tokio::sync::mpsc::WeakSender<()>>,
}

impl Broker {
    pub(crate) fn new(
        settings: BrokerSettings,
        outbound_queue: usize,
        access: AccessControl,
        store: Option<Arc<StoreHandle>>,
    ) -> Broker {
        Broker {
            settings: Arc::new(settings),
            outbound_queue,
            publish_limits: (0, 0),
            router: RwLock::new(Router::new()),
            retained: RwLock::new(RetainStore::new()),
            registry: Mutex::new(Registry::default()),
            metrics: Metrics::default(),
            started: Instant::now(),
            access: RwLock::new(Arc::new(access)),
            access_generation: AtomicU32::new(0),
            password_checks: tokio::sync::Semaphore::new(4),
            client_events: true,
            store,
            limit_logs: Default::default(),
            listeners: Vec::new(),
            dormitory: None,
            timers: Arc::new(crate::timers::Timers::new()),
            stopping: AtomicBool::new(false),
            sessions_done: tokio::sync::Notify::new(),
            alive: None,
        }
    }

    /// Tells every session task to stop (the server is shutting down). A message in each
    /// task's control queue rather than a channel every task watches: a watch receiver and
    /// its wait would be part of every idle connection.
    pub(crate) fn stop_sessions(&self) {
        // Set before the registry is walked: a task registered after the walk sees the
        // flag when it first runs (the registry lock orders the two).
        self.stopping.store(true, Ordering::SeqCst);
        // Told outside the lock: telling a hibernating session revives it then and there.
        let controls: Vec<ControlSender> = self
            .registry
            .lock()
            .values()
            .map(|h| h.control.clone())
            .collect();
        for c in controls {
            c.stop();
        }
    }

    /// Resolves once no session task is left.
    pub(crate) async fn sessions_gone(&self) {
        loop {
            let gone = self.sessions_done.notified();
            tokio::pin!(gone);
            // Registered before the count is read, so a last task that ends in between
            // still wakes us.
            gone.as_mut().enable();
            if self.metrics.sessions.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }

    /// Whether [`Broker::stop_sessions`] was called.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The rules in force and their generation.
    pub(crate) fn access(&self) -> (Arc<AccessControl>, u32) {
        let access = self.access.read().clone();
        (access, self.access_generation.load(Ordering::Acquire))
    }

    /// The current rules' generation (cheap; checked by session tasks).
    pub(crate) fn access_generation(&self) -> u32 {
        self.access_generation.load(Ordering::Acquire)
    }

    /// Reads the password file and ACL again. On error the old rules stay in force.
    pub(crate) fn reload_access(&self) -> Result<(), thingmq_auth::AuthError> {
        // Held across the reload so a hook added meanwhile is not lost.
        let mut access = self.access.write();
        let fresh = access.reload()?;
        *access = Arc::new(fresh);
        self.access_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Adds an access hook; sessions rebind their policies.
    pub(crate) fn add_access_hook(&self, hook: Arc<dyn crate::access::AccessHook>) {
        let mut access = self.access.write();
        *access = Arc::new(access.with_hook(hook));
        self.access_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes every session rebind its policy (a hook's answers changed).
    pub(crate) fn access_changed(&self) {
        self.access_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How the store names the listener a connection came in on (`usize::MAX`: none).
    pub(crate) fn listener_ref(&self, internal: bool, listener: usize) -> ListenerRef {
        match self.listeners.get(listener) {
            _ if internal => ListenerRef::Internal,
            Some(address) => ListenerRef::Listener {
                index: u32::try_from(listener).unwrap_or(u32::MAX),
                address: address.clone(),
            },
            None => ListenerRef::Unknown,
        }
    }

    /// The listener a restored session's access rules come from: the stored one if the
    /// configuration still has it (at the same position, or moved), else the first, with a
    /// log line. `None` for the platform's in-process link (no access rules).
    pub(crate) fn restored_listener(&self, client_id: &str, stored: &ListenerRef) -> Option<usize> {
        match stored {
            ListenerRef::Internal => None,
            // Written before listeners were recorded (store format 1).
            ListenerRef::Unknown => Some(0),
            ListenerRef::Listener { index, address } => {
                let at = usize::try_from(*index).unwrap_or(usize::MAX);
                if self.listeners.get(at) == Some(address) {
                    return Some(at);
                }
                if let Some(moved) = self.listeners.iter().position(|l| l == address) {
                    return Some(moved);
                }
                tracing::warn!(
                    client_id,
                    listener = %address,
                    "the listener of this stored session's last connection is no longer \
                     configured: the first listener's access rules apply to it until its \
                     client reconnects"
                );
                Some(0)
            }
        }
    }

    /// A new session identity with its inbox.
    pub(crate) fn new_session_ref(&self, client_id: ClientId) -> SessionRef {
        SessionRef(Arc::new(SessionShared {
            client_id,
            inbox: Inbox::new(),
            online: AtomicBool::new(false),
            connection: Mutex::new(None),
            durable: AtomicBool::new(false),
            queued: AtomicU32::new(0),
            inflight: AtomicU32::new(0),
            active_at: AtomicU64::new(self.timers.now_ms(Instant::now())),
            timer: Default::default(),
        }))
    }

    /// Publishes a message: updates the retained store when RETAIN is set, then hands a copy
    /// to every matching subscriber. Returns how many subscribers it was routed to and the
    /// store batch to wait for before acknowledging it (0: nothing to wait for).
    ///
    /// With a store, `ops` (the publisher's pending changes) are submitted together with the
    /// message, its retained copy and one queue entry per persistent subscriber, as one
    /// atomic batch — before any subscriber can see the message, so a subscriber's later
    /// "delivered" can never reach the store ahead of the entry it removes.
    pub(crate) fn publish(
        &self,
        message: &Arc<Message>,
        publisher: Option<&SessionRef>,
        ops: &mut Vec<Op>,
    ) -> (usize, u64) {
        if message.retain {
            self.retain(message, ops);
        }
        let mut deliveries: Vec<Delivery<SessionRef>> = Vec::new();
        self.router
            .read()
            .route(&message.topic, publisher, &mut deliveries);
        let n = deliveries.len();
        let mut routed_all = Vec::with_capacity(n);
        let mut message_id = None;
        for d in deliveries {
            let mut routed = Routed {
                message: message.clone(),
                qos: message.qos.min(d.qos),
                // Live forwarding clears RETAIN unless Retain As Published [MQTT-3.3.1-9/-12].
                retain: message.retain && d.retain_as_published,
                subscription_ids: d.identifiers,
                share: d.share_group.zip(d.share_filter),
                store_id: None,
            };
            if let Some(store) = &self.store {
                // A message the router picked a `$share` group member for is that member's
                // like any other: stored with the group, so it can be handed on if the
                // member's session ends before delivering it.
                let durable = routed.qos != thingmq_codec::QoS::AtMostOnce
                    && d.subscriber.0.durable.load(Ordering::Acquire);
                if durable {
                    let id = *message_id.get_or_insert_with(|| {
                        let id = store.message_id();
                        ops.push(Op::PutMessage {
                            id,
                            record: persist::message_record(message, store.clock),
                        });
                        id
                    });
                    routed.store_id = Some(id);
                    ops.push(Op::PutEntry {
                        client_id: persist::store_key(&d.subscriber.0.client_id),
                        message_id: id,
                        entry: persist::entry_record(&routed),
                    });
                }
            }
            routed_all.push((d.subscriber, routed));
        }
        let seq = match &self.store {
            // Nothing of ours to store: nothing to wait for.
            Some(store) if !ops.is_empty() => store.submit(std::mem::take(ops)),
            _ => 0,
        };
        for (to, routed) in routed_all {
            self.push(&to, routed);
        }
        (n, seq)
    }

    /// Hands messages of an ended session's shared subscriptions to another member of the
    /// same shared subscription (§4.8.2). The ended session has already left the router, so
    /// it is not picked.
    ///
    /// With a store, a QoS 1/2 message handed to a persistent member gets a queue entry for
    /// it; `ops` (the ended session's pending changes, which forget its own entries) are
    /// submitted with those entries before any member sees a message, as in
    /// [`Broker::publish`]. Returns the batch to wait for (0: none).
    pub(crate) fn redistribute(
        &self,
        orphans: Vec<Routed>,
        ended: &SessionRef,
        ops: &mut Vec<Op>,
    ) -> u64 {
        let mut handed = Vec::with_capacity(orphans.len());
        for orphan in orphans {
            let Some((group, filter)) = &orphan.share else {
                continue;
            };
            let picked = self.router.read().pick_shared_entry(filter, group, ended);
            if let Some((member, entry)) = picked {
                let message = orphan.message;
                let mut routed = Routed {
                    qos: message.qos.min(entry.options.qos),
                    retain: message.retain && entry.options.retain_as_published,
                    subscription_ids: entry.identifier.into_iter().collect(),
                    share: orphan.share,
                    store_id: None,
                    message,
                };
                if let Some(store) = &self.store {
                    if routed.qos != thingmq_codec::QoS::AtMostOnce
                        && member.0.durable.load(Ordering::Acquire)
                    {
                        // The ended session's copy goes with its entries (in `ops`, before
                        // these), so the message is stored again under the same id.
                        let id = orphan.store_id.unwrap_or_else(|| store.message_id());
                        ops.push(Op::PutMessage {
                            id,
                            record: persist::message_record(&routed.message, store.clock),
                        });
                        ops.push(Op::PutEntry {
                            client_id: persist::store_key(&member.0.client_id),
                            message_id: id,
                            entry: persist::entry_record(&routed),
                        });
                        routed.store_id = Some(id);
                    }
                }
                handed.push((member, routed));
            }
        }
        let seq = match &self.store {
            Some(store) if !ops.is_empty() => store.submit(std::mem::take(ops)),
            _ => 0,
        };
        for (member, routed) in handed {
            self.push(&member, routed);
        }
        seq
    }

    /// Puts a routed message into a session's inbox, counting a drop.
    pub(crate) fn push(&self, to: &SessionRef, routed: Routed) {
        let limits = crate::inbox::Limits {
            qos0: self.outbound_queue,
            reliable: self.settings.max_queued_messages,
        };
        if !to.0.inbox.push(routed, limits) {
            Metrics::add(&self.metrics.dropped_queue_full, 1);
            if let Some(more) = crate::rate::should_log(&self.limit_logs.queue_full) {
                tracing::warn!(
                    client_id = %to.0.client_id,
                    also_dropped_since_last_line = more,
                    "client's outbound queue is full (it reads too slowly): message dropped \
                     (limits.outbound_queue for QoS 0, mqtt.max_queued_messages for QoS 1/2)"
                );
            }
        }
    }

    fn retain(&self, message: &Arc<Message>, ops: &mut Vec<Op>) {
        // $SYS values are the broker's own, recomputed after a restart.
        if let Some(s) = self
            .store
            .as_ref()
            .filter(|_| !message.topic.starts_with("$SYS"))
        {
            ops.push(if message.payload.is_empty() {
                Op::DeleteRetained {
                    topic: message.topic.clone(),
                }
            } else {
                Op::PutRetained {
                    topic: message.topic.clone(),
                    record: persist::message_record(message, s.clock),
                }
            });
        }
        let mut store = self.retained.write();
        if message.payload.is_empty() {
            // An empty retained payload deletes [MQTT-3.3.1-10].
            store.remove(&message.topic);
        } else {
            // Copy the payload so the stored message does not pin the publisher's whole read
            // buffer for as long as it is retained.
            let mut owned = Message::clone(message);
            owned.payload = bytes::Bytes::copy_from_slice(&message.payload);
            store.insert(&message.topic, Arc::new(owned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> Broker {
        Broker::new(
            BrokerSettings::default(),
            1000,
            AccessControl::load(&[]).unwrap(),
            None,
        )
    }

    fn handle(broker: &Broker, client_id: &str) -> SessionHandle {
        SessionHandle {
            session: broker.new_session_ref(client_id.into()),
            control: crate::control::channel().0,
        }
    }

    #[test]
    fn the_registry_finds_a_handle_by_its_sessions_client_id() {
        let b = broker();
        let mut r = Registry::default();
        let a = handle(&b, "a");
        r.insert(a.clone());
        r.insert(handle(&b, "b"));
        // Longer than a client id kept inline (23 bytes): the same by its text.
        let long = "urn:dev:6a1f0c2e-93b4-4c8e-b1d2-7f0e4a9c3b21";
        let l = handle(&b, long);
        r.insert(l.clone());
        assert!(r.get("a").is_some_and(|h| h.session == a.session));
        assert!(r.get(long).is_some_and(|h| h.session == l.session));
        assert!(r.get(&long[..23]).is_none());
        assert!(r.get("c").is_none());
        assert_eq!(r.values().count(), 3);
    }

    #[test]
    fn a_newer_session_replaces_the_entry_and_the_older_one_cannot_remove_it() {
        let b = broker();
        let mut r = Registry::default();
        let old = handle(&b, "a");
        let new = handle(&b, "a");
        r.insert(old.clone());
        r.insert(new.clone());
        assert_eq!(r.values().count(), 1);
        r.remove_if_owned("a", &old.session);
        assert!(r.get("a").is_some_and(|h| h.session == new.session));
        r.remove_if_owned("a", &new.session);
        assert!(r.get("a").is_none());
    }
}
