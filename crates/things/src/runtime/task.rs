//! The platform's tasks: one drives the MQTT link and hands device messages over a bounded
//! queue; one handles them with the pure engine, times out calls and saves shadows.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use thingmq_client::{Client, Event, EventLoop, MqttOptions, QoS, Reconnect};
use thingmq_server::LocalLinker;
use tokio::sync::mpsc;

use super::state::{duration_ms, key, lock, submit, Inner, Key, Online, State};
use super::PlatformError;
use crate::alink::{self, code, DeviceTopic, Direction, Reply, Request, TopicKind};
use crate::device_auth::parse_username;
use crate::engine::{check_report, downlink, handle_uplink, throttled_reply, Publish};
use crate::now_ms;
use crate::store::{days_ms, Record, StatusChange};
use crate::tsl::CallType;

/// What the platform subscribes to: every device's uplink, and the broker's client events.
const SUBSCRIPTIONS: [&str; 4] = [
    "/sys/+/+/thing/#",
    "/sys/+/+/rrpc/response/+",
    "/ext/session/+/+/combine/+",
    "$SYS/brokers/clients/+",
];
/// Device messages waiting for the handler; beyond this they are dropped and counted.
const QUEUE: usize = 65_536;
const TICK: Duration = Duration::from_millis(200);
const RETENTION_EVERY: u32 = 5 * 60 * 60;
/// Every 10 s: the counters line at debug level (what bench/things-load reads).
const STATS_EVERY: u32 = 50;

/// A message from the broker.
struct Incoming {
    topic: String,
    payload: bytes::Bytes,
}

/// The platform's MQTT client over the in-process link, reconnecting through the linker.
pub(super) fn connect(linker: LocalLinker) -> (Client, EventLoop) {
    let mut options = MqttOptions::new("$thingmq/things");
    options.reconnect = Some(Reconnect {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
    });
    options.keep_alive = Duration::from_secs(60);
    // Device traffic arrives here at the rate of the whole fleet.
    options.receive_maximum = 1000;
    options.max_inflight = 1000;
    Client::with_connector(options, move || {
        let stream = linker.connect();
        async move { Ok(stream) }
    })
}

/// Starts the link driver and the handler. Both stop when the platform is dropped.
pub(super) fn spawn(inner: Weak<Inner>, mut events: EventLoop) {
    let (tx, mut rx) = mpsc::channel::<Incoming>(QUEUE);
    let driver = inner.clone();
    tokio::spawn(async move {
        while let Some(event) = events.poll().await {
            let Some(inner) = driver.upgrade() else { break };
            match event {
                Event::Connected { .. } => {
                    let client = inner.client.clone();
                    tokio::spawn(async move {
                        for filter in SUBSCRIPTIONS {
                            if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                                tracing::error!(filter, "device platform cannot subscribe: {e}");
                            }
                        }
                    });
                }
                Event::Publish(p) => {
                    let incoming = Incoming {
                        topic: p.topic.to_string(),
                        payload: p.payload,
                    };
                    if tx.try_send(incoming).is_err() {
                        inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Disconnected { error: Some(e) } => {
                    tracing::warn!("device platform lost its broker link: {e}");
                }
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        let mut ticks: u32 = 0;
        let shadow_save_every = match inner.upgrade() {
            Some(i) => u32::try_from(i.config.shadow_save_interval.as_millis() / TICK.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            None => return,
        };
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let (Some(m), Some(inner)) = (m, inner.upgrade()) else { break };
                    if let Some(topo) = on_message(&inner, &m.topic, &m.payload) {
                        // Topology changes are written to the store before their reply.
                        super::topo::on_topo(&inner, &topo, &m.payload).await;
                    }
                }
                _ = tick.tick() => {
                    let Some(inner) = inner.upgrade() else { break };
                    ticks = ticks.wrapping_add(1);
                    expire_calls(&inner);
                    if ticks.is_multiple_of(shadow_save_every) {
                        if let Err(e) = save_shadows(&inner).await {
                            tracing::warn!("device platform: saving shadows failed: {e}");
                        }
                    }
                    if ticks.is_multiple_of(STATS_EVERY) {
                        log_stats(&inner);
                    }
                    if ticks % RETENTION_EVERY == 1 {
                        apply_retention(&inner).await;
                    }
                }
            }
        }
    });
}

/// The platform's and the history writer's counters, cumulative, for load measurements.
fn log_stats(inner: &Inner) {
    let p = &inner.stats;
    let w = inner.writer.stats();
    tracing::debug!(
        uplinks = p.uplinks.load(Ordering::Relaxed),
        dropped = p.dropped.load(Ordering::Relaxed),
        rejected = p.rejected.load(Ordering::Relaxed),
        throttled = p.throttled.load(Ordering::Relaxed),
        history_written = w.written.load(Ordering::Relaxed),
        history_dropped = w.dropped.load(Ordering::Relaxed),
        history_failed = w.failed.load(Ordering::Relaxed),
        history_batches = w.batches.load(Ordering::Relaxed),
        last_batch_us = w.last_batch_us.load(Ordering::Relaxed),
        "device platform counters"
    );
}

/// Handles one message; returns a topology or registration request (`thing/topo/*`,
/// `thing/sub/register`) for the caller to await.
fn on_message(inner: &Arc<Inner>, topic: &str, payload: &[u8]) -> Option<DeviceTopic> {
    if let Some(kind) = topic.strip_prefix("$SYS/brokers/clients/") {
        client_event(inner, kind, payload);
        return None;
    }
    if topic.starts_with("/ext/session/") {
        super::topo::session_message(inner, topic, payload);
        return None;
    }
    let Ok(topic) = DeviceTopic::parse(topic) else {
        // A device's own custom topic under its prefix: not ours to interpret.
        return None;
    };
    if topic.direction() == Direction::Down {
        // Our own requests to devices come back through the wildcard subscription.
        return None;
    }
    inner.stats.uplinks.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let k = key(&topic.product_key, &topic.device_name);
    let mut guard = lock(&inner.state);
    let state = &mut *guard;
    let (Some(device), Some(product)) = (
        state.devices.get(&k),
        state.products.get(&topic.product_key),
    ) else {
        // Deleted while connected; it is being disconnected.
        inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    if !device.enabled {
        inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if !topic.is_answer() && !state.throttle.allow(&k, now) {
        inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        if let Some(reply) = throttled_reply(&topic, payload) {
            send_reply(inner, reply);
        }
        return None;
    }
    if matches!(
        topic.kind,
        TopicKind::TopoAdd | TopicKind::TopoDelete | TopicKind::TopoGet | TopicKind::SubRegister
    ) {
        return Some(topic);
    }
    if matches!(topic.kind, TopicKind::PackPost | TopicKind::HistoryPost) {
        let reply = multi_report(inner, state, &topic, payload, now);
        drop(guard);
        if let Some(reply) = reply {
            send_reply(inner, reply);
        }
        return None;
    }
    let shadow = state.shadows.entry(k.clone()).or_default();
    let outcome = handle_uplink(product, shadow, &topic, payload, now);
    if outcome.shadow_changed {
        state.dirty.insert(k.clone());
    }
    for record in outcome.records {
        submit(&inner.writer, record);
    }
    if let Some((_, reply)) = outcome.answer {
        if let Some(call) = state.pending.on_answer(&k.0, &k.1, &reply, now) {
            submit(
                &inner.writer,
                Record::ServiceCall {
                    product_key: k.0.clone(),
                    device_name: k.1.clone(),
                    call: call.clone(),
                },
            );
            match state
                .waiters
                .remove(&(k.0.clone(), k.1.clone(), reply.id.clone()))
            {
                Some(waiter) => {
                    let _ = waiter.send(Some(reply));
                }
                None => state.keep_result(call),
            }
        }
    }
    let desired = if state.awaiting_first_uplink.remove(&k) {
        desired_delivery(inner, state, &k, now)
    } else {
        None
    };
    drop(guard);
    if outcome.reply.is_some() || desired.is_some() {
        let client = inner.client.clone();
        tokio::spawn(async move {
            if let Some(reply) = outcome.reply {
                let _ = client
                    .publish(reply.topic, QoS::AtMostOnce, false, reply.payload)
                    .await;
            }
            if let Some(set) = desired {
                // Desired values set while the device was away; it answers on set_reply and
                // deletes them with thing/property/desired/delete once applied.
                let _ = client
                    .publish(set.topic, QoS::AtLeastOnce, false, set.payload)
                    .await;
            }
        });
    }
    None
}

/// Publishes a reply to a device (QoS 0, as Alibaba's platform sends them) without holding
/// up the handler.
pub(super) fn send_reply(inner: &Inner, reply: Publish) {
    let client = inner.client.clone();
    tokio::spawn(async move {
        let _ = client
            .publish(reply.topic, QoS::AtMostOnce, false, reply.payload)
            .await;
    });
}

/// `$SYS/brokers/clients/connected|disconnected` for a device: online state, status history,
/// and desired properties delivered on connect.
fn client_event(inner: &Arc<Inner>, kind: &str, payload: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    let Some((pk, dn)) = event
        .get("username")
        .and_then(Value::as_str)
        .and_then(parse_username)
    else {
        return;
    };
    let client_id = event
        .get("clientid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ip = event
        .get("peer")
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    let now = event
        .get("ts")
        .and_then(Value::as_i64)
        .unwrap_or_else(now_ms);
    let k = key(pk, dn);
    let mut state = lock(&inner.state);
    if !state.devices.contains_key(&k) {
        return;
    }
    let online = match kind {
        "connected" => true,
        "disconnected" => {
            // A takeover announces the old connection's end before the new one's start;
            // anything else out of order must not mark a connected device offline.
            if state
                .online
                .get(&k)
                .is_some_and(|o| o.client_id != client_id)
            {
                return;
            }
            false
        }
        _ => return,
    };
    submit(
        &inner.writer,
        Record::Status {
            product_key: k.0.clone(),
            device_name: k.1.clone(),
            change: StatusChange {
                time: now,
                online,
                // The broker says why a connection ended (`normal`, `keepalive_timeout`,
                // `takenover`, `kicked`, `connection_lost`, …).
                reason: if online {
                    "connect"
                } else {
                    event
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("disconnect")
                }
                .to_string(),
                ip: if online { ip.clone() } else { None },
            },
        },
    );
    if !online {
        super::topo::gateway_offline(inner, &mut state, &k, now);
        state.throttle.forget(&k);
        state.online.remove(&k);
        state.awaiting_first_uplink.remove(&k);
        return;
    }
    state.online.insert(
        k.clone(),
        Online {
            client_id,
            via: None,
        },
    );
    // Desired values go out with the device's first message: by then it has subscribed to
    // its topics, which it cannot have done when its CONNECT is announced.
    state.awaiting_first_uplink.insert(k.clone());
    if let Some(d) = state.devices.get_mut(&k) {
        d.last_online_ms = Some(now);
        d.last_ip.clone_from(&ip);
    }
    drop(state);
    let store = inner.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.mark_online(&k.0, &k.1, now, ip.as_deref()).await {
            tracing::warn!("device platform: cannot record last online: {e}");
        }
    });
}

/// The `property/set` that carries a device's desired values that differ from what it
/// reported, tracked as an async call so its answer is logged.
fn desired_delivery(inner: &Inner, state: &mut State, k: &Key, now: i64) -> Option<Publish> {
    let delta = state.shadows.get(k).map(|s| s.delta()).unwrap_or_default();
    if delta.is_empty() {
        return None;
    }
    let id = inner.next_call_id(now);
    state.pending.start(
        &k.0,
        &k.1,
        &id,
        "set",
        CallType::Async,
        Value::Object(delta.clone()),
        now,
        duration_ms(inner.config.async_call_timeout),
    );
    Some(downlink::property_set(&k.0, &k.1, &id, delta))
}

/// A gateway's `pack/post` (its own properties and events plus its sub-devices') and a
/// `history/post` (earlier data, each entry naming its device): every part is checked against
/// its own device's product. A part for another device than the sender must be for one of its
/// sub-devices (`Device::gateway`), which must be enabled. The message is checked as a whole
/// first: in strict mode one violation refuses all of it. Returns the reply to publish.
fn multi_report(
    inner: &Inner,
    state: &mut State,
    topic: &DeviceTopic,
    payload: &[u8],
    now: i64,
) -> Option<Publish> {
    let reply_topic = topic.reply()?.to_string();
    let publish = |reply: Reply| Publish {
        topic: reply_topic.clone(),
        payload: reply.to_json().to_string().into_bytes(),
    };
    let req = match Request::parse(payload) {
        Ok(r) => r,
        Err(e) => return Some(publish(Reply::error("", e.code(), e.to_string()))),
    };
    let answer = |reply: Reply| req.ack.then(|| publish(reply));
    let sender = key(&topic.product_key, &topic.device_name);
    let reports = if topic.kind == TopicKind::HistoryPost {
        alink::history_post(&req.params, now)
    } else {
        req.params_object()
            .and_then(|p| alink::pack_post(p, now))
            .map(|pack| {
                let own = alink::SubDeviceReport {
                    product_key: sender.0.clone(),
                    device_name: sender.1.clone(),
                    properties: pack.properties,
                    events: pack.events,
                };
                std::iter::once(own).chain(pack.sub_devices).collect()
            })
    };
    let reports = match reports {
        Ok(r) => r,
        Err(e) => return answer(Reply::error(&req.id, e.code(), e.to_string())),
    };
    let mut checked = Vec::new();
    for report in &reports {
        let k = key(&report.product_key, &report.device_name);
        let name = format!("{}/{}", k.0, k.1);
        let refuse = match state.devices.get(&k) {
            _ if k == sender => None,
            None => Some((
                code::DEVICE_NOT_FOUND,
                format!("sub-device {name} not found"),
            )),
            Some(d) if d.gateway.as_ref() != Some(&sender) => Some((
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
        let Some(product) = state.products.get(&k.0) else {
            let m = format!("product of {name} not found");
            return answer(Reply::error(&req.id, code::DEVICE_NOT_FOUND, m));
        };
        match check_report(product, &k.1, &report.properties, &report.events) {
            Ok(c) => checked.push((k, c)),
            Err(v) => {
                let m = format!("invalid params: {name}: {v}");
                return answer(Reply::error(&req.id, code::INVALID_PARAMS, m));
            }
        }
    }
    let mut failed = serde_json::Map::new();
    for (k, c) in checked {
        let shadow = state.shadows.entry(k.clone()).or_default();
        let before = shadow.version;
        // Older values than the shadow's (history) are stored but leave the shadow as it is.
        shadow.apply_reported(c.reported.iter().map(|(id, v, t)| (id.as_str(), v, *t)));
        if shadow.version != before {
            state.dirty.insert(k.clone());
        }
        for r in c.records {
            submit(&inner.writer, r);
        }
        if let Some(f) = c.failed {
            // A history post may hold several snapshots of one device: keep every failure.
            let slot = failed
                .entry(format!("{}/{}", k.0, k.1))
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let (Value::Object(slot), Value::Object(f)) = (slot, f) {
                slot.extend(f);
            }
        }
    }
    let data = if failed.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "checkFailedData": failed })
    };
    answer(Reply::ok(&req.id, data))
}

fn expire_calls(inner: &Arc<Inner>) {
    let mut state = lock(&inner.state);
    for (pk, dn, call) in state.pending.expire(now_ms()) {
        let waiter = state
            .waiters
            .remove(&(pk.clone(), dn.clone(), call.call_id.clone()));
        match waiter {
            Some(w) => {
                let _ = w.send(None);
            }
            None => state.keep_result(call.clone()),
        }
        submit(
            &inner.writer,
            Record::ServiceCall {
                product_key: pk,
                device_name: dn,
                call,
            },
        );
    }
}

/// Writes the shadows that changed since the last save.
pub(super) async fn save_shadows(inner: &Inner) -> Result<(), PlatformError> {
    let changed: Vec<_> = {
        let mut state = lock(&inner.state);
        let dirty: Vec<_> = state.dirty.drain().collect();
        dirty
            .into_iter()
            .filter_map(|k| state.shadows.get(&k).cloned().map(|s| (k, s)))
            .collect()
    };
    if changed.is_empty() {
        return Ok(());
    }
    let batch: Vec<_> = changed
        .into_iter()
        .map(|((pk, dn), shadow)| (pk, dn, shadow))
        .collect();
    // One transaction for all of them; on failure they are saved next time.
    let started = std::time::Instant::now();
    let result = inner.store.put_shadows(&batch).await;
    tracing::debug!(
        shadows = batch.len(),
        us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "shadows saved"
    );
    if let Err(e) = result {
        let mut state = lock(&inner.state);
        for (pk, dn, _) in batch {
            state.dirty.insert((pk, dn));
        }
        return Err(e.into());
    }
    Ok(())
}

async fn apply_retention(inner: &Inner) {
    let Some(days) = inner.config.retention_days else {
        return;
    };
    let cutoff = now_ms() - days_ms(days);
    match inner.store.apply_retention(cutoff).await {
        Ok(report) => tracing::info!(?report, days, "device history retention applied"),
        Err(e) => tracing::warn!("device history retention failed: {e}"),
    }
}
