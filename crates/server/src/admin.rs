//! What an operator can see and do on a running broker, for the REST API and the console:
//! an overview, the clients and their sessions, retained messages, publishing, kicking a
//! client, and every counter in Prometheus form.
//!
//! Cheap reads (registry, retained store, counters) come straight from shared state; what
//! only a session's own task knows (its subscriptions, queue and in-flight counts) is asked
//! of that task with a control message and a bounded wait, so an admin request never holds
//! a lock a publisher needs for longer than a copy.

use crate::broker::{Broker, SessionHandle, SessionRef};
use crate::metrics::Metrics;
use crate::session_task::Control;
use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thingmq_broker::router::SubscriptionEntry;
use thingmq_broker::{Message, TravellingProperties};
use thingmq_codec::QoS;
use tokio::sync::oneshot;

/// How long a session task may take to answer an admin request.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A handle for operators' requests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    broker: Arc<Broker>,
}

/// The connection currently attached to a session, as the session task recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    /// The client's address (the proxy's view for proxied connections).
    pub peer: SocketAddr,
    /// CONNECT username, or the client certificate's identity.
    pub username: Option<String>,
    /// Serialized as `3.1`, `3.1.1` or `5.0`. The enum rather than its name: a byte, where a
    /// `&str` was 16 of every session's shared state (see the size test in `session_task.rs`).
    #[serde(serialize_with = "protocol_name")]
    pub protocol: thingmq_codec::ProtocolVersion,
    /// Keep-alive in seconds as granted.
    pub keep_alive: u16,
    /// When CONNECT was accepted, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// The platform's own in-process link rather than a network client.
    pub internal: bool,
}

fn protocol_name<S: serde::Serializer>(
    v: &thingmq_codec::ProtocolVersion,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

/// One session in the client list.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    /// The client identifier.
    pub client_id: String,
    /// Whether a connection is attached.
    pub connected: bool,
    /// The attached connection, if any.
    pub connection: Option<ConnectionInfo>,
    /// Messages waiting in its queue (QoS 1/2 behind the in-flight window, or anything kept
    /// while it is offline).
    pub queued: u32,
    /// Deliveries sent and not yet acknowledged.
    pub inflight: u32,
}

/// Queue depths over all sessions, for `/metrics` (a per-session label would make one
/// series per client: too many for a fleet).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDepths {
    /// Messages waiting in all session queues.
    pub queued: u64,
    /// The deepest session queue.
    pub queued_max: u64,
    /// Sessions with at least one message waiting.
    pub sessions_queueing: u64,
    /// Unacknowledged deliveries over all sessions.
    pub inflight: u64,
    /// The most unacknowledged deliveries of one session.
    pub inflight_max: u64,
}

/// One subscription of a session.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionInfo {
    /// The topic filter (without a `$share/` prefix).
    pub filter: String,
    /// The share group for shared subscriptions.
    pub share_group: Option<String>,
    /// Granted QoS.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    pub identifier: Option<u32>,
}

/// One subscription in the broker-wide list.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionListing {
    /// The session holding it.
    pub client_id: String,
    /// The subscription itself.
    #[serde(flatten)]
    pub subscription: SubscriptionInfo,
}

/// A session in detail.
#[derive(Debug, Clone, Serialize)]
pub struct ClientDetail {
    /// Identity and connection.
    #[serde(flatten)]
    pub summary: ClientSummary,
    /// Its subscriptions. (The summary's `queued` and `inflight` are read from the session
    /// task itself here, so they are exact at this moment.)
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// A retained message.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedInfo {
    /// Its topic.
    pub topic: String,
    /// QoS it was published with.
    pub qos: u8,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
    /// Payload size in bytes.
    pub size: usize,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// Seconds left before it expires, if it has a Message Expiry Interval.
    pub expires_in_secs: Option<u32>,
}

/// Broker-wide figures.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Version string.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Clients connected now.
    pub connections: u64,
    /// Sessions (connected or not).
    pub sessions: u64,
    /// Subscriptions in the router.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Every counter by its Prometheus name.
    pub counters: Vec<Counter>,
}

/// One counter or gauge.
#[derive(Debug, Clone, Serialize)]
pub struct Counter {
    /// Prometheus metric name (without the `thingmq_` prefix).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// `counter` (only grows) or `gauge`.
    pub kind: &'static str,
    /// Empty, or the sample's Prometheus labels (e.g. `qos="1"`).
    pub labels: &'static str,
    /// Current value.
    pub value: u64,
}

/// A message to publish from the API.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Topic name (no wildcards, not `$SYS`).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0, 1 or 2 (what subscribers may receive at most).
    pub qos: QoS,
    /// Store as the topic's retained message.
    pub retain: bool,
}

/// Why an admin request could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The topic is not a valid topic name or is reserved.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// The session's task did not answer in time (it is busy or ending).
    #[error("the session did not answer in time")]
    Busy,
}

impl Admin {
    pub(crate) fn new(broker: Arc<Broker>) -> Admin {
        Admin { broker }
    }

    /// Version, uptime, counts and counters.
    pub fn overview(&self) -> Overview {
        let m = &self.broker.metrics;
        Overview {
            version: crate::VERSION,
            uptime_secs: self.broker.started.elapsed().as_secs(),
            connections: Metrics::get(&m.connections),
            sessions: Metrics::get(&m.sessions),
            subscriptions: self.broker.router.read().len(),
            retained: self.broker.retained.read().len(),
            counters: self.counters(),
        }
    }

    /// Every counter, for `/metrics`.
    pub fn counters(&self) -> Vec<Counter> {
        let mut all = Vec::new();
        self.broker
            .metrics
            .for_each(|name, labels, help, kind, value| {
                all.push(Counter {
                    name,
                    help,
                    kind,
                    labels,
                    value,
                })
            });
        all
    }

    /// All sessions, sorted by client id.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let handles: Vec<SessionHandle> = self.broker.registry.lock().values().cloned().collect();
        let mut list: Vec<ClientSummary> = handles.iter().map(summary).collect();
        list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        list
    }

    /// Every subscription in the router, sorted by filter, group and client id. Taken under
    /// the router's read lock, which publishers share; a SUBSCRIBE waiting for the write lock
    /// holds new readers back, so the walk copies only reference-counted handles.
    pub fn subscriptions(&self) -> Vec<SubscriptionListing> {
        // Under the lock only reference counts move (one filter string per trie node); the
        // listing's strings are made after it is released.
        let mut refs: Vec<SubscriptionRef> = Vec::new();
        {
            let router = self.broker.router.read();
            refs.reserve(router.len());
            let mut last: Option<Arc<str>> = None;
            router.for_each_subscription(|filter, group, s, e| {
                let filter = match &last {
                    Some(f) if &**f == filter => f.clone(),
                    _ => {
                        let f: Arc<str> = filter.into();
                        last = Some(f.clone());
                        f
                    }
                };
                refs.push((filter, group.cloned(), s.clone(), *e));
            });
        }
        let mut all: Vec<SubscriptionListing> = refs
            .into_iter()
            .map(|(filter, group, s, e)| SubscriptionListing {
                client_id: s.0.client_id.to_string(),
                subscription: SubscriptionInfo {
                    filter: filter.to_string(),
                    share_group: group.map(|g| g.to_string()),
                    qos: e.options.qos as u8,
                    no_local: e.options.no_local,
                    retain_as_published: e.options.retain_as_published,
                    identifier: e.identifier.map(|i| i.get()),
                },
            })
            .collect();
        fn key(l: &SubscriptionListing) -> (&str, Option<&str>, &str) {
            let s = &l.subscription;
            (&s.filter, s.share_group.as_deref(), &l.client_id)
        }
        all.sort_by(|a, b| key(a).cmp(&key(b)));
        all
    }

    /// Queue and in-flight depths summed over every session.
    pub fn queue_depths(&self) -> QueueDepths {
        let registry = self.broker.registry.lock();
        let mut d = QueueDepths::default();
        for h in registry.values() {
            let q = u64::from(h.session.0.queued.load(Ordering::Relaxed));
            let i = u64::from(h.session.0.inflight.load(Ordering::Relaxed));
            d.queued += q;
            d.queued_max = d.queued_max.max(q);
            d.sessions_queueing += u64::from(q > 0);
            d.inflight += i;
            d.inflight_max = d.inflight_max.max(i);
        }
        d
    }

    /// The latency histograms (session store), for `/metrics`.
    pub fn histograms(&self) -> Vec<crate::metrics::Histogram> {
        self.broker.metrics.histograms()
    }

    /// One session with its subscriptions and queues, or `None` when there is no session
    /// for that client id.
    pub async fn client(&self, client_id: &str) -> Result<Option<ClientDetail>, AdminError> {
        let Some(handle) = self.handle(client_id) else {
            return Ok(None);
        };
        let (tx, rx) = oneshot::channel();
        if handle.control.send(Control::Inspect(tx)).await.is_err() {
            return Ok(None);
        }
        let inspected = match tokio::time::timeout(ANSWER_WAIT, rx).await {
            Err(_) => return Err(AdminError::Busy),
            Ok(Err(_)) => return Ok(None),
            Ok(Ok(i)) => i,
        };
        let mut summary = summary(&handle);
        summary.queued = u32::try_from(inspected.queued).unwrap_or(u32::MAX);
        summary.inflight = u32::try_from(inspected.inflight).unwrap_or(u32::MAX);
        Ok(Some(ClientDetail {
            summary,
            subscriptions: inspected.subscriptions,
        }))
    }

    /// Disconnects a client (v5: DISCONNECT 0x98). Its will goes out and a persistent session
    /// stays. `false` when no such client is connected.
    pub async fn kick(&self, client_id: &str) -> Result<bool, AdminError> {
        let Some(handle) = self.handle(client_id) else {
            return Ok(false);
        };
        let (tx, rx) = oneshot::channel();
        if handle.control.send(Control::Kick(tx)).await.is_err() {
            return Ok(false);
        }
        match tokio::time::timeout(ANSWER_WAIT, rx).await {
            Err(_) => Err(AdminError::Busy),
            Ok(answer) => Ok(answer.unwrap_or(false)),
        }
    }

    /// Retained messages whose topic matches `filter` (all when `None`), sorted by topic.
    pub fn retained(&self, filter: Option<&str>) -> Vec<RetainedInfo> {
        let now = Instant::now();
        let store = self.broker.retained.read();
        let mut list: Vec<RetainedInfo> = match filter {
            Some(f) => {
                let mut found = Vec::new();
                store.matching(f, &mut found);
                found.iter().map(|m| retained_info(m, now)).collect()
            }
            None => store.iter().map(|(_, m)| retained_info(m, now)).collect(),
        };
        drop(store);
        list.retain(|r| r.expires_in_secs != Some(0));
        list.sort_by(|a, b| a.topic.cmp(&b.topic));
        list
    }

    /// The retained message of one topic.
    pub fn retained_get(&self, topic: &str) -> Option<RetainedInfo> {
        let now = Instant::now();
        let store = self.broker.retained.read();
        let m = store.get(topic)?;
        (!m.is_expired(now)).then(|| retained_info(m, now))
    }

    /// Deletes the retained message of one topic; `false` when there was none.
    pub fn retained_delete(&self, topic: &str) -> bool {
        let removed = self.broker.retained.write().remove(topic).is_some();
        if let (true, Some(store)) = (removed, &self.broker.store) {
            store.submit(vec![thingmq_store::Op::DeleteRetained {
                topic: topic.into(),
            }]);
        }
        removed
    }

    /// Publishes a message as the broker itself. Returns how many subscribers it reached.
    pub fn publish(&self, req: PublishRequest) -> Result<usize, AdminError> {
        if thingmq_codec::topic::validate_name(&req.topic).is_err()
            || Message::is_reserved_topic(&req.topic)
        {
            return Err(AdminError::InvalidTopic(req.topic));
        }
        let message = Arc::new(Message::new(
            Instant::now(),
            req.topic.into(),
            req.payload,
            req.qos,
            req.retain,
            TravellingProperties::default(),
        ));
        Metrics::add(&self.broker.metrics.messages_received, 1);
        Metrics::add(&self.broker.metrics.received_by_qos[req.qos as usize], 1);
        // Stored for persistent subscribers like any publish; the answer does not wait for
        // the store (there is no acknowledgement to hold back).
        Ok(self.broker.publish(&message, None, &mut Vec::new()).0)
    }

    fn handle(&self, client_id: &str) -> Option<SessionHandle> {
        self.broker.registry.lock().get(client_id).cloned()
    }
}

/// A subscription as taken under the router's lock: (filter, share group, session, options).
type SubscriptionRef = (Arc<str>, Option<Arc<str>>, SessionRef, SubscriptionEntry);

/// What a session task answers to [`Control::Inspect`].
#[derive(Debug)]
pub(crate) struct Inspected {
    pub(crate) subscriptions: Vec<SubscriptionInfo>,
    pub(crate) queued: usize,
    pub(crate) inflight: usize,
}

fn summary(h: &SessionHandle) -> ClientSummary {
    let shared = &h.session.0;
    ClientSummary {
        client_id: shared.client_id.to_string(),
        connected: shared.online.load(Ordering::Relaxed),
        connection: shared.connection.lock().clone(),
        queued: shared.queued.load(Ordering::Relaxed),
        inflight: shared.inflight.load(Ordering::Relaxed),
    }
}

fn retained_info(m: &Message, now: Instant) -> RetainedInfo {
    RetainedInfo {
        topic: m.topic.to_string(),
        qos: m.qos as u8,
        size: m.payload.len(),
        payload: m.payload.clone(),
        content_type: m.properties.content_type.as_ref().map(|c| c.to_string()),
        expires_in_secs: m.remaining_expiry(now),
    }
}

/// Milliseconds since the Unix epoch, for timestamps that cross the API.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
