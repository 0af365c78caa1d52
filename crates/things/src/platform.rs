//! The device layer's application service: feeds device messages through the [`engine`],
//! keeps products and shadows cached, stores history through the [`HistoryWriter`], and offers
//! the API applications use (shadow, set properties, call services, history).
//!
//! It does not talk MQTT itself. Whatever links it to the broker (an in-process client)
//! subscribes to `/sys/+/+/thing/#` and `/sys/+/+/rrpc/response/+`, passes each message to
//! [`Platform::handle_message`], reports connects and disconnects with
//! [`Platform::device_online`] / [`Platform::device_offline`], publishes what arrives on the
//! outbox receiver (the broker's `$SYS/brokers/clients/…` events can be passed to
//! [`Platform::handle_client_event`] for that), and calls [`Platform::expire`] (call timeouts) and
//! [`Platform::flush_shadows`] periodically.
//!
//! State sits behind one async mutex. That is fine for the rates one node sees from devices
//! (the broker's own publish path never takes it); sharding it by device is the next step if
//! it shows up in profiles.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::alink::{code, pack_post, DeviceTopic, Reply, Request, TopicKind};
use crate::engine::{self, downlink, PendingCalls, Publish};
use crate::registry::Product;
use crate::shadow::Shadow;
use crate::store::{
    HistoryWriter, Record, ServiceCallRecord, StatusChange, Store, StoreError, WriterConfig,
};
use crate::tsl::CallType;
use crate::validate::{check_property_set, check_service, Violation};

/// Why an application request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// No such product or device.
    #[error("device {0} not found")]
    NotFound(String),
    /// The arguments do not match the thing model.
    #[error("invalid params: {0}")]
    Invalid(#[from] Violation),
    /// The device is not connected (sync calls need it online).
    #[error("device {0} is offline")]
    Offline(String),
    /// The outbox to the broker is full.
    #[error("outbox full")]
    Busy,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, PlatformError>;

/// What became of a property set.
#[derive(Debug, Clone, PartialEq)]
pub enum SetOutcome {
    /// The device is online; the request went out with this message id.
    Sent(String),
    /// The device is offline; the values were stored as desired (with these versions) and go
    /// out when it reconnects.
    Desired(Vec<(String, u64)>),
}

/// How a service call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// The device replied.
    Replied(Reply),
    /// No reply before the deadline.
    TimedOut,
}

/// Counters.
#[derive(Debug, Default)]
pub struct PlatformStats {
    /// Publishes dropped because the outbox was full.
    pub outbox_dropped: AtomicU64,
    /// Messages on topics of unknown products.
    pub unknown_product: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    products: HashMap<String, Arc<Product>>,
    shadows: HashMap<(String, String), Shadow>,
    /// Shadows changed by reports and not saved yet (see [`Platform::flush_shadows`]).
    dirty: HashSet<(String, String)>,
    online: HashSet<(String, String)>,
    /// `connected_at` of each device's current connection, from the broker's client events,
    /// so the `disconnected` of a connection that was taken over does not mark the device
    /// offline.
    connections: HashMap<(String, String), i64>,
    pending: PendingCalls,
    waiters: HashMap<(String, String, String), oneshot::Sender<CallResult>>,
    next_id: u64,
}

/// Cloneable handle to the device layer.
#[derive(Debug, Clone)]
pub struct Platform {
    store: Store,
    writer: HistoryWriter,
    state: Arc<Mutex<State>>,
    outbox: mpsc::Sender<Publish>,
    stats: Arc<PlatformStats>,
}

fn key(pk: &str, dn: &str) -> (String, String) {
    (pk.to_string(), dn.to_string())
}

impl Platform {
    /// Starts the history writer; returns the handle and the outbox the link publishes from
    /// (bounded by `outbox_capacity`; when full, publishes are dropped and counted).
    pub fn start(
        store: Store,
        writer: WriterConfig,
        outbox_capacity: usize,
    ) -> (Self, mpsc::Receiver<Publish>) {
        let (writer, _task) = HistoryWriter::spawn(store.clone(), writer);
        let (outbox, rx) = mpsc::channel(outbox_capacity.max(1));
        let platform = Self {
            store,
            writer,
            state: Arc::new(Mutex::new(State::default())),
            outbox,
            stats: Arc::new(PlatformStats::default()),
        };
        (platform, rx)
    }

    /// The store, for queries (history, events, devices).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The history writer (its stats, or to flush).
    pub fn writer(&self) -> &HistoryWriter {
        &self.writer
    }

    /// The counters.
    pub fn stats(&self) -> &PlatformStats {
        &self.stats
    }

    fn send(&self, p: Publish) -> bool {
        if self.outbox.try_send(p).is_err() {
            self.stats.outbox_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Drops cached products (call after changing one in the store).
    pub async fn invalidate_product(&self, product_key: &str) {
        self.state.lock().await.products.remove(product_key);
    }

    async fn product(&self, state: &mut State, pk: &str) -> Result<Arc<Product>> {
        if let Some(p) = state.products.get(pk) {
            return Ok(p.clone());
        }
        let p = Arc::new(
            self.store
                .product(pk)
                .await?
                .ok_or_else(|| PlatformError::NotFound(pk.to_string()))?,
        );
        state.products.insert(pk.to_string(), p.clone());
        Ok(p)
    }

    async fn load_shadow(&self, state: &mut State, pk: &str, dn: &str) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(slot) = state.shadows.entry(key(pk, dn)) {
            slot.insert(self.store.shadow(pk, dn).await?);
        }
        Ok(())
    }

    /// Handles a message a device published under `/sys/…`. Topics that are not Alink device
    /// topics are ignored.
    pub async fn handle_message(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<()> {
        let Ok(topic) = DeviceTopic::parse(topic) else {
            return Ok(());
        };
        let (pk, dn) = (topic.product_key.as_str(), topic.device_name.as_str());
        let mut state = self.state.lock().await;
        let product = match self.product(&mut state, pk).await {
            Ok(p) => p,
            Err(PlatformError::NotFound(_)) => {
                self.stats.unknown_product.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if topic.kind == TopicKind::PackPost {
            let reply = self
                .pack_post(&mut state, &product, &topic, payload, now_ms)
                .await?;
            if let (Some(reply), Some(reply_topic)) = (reply, topic.reply()) {
                self.send(Publish {
                    topic: reply_topic.to_string(),
                    payload: reply.to_json().to_string().into_bytes(),
                });
            }
            return Ok(());
        }
        self.load_shadow(&mut state, pk, dn).await?;
        let shadow = state.shadows.get_mut(&key(pk, dn)).expect("just loaded");
        let out = engine::handle_uplink(&product, shadow, &topic, payload, now_ms);
        if out.shadow_changed {
            state.dirty.insert(key(pk, dn));
        }
        for r in out.records {
            self.writer.submit(r);
        }
        if let Some(reply) = out.reply {
            self.send(reply);
        }
        if let Some((_, reply)) = out.answer {
            if let Some(call) = state.pending.on_answer(pk, dn, &reply, now_ms) {
                self.log_call(pk, dn, call);
            }
            if let Some(w) =
                state
                    .waiters
                    .remove(&(pk.to_string(), dn.to_string(), reply.id.clone()))
            {
                let _ = w.send(CallResult::Replied(reply));
            }
        }
        Ok(())
    }

    /// A gateway's `pack/post`: its own properties and events plus its sub-devices'. Each
    /// sub-device must be registered with this gateway (`Device::gateway`) and enabled. The
    /// pack is checked as a whole first: in strict mode one violation refuses all of it.
    /// Returns the reply to send (`None` when the gateway asked for no ack).
    async fn pack_post(
        &self,
        state: &mut State,
        gateway: &Product,
        topic: &DeviceTopic,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Option<Reply>> {
        let req = match Request::parse(payload) {
            Ok(r) => r,
            Err(e) => return Ok(Some(Reply::error("", e.code(), e.to_string()))),
        };
        let answer = |reply: Reply| Ok(req.ack.then_some(reply));
        let pack = match req.params_object().and_then(|p| pack_post(p, now_ms)) {
            Ok(p) => p,
            Err(e) => return answer(Reply::error(&req.id, e.code(), e.to_string())),
        };
        let gw = (topic.product_key.clone(), topic.device_name.clone());
        let mut parts = vec![(
            Arc::new(gateway.clone()),
            gw.1.clone(),
            pack.properties,
            pack.events,
        )];
        for sub in pack.sub_devices {
            let name = format!("{}/{}", sub.product_key, sub.device_name);
            let device = self
                .store
                .device(&sub.product_key, &sub.device_name)
                .await?;
            let refuse = match &device {
                None => Some((
                    code::DEVICE_NOT_FOUND,
                    format!("sub-device {name} not found"),
                )),
                Some(d) if d.gateway.as_ref() != Some(&gw) => Some((
                    code::INVALID_PARAMS,
                    format!("{name} is not a sub-device of this gateway"),
                )),
                Some(d) if !d.enabled => Some((
                    code::DEVICE_DISABLED,
                    format!("sub-device {name} is disabled"),
                )),
                Some(_) => None,
            };
            if let Some((c, m)) = refuse {
                return answer(Reply::error(&req.id, c, m));
            }
            let product = match self.product(state, &sub.product_key).await {
                Ok(p) => p,
                Err(PlatformError::NotFound(_)) => {
                    let m = format!("product of sub-device {name} not found");
                    return answer(Reply::error(&req.id, code::DEVICE_NOT_FOUND, m));
                }
                Err(e) => return Err(e),
            };
            parts.push((product, sub.device_name, sub.properties, sub.events));
        }
        let mut checked = Vec::new();
        for (product, dn, props, events) in &parts {
            match engine::check_report(product, dn, props, events) {
                Ok(c) => checked.push((product.product_key.clone(), dn.clone(), c)),
                Err(v) => {
                    let m = format!("invalid params: {}/{dn}: {v}", product.product_key);
                    return answer(Reply::error(&req.id, code::INVALID_PARAMS, m));
                }
            }
        }
        let mut failed = Map::new();
        for (pk, dn, c) in checked {
            self.load_shadow(state, &pk, &dn).await?;
            let shadow = state.shadows.get_mut(&key(&pk, &dn)).expect("just loaded");
            let before = shadow.version;
            shadow.apply_reported(c.reported.iter().map(|(k, v, t)| (k.as_str(), v, *t)));
            if shadow.version != before {
                state.dirty.insert(key(&pk, &dn));
            }
            for r in c.records {
                self.writer.submit(r);
            }
            if let Some(f) = c.failed {
                failed.insert(format!("{pk}/{dn}"), f);
            }
        }
        let data = if failed.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({ "checkFailedData": failed })
        };
        answer(Reply::ok(&req.id, data))
    }

    /// Saves the shadows that reports changed since the last call, in one transaction. The
    /// runtime calls this on a timer (and at shutdown) so a report costs no database round
    /// trip; the cached shadow is always current, the stored one lags by at most one period.
    pub async fn flush_shadows(&self) -> Result<usize> {
        let batch: Vec<(String, String, Shadow)> = {
            let mut state = self.state.lock().await;
            let dirty: Vec<_> = state.dirty.drain().collect();
            dirty
                .into_iter()
                .filter_map(|k| {
                    let s = state.shadows.get(&k)?.clone();
                    Some((k.0, k.1, s))
                })
                .collect()
        };
        if let Err(e) = self.store.put_shadows(&batch).await {
            // Keep them dirty so the next flush retries.
            let mut state = self.state.lock().await;
            state
                .dirty
                .extend(batch.into_iter().map(|(pk, dn, _)| (pk, dn)));
            return Err(e.into());
        }
        Ok(batch.len())
    }

    fn log_call(&self, pk: &str, dn: &str, call: ServiceCallRecord) {
        self.writer.submit(Record::ServiceCall {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            call,
        });
    }

    /// A device connected: records it, and sends it the desired values it has not applied.
    pub async fn device_online(
        &self,
        pk: &str,
        dn: &str,
        ip: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        self.store.mark_online(pk, dn, now_ms, ip).await?;
        self.writer.submit(Record::Status {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            change: StatusChange {
                time: now_ms,
                online: true,
                reason: "connect".into(),
                ip: ip.map(str::to_string),
            },
        });
        let mut state = self.state.lock().await;
        state.online.insert(key(pk, dn));
        self.load_shadow(&mut state, pk, dn).await?;
        let delta = state.shadows[&key(pk, dn)].delta();
        if !delta.is_empty() {
            let id = next_id(&mut state);
            let input = Value::Object(delta.clone());
            state
                .pending
                .start(pk, dn, &id, "set", CallType::Async, input, now_ms, 8_000);
            self.send(downlink::property_set(pk, dn, &id, delta));
        }
        Ok(())
    }

    /// A device disconnected (`reason`: `disconnect`, `keepalive-timeout`, `takeover`, …).
    pub async fn device_offline(&self, pk: &str, dn: &str, reason: &str, now_ms: i64) {
        self.state.lock().await.online.remove(&key(pk, dn));
        self.writer.submit(Record::Status {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            change: StatusChange {
                time: now_ms,
                online: false,
                reason: reason.to_string(),
                ip: None,
            },
        });
    }

    /// Handles the broker's client lifecycle events (`$SYS/brokers/clients/connected` and
    /// `…/disconnected`, JSON with `username`, `peer`, `connected_at`): device clients
    /// (username `deviceName&productKey`) go online or offline. A `disconnected` for an older
    /// connection than the device's current one (a takeover) is ignored. Other topics and
    /// clients are ignored.
    pub async fn handle_client_event(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<()> {
        let Some(kind) = topic.strip_prefix(CLIENT_EVENTS) else {
            return Ok(());
        };
        let Ok(event) = serde_json::from_slice::<Value>(payload) else {
            return Ok(());
        };
        let Some((pk, dn)) = event
            .get("username")
            .and_then(Value::as_str)
            .and_then(crate::device_auth::parse_username)
        else {
            return Ok(());
        };
        let connected_at = event
            .get("connected_at")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        match kind {
            "/connected" => {
                let ip = event.get("peer").and_then(Value::as_str).map(peer_ip);
                self.state
                    .lock()
                    .await
                    .connections
                    .insert(key(pk, dn), connected_at);
                self.device_online(pk, dn, ip.as_deref(), now_ms).await
            }
            "/disconnected" => {
                {
                    let mut state = self.state.lock().await;
                    match state.connections.get(&key(pk, dn)) {
                        Some(current) if *current != connected_at => return Ok(()),
                        _ => state.connections.remove(&key(pk, dn)),
                    };
                }
                self.device_offline(pk, dn, "disconnect", now_ms).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether the device is connected.
    pub async fn is_online(&self, pk: &str, dn: &str) -> bool {
        self.state.lock().await.online.contains(&key(pk, dn))
    }

    /// The device's shadow (latest reported values, desired values).
    pub async fn shadow(&self, pk: &str, dn: &str) -> Result<Shadow> {
        let mut state = self.state.lock().await;
        self.load_shadow(&mut state, pk, dn).await?;
        Ok(state.shadows[&key(pk, dn)].clone())
    }

    /// Sets properties: sent at once to an online device, stored as desired for an offline one.
    /// Values are checked against the model in the product's mode (rw properties only).
    pub async fn set_properties(
        &self,
        pk: &str,
        dn: &str,
        values: Map<String, Value>,
        now_ms: i64,
    ) -> Result<SetOutcome> {
        let mut state = self.state.lock().await;
        let product = self.product(&mut state, pk).await?;
        if self.store.device(pk, dn).await?.is_none() {
            return Err(PlatformError::NotFound(format!("{pk}/{dn}")));
        }
        check_property_set(&product.model, product.validation, &values)?;
        if state.online.contains(&key(pk, dn)) {
            let id = next_id(&mut state);
            state.pending.start(
                pk,
                dn,
                &id,
                "set",
                CallType::Async,
                Value::Object(values.clone()),
                now_ms,
                8_000,
            );
            if !self.send(downlink::property_set(pk, dn, &id, values)) {
                return Err(PlatformError::Busy);
            }
            return Ok(SetOutcome::Sent(id));
        }
        self.load_shadow(&mut state, pk, dn).await?;
        let shadow = state.shadows.get_mut(&key(pk, dn)).expect("just loaded");
        let mut versions = Vec::new();
        for (k, v) in values {
            let version = shadow
                .set_desired(&k, v, None, now_ms)
                .expect("no expected version");
            versions.push((k, version));
        }
        // Desired values are an application's write: stored before we answer.
        let snapshot = shadow.clone();
        self.store.put_shadow(pk, dn, &snapshot).await?;
        state.dirty.remove(&key(pk, dn));
        Ok(SetOutcome::Desired(versions))
    }

    /// Calls a service. Sync services go out as RRPC and the returned receiver resolves with
    /// the reply or [`CallResult::TimedOut`]; async ones return at once with the message id and
    /// the receiver resolves when the reply arrives. Either way the call is logged.
    pub async fn call_service(
        &self,
        pk: &str,
        dn: &str,
        service: &str,
        args: Map<String, Value>,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<(String, oneshot::Receiver<CallResult>)> {
        let mut state = self.state.lock().await;
        let product = self.product(&mut state, pk).await?;
        check_service(&product.model, product.validation, service, &args, false)?;
        let call_type = product
            .model
            .service(service)
            .map_or(CallType::Async, |s| s.call_type);
        if call_type == CallType::Sync && !state.online.contains(&key(pk, dn)) {
            return Err(PlatformError::Offline(format!("{pk}/{dn}")));
        }
        let id = next_id(&mut state);
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        state.pending.start(
            pk,
            dn,
            &id,
            service,
            call_type,
            Value::Object(args.clone()),
            now_ms,
            timeout_ms,
        );
        let publish = match call_type {
            CallType::Sync => downlink::rrpc_call(pk, dn, &id, service, args),
            CallType::Async => downlink::service_call(pk, dn, &id, service, args),
        };
        let (tx, rx) = oneshot::channel();
        state
            .waiters
            .insert((pk.to_string(), dn.to_string(), id.clone()), tx);
        if !self.send(publish) {
            return Err(PlatformError::Busy);
        }
        Ok((id, rx))
    }

    /// Times out calls whose deadline has passed; returns the next deadline to wake at.
    pub async fn expire(&self, now_ms: i64) -> Option<i64> {
        let mut state = self.state.lock().await;
        for (pk, dn, call) in state.pending.expire(now_ms) {
            if let Some(w) = state
                .waiters
                .remove(&(pk.clone(), dn.clone(), call.call_id.clone()))
            {
                let _ = w.send(CallResult::TimedOut);
            }
            self.log_call(&pk, &dn, call);
        }
        state.pending.next_deadline()
    }
}

/// The broker's client lifecycle event topics (`…/connected`, `…/disconnected`).
pub const CLIENT_EVENTS: &str = "$SYS/brokers/clients";

/// `1.2.3.4:5678` or `[::1]:5678` → the address without the port.
fn peer_ip(peer: &str) -> String {
    let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Message ids: numeric strings in Alink's range 0 … 2³²−1. The sequence starts at a random
/// point so a restarted platform does not reuse the ids a device saw today.
fn next_id(state: &mut State) -> String {
    if state.next_id == 0 {
        state.next_id = u64::from(rand::random::<u32>() >> 1) + 1;
    }
    state.next_id = (state.next_id + 1) % (1 << 32);
    state.next_id.to_string()
}

#[cfg(test)]
mod tests;
