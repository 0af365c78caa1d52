//! The store task: the one owner of the [`Store`], and the translation between the core's
//! [`PersistOp`]s (with `Instant`s) and stored records (with wall-clock milliseconds).
//!
//! Session tasks hand it batches of [`Op`]s through [`StoreHandle::submit`], which numbers
//! them. The task (a plain thread: stores block) takes every batch waiting, applies them as
//! one atomic write — one fsync for many connections with `sync = "always"` (group commit) —
//! and then publishes the highest number applied. A session task holds back the bytes it
//! writes to its client until everything it submitted (and everything routed to it) is
//! applied, so a PUBACK/PUBREC never reaches a client before the message and every
//! persistent subscriber's queue entry are stored.

use crate::config::{StorageConfig, SyncPolicy};
use crate::metrics::{Metrics, StoreHealth};
use bytestring::ByteString;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thingmq_broker::session::{Awaiting, PersistOp, RestoredDelivery, SessionState};
use thingmq_broker::{ClientId, Message, Routed};
use thingmq_codec::PacketId;
use thingmq_store::{
    EntryRecord, EntryState, ListenerRef, MessageRecord, Op, SessionRecord, Snapshot, Store,
    StoreError,
};
use tokio::sync::watch;

/// Most operations applied in one write, so one huge backlog does not make one huge write.
const MAX_BATCH_OPS: usize = 50_000;
/// Wait before the first retry of a failed write; doubled after each failure…
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// …up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Once the server is stopping, a failing write is tried this many times in all, then given
/// up (the server must be able to stop with a dead disk).
const ATTEMPTS_WHEN_STOPPING: u32 = 3;

/// Opens the configured store.
pub(crate) fn open(config: &StorageConfig) -> Result<Box<dyn Store>, StoreError> {
    match &config.data_dir {
        Some(dir) => {
            let store = thingmq_store::DiskStore::open(dir)?;
            if let Some(old) = store.upgraded_from() {
                tracing::info!(
                    file = %store.path().display(),
                    "store upgraded from format {old} to {}: older thingmq builds no longer open it",
                    thingmq_store::FORMAT_VERSION
                );
            }
            Ok(Box::new(store))
        }
        None => Ok(Box::new(thingmq_store::MemoryStore::new())),
    }
}

/// Converts between `Instant`s and wall-clock milliseconds, anchored once at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    unix_ms: u64,
}

impl WallClock {
    pub(crate) fn now() -> WallClock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        WallClock {
            instant: Instant::now(),
            unix_ms,
        }
    }

    pub(crate) fn to_ms(self, t: Instant) -> u64 {
        match t.checked_duration_since(self.instant) {
            Some(d) => self.unix_ms.saturating_add(millis(d)),
            None => self
                .unix_ms
                .saturating_sub(millis(self.instant.duration_since(t))),
        }
    }

    /// A deadline that passed while the server was down is "now".
    pub(crate) fn to_instant(self, ms: u64) -> Instant {
        if ms >= self.unix_ms {
            self.instant + Duration::from_millis(ms - self.unix_ms)
        } else {
            self.instant
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Submitter {
    seq: u64,
    tx: Option<std_mpsc::Sender<(u64, Vec<Op>)>>,
}

/// How session tasks reach the store task.
pub(crate) struct StoreHandle {
    submitter: Mutex<Submitter>,
    submitted: AtomicU64,
    committed: watch::Receiver<u64>,
    next_message_id: AtomicU64,
    pub(crate) clock: WallClock,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`StoreHandle::close`]: a failing write is no longer retried for ever.
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("submitted", &self.submitted)
            .field("committed", &*self.committed.borrow())
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Starts the store task.
    pub(crate) fn start(
        store: Box<dyn Store>,
        config: &StorageConfig,
        next_message_id: u64,
        clock: WallClock,
        health: Arc<StoreHealth>,
    ) -> StoreHandle {
        let (tx, rx) = std_mpsc::channel();
        let (committed_tx, committed) = watch::channel(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let task = StoreTask {
            store,
            policy: config.sync,
            committed: committed_tx,
            health,
            stopping: stopping.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("thingmq-store".into())
            .spawn(move || task.run(rx))
            .expect("cannot start the store thread");
        StoreHandle {
            submitter: Mutex::new(Submitter {
                seq: 0,
                tx: Some(tx),
            }),
            submitted: AtomicU64::new(0),
            committed,
            next_message_id: AtomicU64::new(next_message_id),
            clock,
            thread: Mutex::new(Some(thread)),
            stopping,
        }
    }

    /// Queues a batch for the store; returns its number (0, nothing to wait for, when `ops`
    /// is empty).
    pub(crate) fn submit(&self, ops: Vec<Op>) -> u64 {
        if ops.is_empty() {
            return 0;
        }
        let mut s = self.submitter.lock();
        let Some(tx) = &s.tx else {
            tracing::warn!("store closed: {} changes not written", ops.len());
            return 0;
        };
        let seq = s.seq + 1;
        if tx.send((seq, ops)).is_err() {
            tracing::error!("store task gone: changes not written");
            return 0;
        }
        s.seq = seq;
        self.submitted.store(seq, Ordering::Release);
        seq
    }

    /// Number of the last batch submitted by anyone.
    pub(crate) fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Acquire)
    }

    /// True once batch `seq` (and every earlier one) is applied.
    pub(crate) fn is_committed(&self, seq: u64) -> bool {
        *self.committed.borrow() >= seq
    }

    /// Resolves once batch `seq` is applied.
    pub(crate) fn committed(
        &self,
        seq: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.committed.clone();
        async move {
            let _ = rx.wait_for(|c| *c >= seq).await;
        }
    }

    /// A fresh message id.
    pub(crate) fn message_id(&self) -> u64 {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops the store task after it has written (and synced) everything submitted.
    pub(crate) fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.submitter.lock().tx = None;
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// The store thread's state.
struct StoreTask {
    store: Box<dyn Store>,
    policy: SyncPolicy,
    /// The highest batch number applied.
    committed: watch::Sender<u64>,
    health: Arc<StoreHealth>,
    stopping: Arc<AtomicBool>,
}

impl StoreTask {
    fn run(mut self, rx: std_mpsc::Receiver<(u64, Vec<Op>)>) {
        let always = matches!(self.policy, SyncPolicy::Always);
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut gave_up = false;
        let mut ops: Vec<Op> = Vec::new();
        loop {
            let first = match self.policy {
                SyncPolicy::Interval(every) if dirty => {
                    let wait = every.saturating_sub(last_sync.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(b) => Some(b),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(b) => Some(b),
                    Err(_) => break,
                },
            };
            if let Some((mut seq, batch)) = first {
                ops.extend(batch);
                while ops.len() < MAX_BATCH_OPS {
                    match rx.try_recv() {
                        Ok((s, batch)) => {
                            seq = s;
                            ops.extend(batch);
                        }
                        Err(_) => break,
                    }
                }
                if self.write(&ops, always) {
                    dirty = !always;
                    // After a batch was given up, a later number must not say it was
                    // applied: what waited on it stays unacknowledged.
                    if !gave_up {
                        self.committed.send_replace(seq);
                    }
                } else {
                    gave_up = true;
                }
                ops.clear();
            }
            if let SyncPolicy::Interval(every) = self.policy {
                if dirty && last_sync.elapsed() >= every {
                    // A failed fsync leaves the batch dirty: tried again next interval.
                    dirty = !self.sync();
                    last_sync = Instant::now();
                }
            }
        }
        self.sync();
    }

    /// Applies one batch, retrying with back-off while it fails: nothing after it may be
    /// written first (later batches build on it — an entry's progress, a message's last
    /// reference), and nothing that waits on it may be acknowledged, so the only safe
    /// course is to wait for the store to come back. Gives up (false) only when the server
    /// is stopping.
    fn write(&mut self, ops: &[Op], sync: bool) -> bool {
        let mut failures = 0u32;
        let mut delay = RETRY_FIRST;
        loop {
            let started = Instant::now();
            let error = match self.store.apply(ops, sync) {
                Ok(()) => {
                    self.health.write_latency.observe(started.elapsed());
                    if failures > 0 {
                        self.health.failing.store(0, Ordering::Relaxed);
                        self.health.held_changes.store(0, Ordering::Relaxed);
                        tracing::warn!(
                            failed_attempts = failures,
                            changes = ops.len(),
                            "store write succeeded again: the held acknowledgements are sent"
                        );
                    }
                    return true;
                }
                Err(e) => e,
            };
            failures += 1;
            Metrics::add(&self.health.write_failures, 1);
            self.health.failing.store(1, Ordering::Relaxed);
            self.health
                .held_changes
                .store(ops.len() as u64, Ordering::Relaxed);
            if self.stopping.load(Ordering::Acquire) && failures >= ATTEMPTS_WHEN_STOPPING {
                tracing::error!(
                    changes = ops.len(),
                    failed_attempts = failures,
                    "store write failed while stopping, giving up: {error}; these changes are \
                     not stored and were not acknowledged (clients resend them)"
                );
                return false;
            }
            tracing::error!(
                changes = ops.len(),
                attempt = failures,
                retry_in = ?delay,
                "store write failed: {error}; acknowledgements that wait on it (PUBACK, \
                 PUBREC, SUBACK, CONNACK of persistent sessions, deliveries) are held until \
                 it succeeds"
            );
            self.pause(delay);
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Sleeps `d`, cut short when the server starts stopping.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// Makes everything applied durable; false (logged and counted) when that failed.
    fn sync(&mut self) -> bool {
        let started = Instant::now();
        match self.store.sync() {
            Ok(()) => {
                self.health.sync_latency.observe(started.elapsed());
                true
            }
            Err(e) => {
                Metrics::add(&self.health.write_failures, 1);
                tracing::error!("store sync failed: {e}");
                false
            }
        }
    }
}

pub(crate) fn message_record(m: &Message, clock: WallClock) -> MessageRecord {
    MessageRecord {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain,
        properties: m.properties.clone(),
        expires_at_ms: m.expires_at.map(|t| clock.to_ms(t)),
    }
}

pub(crate) fn message(r: MessageRecord, clock: WallClock) -> Message {
    Message {
        topic: r.topic,
        payload: r.payload,
        qos: r.qos,
        retain: r.retain,
        properties: r.properties,
        expires_at: r.expires_at_ms.map(|ms| clock.to_instant(ms)),
    }
}

pub(crate) fn entry_record(r: &Routed) -> EntryRecord {
    EntryRecord {
        qos: r.qos,
        retain: r.retain,
        subscription_ids: r.subscription_ids.iter().map(|i| i.get()).collect(),
        packet_id: None,
        state: EntryState::Queued,
        share: r
            .share
            .as_ref()
            .map(|(group, filter)| (ByteString::from(&**group), ByteString::from(&**filter))),
    }
}

fn state_of(a: Awaiting) -> EntryState {
    match a {
        Awaiting::Ack => EntryState::AwaitingAck,
        Awaiting::Rec => EntryState::AwaitingRec,
        Awaiting::Comp => EntryState::AwaitingComp,
    }
}

/// The store operation for a core [`PersistOp`] of `client_id`'s session, whose last
/// connection had `username` and came in on `listener`.
pub(crate) fn op(
    client_id: &ClientId,
    (username, listener): (Option<&str>, &ListenerRef),
    op: PersistOp,
    clock: WallClock,
) -> Op {
    let client_id = store_key(client_id);
    match op {
        PersistOp::Session(s) => Op::PutSession {
            client_id,
            record: SessionRecord {
                protocol: s.protocol,
                expiry_interval: s.expiry_interval,
                expires_at_ms: s.expires_at.map(|t| clock.to_ms(t)),
                connected: s.connected,
                will: s.will,
                will_at_ms: s.will_at.map(|t| clock.to_ms(t)),
                subscriptions: s.subscriptions,
                next_packet_id: s.next_packet_id,
                username: username.map(ByteString::from),
                listener: listener.clone(),
            },
        },
        PersistOp::Ended => Op::DeleteSession { client_id },
        PersistOp::Sent {
            message_id,
            packet_id,
            awaiting,
        } => Op::UpdateEntry {
            client_id,
            message_id,
            packet_id: packet_id.get(),
            state: state_of(awaiting),
        },
        PersistOp::Done { message_id } => Op::DeleteEntry {
            client_id,
            message_id,
        },
        PersistOp::Released { packet_id } => Op::DeleteQos2 {
            client_id,
            packet_id: packet_id.get(),
        },
    }
}

/// A session's key in the store. A copy: the store keeps its own strings, and a session's
/// id is kept inline (see [`ClientId`]) rather than shared with them.
pub(crate) fn store_key(client_id: &ClientId) -> ByteString {
    ByteString::from(client_id.as_str())
}

/// A stored session ready for [`thingmq_broker::session::Session::restore`].
pub(crate) struct Restored {
    pub(crate) client_id: ClientId,
    pub(crate) username: Option<String>,
    pub(crate) listener: ListenerRef,
    pub(crate) state: SessionState,
    pub(crate) deliveries: Vec<RestoredDelivery>,
    pub(crate) qos2_received: Vec<PacketId>,
}

/// Turns a loaded snapshot into retained messages and sessions; each message becomes one
/// `Arc` shared by every session that references it.
pub(crate) fn restore(snapshot: Snapshot, clock: WallClock) -> (Vec<Arc<Message>>, Vec<Restored>) {
    let messages: HashMap<u64, Arc<Message>> = snapshot
        .messages
        .into_iter()
        .map(|(id, r)| (id, Arc::new(message(r, clock))))
        .collect();
    let retained = snapshot
        .retained
        .into_values()
        .map(|r| Arc::new(message(r, clock)))
        .collect();
    let sessions = snapshot
        .sessions
        .into_iter()
        .map(|(client_id, s)| {
            let r = s.record;
            let username = r.username.as_deref().map(str::to_owned);
            let listener = r.listener.clone();
            let state = SessionState {
                protocol: r.protocol,
                expiry_interval: r.expiry_interval,
                expires_at: r.expires_at_ms.map(|ms| clock.to_instant(ms)),
                connected: r.connected,
                will: r.will,
                will_at: r.will_at_ms.map(|ms| clock.to_instant(ms)),
                subscriptions: r.subscriptions,
                next_packet_id: r.next_packet_id,
            };
            let deliveries = s
                .entries
                .into_iter()
                .filter_map(|(id, e)| {
                    let message = messages.get(&id)?.clone();
                    let sent = match (e.packet_id.and_then(PacketId::new), e.state) {
                        (Some(p), EntryState::AwaitingAck) => Some((p, Awaiting::Ack)),
                        (Some(p), EntryState::AwaitingRec) => Some((p, Awaiting::Rec)),
                        (Some(p), EntryState::AwaitingComp) => Some((p, Awaiting::Comp)),
                        _ => None,
                    };
                    Some(RestoredDelivery {
                        routed: Routed {
                            message,
                            qos: e.qos,
                            retain: e.retain,
                            subscription_ids: e
                                .subscription_ids
                                .into_iter()
                                .filter_map(std::num::NonZeroU32::new)
                                .collect(),
                            share: e
                                .share
                                .map(|(group, filter)| (Arc::from(&*group), Arc::from(&*filter))),
                            store_id: Some(id),
                        },
                        sent,
                    })
                })
                .collect();
            Restored {
                client_id: ClientId::new(&client_id),
                username,
                listener,
                state,
                deliveries,
                qos2_received: s
                    .qos2_received
                    .into_iter()
                    .filter_map(PacketId::new)
                    .collect(),
            }
        })
        .collect();
    (retained, sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_round_trips_and_past_deadlines_are_now() {
        let c = WallClock::now();
        let later = c.instant + Duration::from_secs(90);
        assert_eq!(c.to_ms(later), c.unix_ms + 90_000);
        assert_eq!(c.to_instant(c.unix_ms + 90_000), later);
        assert_eq!(c.to_instant(c.unix_ms - 5_000), c.instant);
    }

    #[test]
    fn a_stored_shared_subscription_entry_is_restored_with_its_group() {
        let clock = WallClock::now();
        let m = Message {
            topic: "a/b".into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: thingmq_codec::QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
        };
        let routed = Routed {
            message: Arc::new(m.clone()),
            qos: thingmq_codec::QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            share: Some((Arc::from("g"), Arc::from("a/#"))),
            store_id: Some(5),
        };
        let mut store = thingmq_store::MemoryStore::new();
        let session = op(
            &"c".into(),
            (None, &ListenerRef::Internal),
            PersistOp::Session(Box::new(SessionState {
                protocol: thingmq_codec::ProtocolVersion::V5,
                expiry_interval: 60,
                expires_at: None,
                connected: false,
                will: None,
                will_at: None,
                subscriptions: vec![],
                next_packet_id: 1,
            })),
            clock,
        );
        let ops = [
            session,
            Op::PutMessage {
                id: 5,
                record: message_record(&m, clock),
            },
            Op::PutEntry {
                client_id: "c".into(),
                message_id: 5,
                entry: entry_record(&routed),
            },
        ];
        store.apply(&ops, true).unwrap();
        let (_, sessions) = restore(store.load().unwrap(), clock);
        assert_eq!(sessions[0].listener, ListenerRef::Internal);
        assert_eq!(sessions[0].deliveries[0].routed, routed);
    }

    #[test]
    fn batches_are_applied_in_order_and_committed() {
        let config = StorageConfig {
            data_dir: None,
            sync: SyncPolicy::Always,
        };
        let h = StoreHandle::start(
            open(&config).unwrap(),
            &config,
            1,
            WallClock::now(),
            Default::default(),
        );
        let a = h.submit(vec![Op::DeleteRetained { topic: "x".into() }]);
        let b = h.submit(vec![Op::DeleteRetained { topic: "y".into() }]);
        assert!(b > a);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), h.committed(b))
                .await
                .unwrap()
        });
        assert!(h.is_committed(a));
        h.close();
    }
}
