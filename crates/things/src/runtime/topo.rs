//! Gateways and their sub-devices, as Alink has them:
//!
//! - topology: `thing/topo/add` (the gateway proves it holds each sub-device's secret with a
//!   signature), `thing/topo/delete`, `thing/topo/get`, on the gateway's own topics, and
//!   `thing/topo/change`, the platform's notice to a gateway that one of its sub-devices was
//!   attached, detached, deleted, disabled or enabled through the registry;
//! - registration: `thing/sub/register` creates sub-devices of products that allow it and
//!   answers their secrets;
//! - sessions: `/ext/session/{gw}/combine/login` puts a sub-device online through its gateway
//!   (the gateway may then use the sub-device's `/sys/…/` topics, see
//!   [`DeviceAuth::login_sub`](crate::device_auth::DeviceAuth::login_sub)), `combine/logout`
//!   takes it offline, and so does the gateway's own disconnection; `combine/batch_login` and
//!   `batch_logout` do the same for several sub-devices, all of them or none.
//!
//! A sub-device's messages then arrive on its own topics and take the ordinary path.
//!
//! The message handler in `task.rs` only routes these requests here: what a gateway may do,
//! and how it is answered, is decided in this one file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::state::{key, lock, submit, Inner, Key, Online, State};
use crate::alink::{
    self, code, DeviceTopic, Reply, Request, SessionKind, SessionTopic, SignedIdentity, TopicKind,
};
use crate::device_auth::SubDeviceAuthError;
use crate::engine::Publish;
use crate::now_ms;
use crate::registry::{valid_name, Device, NodeType};
use crate::shadow::Shadow;
use crate::store::{Record, StatusChange};

/// Status-change reasons this module records.
const LOGIN: &str = "login";
const LOGOUT: &str = "logout";
const GATEWAY_OFFLINE: &str = "gateway_offline";
const TOPO_DELETED: &str = "topo_deleted";

/// Most sub-devices one batch login, logout or registration may name (Alibaba's limit).
const MAX_BATCH: usize = 50;

/// `thing/topo/change` `status` values, as Alibaba numbers them.
pub(super) mod change {
    /// A topology relation was created.
    pub(crate) const CREATED: u8 = 0;
    /// A relation was removed, or the sub-device deleted.
    pub(crate) const DELETED: u8 = 1;
    /// The sub-device was enabled again.
    pub(crate) const ENABLED: u8 = 2;
    /// The sub-device was disabled.
    pub(crate) const DISABLED: u8 = 8;
}

type Refusal = (u32, String);

/// A refusal whose reply carries data: a batch names each sub-device that failed.
struct Failure {
    code: u32,
    message: String,
    data: Value,
}

impl From<Refusal> for Failure {
    fn from((code, message): Refusal) -> Self {
        Self {
            code,
            message,
            data: json!({}),
        }
    }
}

/// The reply to a gateway's request (`thing/topo/*`, `thing/sub/register`, `combine/*`), in
/// one place so every one of them answers alike: `data` on success; on refusal its code and
/// message, with the failed sub-devices in `data` for a batch.
fn reply(topic: String, id: &str, result: Result<Value, Failure>) -> Publish {
    let reply = match result {
        Ok(data) => Reply::ok(id, data),
        Err(f) => Reply {
            data: f.data,
            ..Reply::error(id, f.code, f.message)
        },
    };
    Publish {
        topic,
        payload: reply.to_json().to_string().into_bytes(),
    }
}

fn name(k: &Key) -> String {
    format!("{}/{}", k.0, k.1)
}

fn identity_json(k: &Key) -> Value {
    json!({"productKey": k.0, "deviceName": k.1})
}

/// The sender must be a gateway: its product's node type says so.
fn require_gateway(state: &State, gw: &Key) -> Result<(), Refusal> {
    match state.products.get(&gw.0).map(|p| p.node_type) {
        Some(NodeType::Gateway) => Ok(()),
        _ => Err((
            code::INVALID_PARAMS,
            format!("{} is not a gateway (its product's node type)", name(gw)),
        )),
    }
}

fn auth_refusal(e: SubDeviceAuthError, k: &Key) -> Refusal {
    match e {
        SubDeviceAuthError::NotFound => (
            code::DEVICE_NOT_FOUND,
            format!("sub-device {} not found", name(k)),
        ),
        SubDeviceAuthError::Disabled => (
            code::DEVICE_DISABLED,
            format!("sub-device {} is disabled", name(k)),
        ),
        _ => (
            code::AUTH_FAILED,
            format!("sign of sub-device {} does not match its secret", name(k)),
        ),
    }
}

/// `thing/topo/add|delete|get` from a gateway. Topology changes are written to the store
/// before the reply, so they are awaited here (they are rare).
pub(super) async fn on_topo(inner: &Arc<Inner>, topic: &DeviceTopic, payload: &[u8]) {
    let Some(reply_topic) = topic.reply().map(|t| t.to_string()) else {
        return;
    };
    let req = match Request::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            let refusal = (e.code(), e.to_string());
            super::task::send_reply(inner, reply(reply_topic, "", Err(refusal.into())));
            return;
        }
    };
    let gw = key(&topic.product_key, &topic.device_name);
    let result = match topic.kind {
        TopicKind::TopoAdd => topo_add(inner, &gw, &req.params).await,
        TopicKind::TopoDelete => topo_delete(inner, &gw, &req.params).await,
        TopicKind::TopoGet => topo_get(inner, &gw),
        TopicKind::SubRegister => sub_register(inner, &gw, &req.params).await,
        _ => return,
    };
    if req.ack {
        let answer = reply(reply_topic, &req.id, result.map_err(Failure::from));
        super::task::send_reply(inner, answer);
    }
}

async fn topo_add(inner: &Arc<Inner>, gw: &Key, params: &Value) -> Result<Value, Refusal> {
    let _registry = inner.registry.lock().await;
    let items = alink::topo_add(params).map_err(|e| (e.code(), e.to_string()))?;
    // Check all first: a topo/add is applied whole or not at all.
    let changed = {
        let state = lock(&inner.state);
        require_gateway(&state, gw)?;
        let mut changed = Vec::new();
        for item in &items {
            let k = key(&item.product_key, &item.device_name);
            if &k == gw {
                return Err((
                    code::TOPO_SELF,
                    "a gateway cannot be its own sub-device".into(),
                ));
            }
            inner
                .auth
                .check_signed(item)
                .map_err(|e| auth_refusal(e, &k))?;
            let device = state
                .devices
                .get(&k)
                .ok_or_else(|| auth_refusal(SubDeviceAuthError::NotFound, &k))?;
            match state.products.get(&k.0).map(|p| p.node_type) {
                Some(NodeType::SubDevice) => {}
                _ => {
                    return Err((
                        code::INVALID_PARAMS,
                        format!("{} is not a sub-device (its product's node type)", name(&k)),
                    ))
                }
            }
            let mut device = device.clone();
            device.gateway = Some(gw.clone());
            changed.push(device);
        }
        changed
    };
    let mut added = Vec::new();
    for device in changed {
        inner.store.put_device(&device).await.map_err(|e| {
            (
                code::INTERNAL_ERROR,
                format!("cannot store the topology: {e}"),
            )
        })?;
        let k = key(&device.product_key, &device.device_name);
        let mut state = lock(&inner.state);
        // Moved from another gateway: its session there ends.
        if let Some(old) = state.devices.get(&k).and_then(|d| d.gateway.clone()) {
            if &old != gw {
                end_session(inner, &mut state, &old, &k, TOPO_DELETED, now_ms());
                notify_topo_change(inner, &old, change::DELETED, std::slice::from_ref(&k));
            }
        }
        state.devices.insert(k.clone(), device);
        added.push(identity_json(&k));
    }
    Ok(Value::Array(added))
}

async fn topo_delete(inner: &Arc<Inner>, gw: &Key, params: &Value) -> Result<Value, Refusal> {
    let _registry = inner.registry.lock().await;
    let items = alink::identities(params).map_err(|e| (e.code(), e.to_string()))?;
    let changed = {
        let state = lock(&inner.state);
        require_gateway(&state, gw)?;
        let mut changed = Vec::new();
        for (pk, dn) in items {
            let k = key(&pk, &dn);
            match state.devices.get(&k) {
                Some(d) if d.gateway.as_ref() == Some(gw) => {
                    let mut d = d.clone();
                    d.gateway = None;
                    changed.push(d);
                }
                _ => {
                    return Err((
                        code::TOPO_NOT_FOUND,
                        format!("{} is not a sub-device of this gateway", name(&k)),
                    ))
                }
            }
        }
        changed
    };
    let mut removed = Vec::new();
    for device in changed {
        inner.store.put_device(&device).await.map_err(|e| {
            (
                code::INTERNAL_ERROR,
                format!("cannot store the topology: {e}"),
            )
        })?;
        let k = key(&device.product_key, &device.device_name);
        let mut state = lock(&inner.state);
        end_session(inner, &mut state, gw, &k, TOPO_DELETED, now_ms());
        state.devices.insert(k.clone(), device);
        removed.push(identity_json(&k));
    }
    Ok(Value::Array(removed))
}

fn topo_get(inner: &Inner, gw: &Key) -> Result<Value, Refusal> {
    let state = lock(&inner.state);
    require_gateway(&state, gw)?;
    let mut subs: Vec<&Key> = state
        .devices
        .iter()
        .filter(|(_, d)| d.gateway.as_ref() == Some(gw))
        .map(|(k, _)| k)
        .collect();
    subs.sort();
    Ok(Value::Array(subs.into_iter().map(identity_json).collect()))
}

/// `thing/sub/register`: `[{productKey, deviceName}, …]`. Each product must be a sub-device
/// product that allows dynamic registration; a missing device is created, an existing one
/// (not attached to another gateway, enabled) keeps its secret. Checked whole, then applied;
/// the reply lists each device with its `deviceSecret`. Attaching stays `thing/topo/add`'s.
async fn sub_register(inner: &Arc<Inner>, gw: &Key, params: &Value) -> Result<Value, Refusal> {
    let _registry = inner.registry.lock().await;
    let items = alink::identities(params).map_err(|e| (e.code(), e.to_string()))?;
    check_batch_size(items.len())?;
    let mut order: Vec<Key> = Vec::new();
    let to_create = {
        let state = lock(&inner.state);
        require_gateway(&state, gw)?;
        let mut to_create = Vec::new();
        for (pk, dn) in items {
            let k = key(&pk, &dn);
            if &k == gw {
                return Err((
                    code::TOPO_SELF,
                    "a gateway cannot be its own sub-device".into(),
                ));
            }
            let product = state
                .products
                .get(&pk)
                .ok_or_else(|| (code::PRODUCT_NOT_FOUND, format!("product {pk} not found")))?;
            if product.node_type != NodeType::SubDevice {
                return Err((
                    code::INVALID_PARAMS,
                    format!("{pk} is not a sub-device product (its node type)"),
                ));
            }
            if !product.dynamic_register {
                return Err((
                    code::AUTH_FAILED,
                    format!("product {pk} does not allow dynamic registration"),
                ));
            }
            if !valid_name(&dn) {
                return Err((
                    code::INVALID_PARAMS,
                    format!("deviceName {dn:?}: 1-64 letters, digits or -_.@:"),
                ));
            }
            if order.contains(&k) {
                continue;
            }
            match state.devices.get(&k) {
                // Another gateway's sub-device: its secret is not this gateway's to learn.
                Some(d) if d.gateway.as_ref().is_some_and(|g| g != gw) => {
                    return Err((
                        code::AUTH_FAILED,
                        format!("{} is attached to another gateway", name(&k)),
                    ))
                }
                Some(d) if !d.enabled => {
                    return Err(auth_refusal(SubDeviceAuthError::Disabled, &k))
                }
                Some(_) => {}
                None => to_create.push(Device::new(&pk, &dn, now_ms())),
            }
            order.push(k);
        }
        to_create
    };
    for device in &to_create {
        inner.store.insert_device(device).await.map_err(|e| {
            (
                code::INTERNAL_ERROR,
                format!("cannot store the device: {e}"),
            )
        })?;
        let k = key(&device.product_key, &device.device_name);
        let mut state = lock(&inner.state);
        state.shadows.insert(k.clone(), Shadow::default());
        state.devices.insert(k, device.clone());
    }
    let state = lock(&inner.state);
    if !to_create.is_empty() {
        inner.auth.replace(state.credentials());
    }
    Ok(Value::Array(
        order
            .iter()
            .filter_map(|k| state.devices.get(k))
            .map(|d| {
                json!({"productKey": d.product_key, "deviceName": d.device_name,
                       "deviceSecret": d.device_secret})
            })
            .collect(),
    ))
}

/// Tells gateway `gw` on `thing/topo/change` that the relation to `subs` changed (`status`:
/// [`change`]). QoS 0 like Alibaba's downlinks: an offline gateway learns the topology with
/// `thing/topo/get`.
pub(super) fn notify_topo_change(inner: &Inner, gw: &Key, status: u8, subs: &[Key]) {
    if subs.is_empty() {
        return;
    }
    let topic = DeviceTopic::new(&gw.0, &gw.1, TopicKind::TopoChange);
    let payload = json!({
        "id": inner.next_call_id(now_ms()),
        "version": "1.0",
        "params": {"status": status, "subList": subs.iter().map(identity_json).collect::<Vec<_>>()},
        "method": "thing.topo.change",
    });
    super::task::send_reply(
        inner,
        Publish {
            topic: topic.to_string(),
            payload: payload.to_string().into_bytes(),
        },
    );
}

/// A gateway's `/ext/session/…/combine/login|logout|batch_login|batch_logout`. The broker's
/// ACL lets only that gateway publish there. Counted and throttled as the gateway's own
/// uplink, and refused from a gateway that is unknown or disabled, as on its `/sys/…` topics.
pub(super) fn session_message(inner: &Arc<Inner>, topic: &str, payload: &[u8]) {
    let Ok(topic) = SessionTopic::parse(topic) else {
        return;
    };
    if !matches!(
        topic.kind,
        SessionKind::Login
            | SessionKind::Logout
            | SessionKind::BatchLogin
            | SessionKind::BatchLogout
    ) {
        return;
    }
    inner.stats.uplinks.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let gw = key(&topic.product_key, &topic.device_name);
    {
        let mut state = lock(&inner.state);
        if !state.devices.get(&gw).is_some_and(|d| d.enabled) {
            inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !state.throttle.allow(&gw, now) {
            inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if let Some(reply) = on_session(inner, &topic, payload, now) {
        super::task::send_reply(inner, reply);
    }
}

/// `/ext/session/{gw}/combine/login|logout|batch_login|batch_logout`. Returns the reply to
/// publish.
fn on_session(
    inner: &Arc<Inner>,
    topic: &SessionTopic,
    payload: &[u8],
    now: i64,
) -> Option<Publish> {
    let reply_topic = topic.reply()?.to_string();
    let req = match Request::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            let refusal = (e.code(), e.to_string());
            return Some(reply(reply_topic, "", Err(refusal.into())));
        }
    };
    let gw = key(&topic.product_key, &topic.device_name);
    let mut state = lock(&inner.state);
    let result = match topic.kind {
        SessionKind::Login => {
            login(inner, &mut state, &gw, &req.params, now).map_err(Failure::from)
        }
        SessionKind::Logout => {
            logout(inner, &mut state, &gw, &req.params, now).map_err(Failure::from)
        }
        SessionKind::BatchLogin => batch_login(inner, &mut state, &gw, &req.params, now),
        SessionKind::BatchLogout => batch_logout(inner, &mut state, &gw, &req.params, now),
        _ => return None,
    };
    drop(state);
    req.ack.then(|| reply(reply_topic, &req.id, result))
}

fn login(
    inner: &Inner,
    state: &mut State,
    gw: &Key,
    params: &Value,
    now: i64,
) -> Result<Value, Refusal> {
    require_gateway(state, gw)?;
    let params = params
        .as_object()
        .ok_or_else(|| (code::INVALID_PARAMS, "params must be an object".to_string()))?;
    let item: SignedIdentity =
        alink::signed_identity(params, "params").map_err(|e| (e.code(), e.to_string()))?;
    let sub = check_login(inner, state, gw, &item)?;
    start_session(inner, state, gw, &sub, now);
    Ok(identity_json(&sub))
}

/// Whether `item` may go online through `gw`: attached to it, signed with its own secret,
/// enabled.
fn check_login(
    inner: &Inner,
    state: &State,
    gw: &Key,
    item: &SignedIdentity,
) -> Result<Key, Refusal> {
    let sub = key(&item.product_key, &item.device_name);
    match state.devices.get(&sub) {
        None => return Err(auth_refusal(SubDeviceAuthError::NotFound, &sub)),
        Some(d) if d.gateway.as_ref() != Some(gw) => {
            return Err((
                code::TOPO_NOT_FOUND,
                format!(
                    "{} is not a sub-device of this gateway (add it with thing/topo/add)",
                    name(&sub)
                ),
            ))
        }
        Some(_) => {}
    }
    inner
        .auth
        .check_signed(item)
        .map_err(|e| auth_refusal(e, &sub))?;
    Ok(sub)
}

/// Puts `sub` online through `gw`: its topics open to the gateway, a status row, last online.
fn start_session(inner: &Inner, state: &mut State, gw: &Key, sub: &Key, now: i64) {
    let gateway_conn = state.online.get(gw).cloned();
    let ip = state.devices.get(gw).and_then(|d| d.last_ip.clone());
    inner.auth.login_sub(gw, sub.clone());
    state.online.insert(
        sub.clone(),
        Online {
            client_id: gateway_conn.map(|o| o.client_id).unwrap_or_default(),
            via: Some(gw.clone()),
        },
    );
    // Desired values go out with its first message, as for a device of its own.
    state.awaiting_first_uplink.insert(sub.clone());
    if let Some(d) = state.devices.get_mut(sub) {
        d.last_online_ms = Some(now);
        d.last_ip.clone_from(&ip);
    }
    status(inner, sub, now, true, LOGIN, ip.clone());
    let store = inner.store.clone();
    let k = sub.clone();
    tokio::spawn(async move {
        if let Err(e) = store.mark_online(&k.0, &k.1, now, ip.as_deref()).await {
            tracing::warn!("device platform: cannot record last online: {e}");
        }
    });
}

/// A batch names 1 to [`MAX_BATCH`] sub-devices.
fn check_batch_size(n: usize) -> Result<(), Refusal> {
    if n == 0 || n > MAX_BATCH {
        return Err((
            code::INVALID_PARAMS,
            format!("a batch names 1 to {MAX_BATCH} sub-devices, not {n}"),
        ));
    }
    Ok(())
}

/// The refusal of a whole batch: the first failure's code, and in `data` every sub-device
/// that failed with its own code and message (Alibaba: "all succeed or all fail; on failure
/// `data` holds the devices").
fn batch_failure(failed: Vec<(Key, Refusal)>, total: usize) -> Failure {
    let (code, first) = failed[0].1.clone();
    Failure {
        code,
        message: format!(
            "{} of {total} sub-devices refused, none changed; first: {first}",
            failed.len()
        ),
        data: Value::Array(
            failed
                .into_iter()
                .map(|(k, (c, m))| {
                    json!({"productKey": k.0, "deviceName": k.1, "code": c, "message": m})
                })
                .collect(),
        ),
    }
}

/// `combine/batch_login`: every sub-device is checked as for `combine/login`; all go online
/// or, when one fails, none.
fn batch_login(
    inner: &Inner,
    state: &mut State,
    gw: &Key,
    params: &Value,
    now: i64,
) -> Result<Value, Failure> {
    require_gateway(state, gw)?;
    let items = alink::batch_login(params).map_err(|e| (e.code(), e.to_string()))?;
    check_batch_size(items.len())?;
    let mut subs: Vec<Key> = Vec::new();
    let mut failed = Vec::new();
    for item in &items {
        match check_login(inner, state, gw, item) {
            Ok(sub) if !subs.contains(&sub) => subs.push(sub),
            Ok(_) => {}
            Err(r) => failed.push((key(&item.product_key, &item.device_name), r)),
        }
    }
    if !failed.is_empty() {
        return Err(batch_failure(failed, items.len()));
    }
    for sub in &subs {
        start_session(inner, state, gw, sub, now);
    }
    Ok(Value::Array(subs.iter().map(identity_json).collect()))
}

/// `combine/batch_logout`: `[{productKey, deviceName}, …]`, each attached to this gateway;
/// all go offline or none.
fn batch_logout(
    inner: &Inner,
    state: &mut State,
    gw: &Key,
    params: &Value,
    now: i64,
) -> Result<Value, Failure> {
    require_gateway(state, gw)?;
    if !params.is_array() {
        return Err(Failure::from((
            code::INVALID_PARAMS,
            "params must be an array of {productKey, deviceName}".to_string(),
        )));
    }
    let items = alink::identities(params).map_err(|e| (e.code(), e.to_string()))?;
    check_batch_size(items.len())?;
    let mut subs: Vec<Key> = Vec::new();
    let mut failed = Vec::new();
    for (pk, dn) in &items {
        let sub = key(pk, dn);
        match state.devices.get(&sub) {
            None => failed.push((
                sub.clone(),
                auth_refusal(SubDeviceAuthError::NotFound, &sub),
            )),
            Some(d) if d.gateway.as_ref() != Some(gw) => failed.push((
                sub.clone(),
                (
                    code::TOPO_NOT_FOUND,
                    format!("{} is not a sub-device of this gateway", name(&sub)),
                ),
            )),
            Some(_) if subs.contains(&sub) => {}
            Some(_) => subs.push(sub),
        }
    }
    if !failed.is_empty() {
        return Err(batch_failure(failed, items.len()));
    }
    for sub in &subs {
        end_session(inner, state, gw, sub, LOGOUT, now);
    }
    Ok(Value::Array(subs.iter().map(identity_json).collect()))
}

fn logout(
    inner: &Inner,
    state: &mut State,
    gw: &Key,
    params: &Value,
    now: i64,
) -> Result<Value, Refusal> {
    require_gateway(state, gw)?;
    let items = alink::identities(params).map_err(|e| (e.code(), e.to_string()))?;
    let [(pk, dn)] = items.as_slice() else {
        return Err((
            code::INVALID_PARAMS,
            "params must name one sub-device".into(),
        ));
    };
    let sub = key(pk, dn);
    if state.devices.get(&sub).and_then(|d| d.gateway.as_ref()) != Some(gw) {
        return Err((
            code::TOPO_NOT_FOUND,
            format!("{} is not a sub-device of this gateway", name(&sub)),
        ));
    }
    end_session(inner, state, gw, &sub, LOGOUT, now);
    Ok(identity_json(&sub))
}

/// Ends a sub-device's session through `gw`, if it has one: offline, its topics closed to the
/// gateway, a status row with `reason`.
pub(super) fn end_session(
    inner: &Inner,
    state: &mut State,
    gw: &Key,
    sub: &Key,
    reason: &str,
    now: i64,
) {
    if !inner.auth.logout_sub(gw, sub) {
        return;
    }
    if state.online.get(sub).and_then(|o| o.via.as_ref()) == Some(gw) {
        state.online.remove(sub);
        state.awaiting_first_uplink.remove(sub);
        state.throttle.forget(sub);
        status(inner, sub, now, false, reason, None);
    }
}

/// The gateway disconnected: its sub-devices' sessions end with it.
pub(super) fn gateway_offline(inner: &Inner, state: &mut State, gw: &Key, now: i64) {
    for sub in inner.auth.logout_all(gw) {
        if state.online.get(&sub).and_then(|o| o.via.as_ref()) == Some(gw) {
            state.online.remove(&sub);
            state.awaiting_first_uplink.remove(&sub);
            state.throttle.forget(&sub);
            status(inner, &sub, now, false, GATEWAY_OFFLINE, None);
        }
    }
}

fn status(inner: &Inner, k: &Key, now: i64, online: bool, reason: &str, ip: Option<String>) {
    submit(
        &inner.writer,
        Record::Status {
            product_key: k.0.clone(),
            device_name: k.1.clone(),
            change: StatusChange {
                time: now,
                online,
                reason: reason.to_string(),
                ip,
            },
        },
    );
}
