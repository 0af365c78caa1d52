//! Gateways and their sub-devices, as Alink has them:
//!
//! - topology: `thing/topo/add` (the gateway proves it holds each sub-device's secret with a
//!   signature), `thing/topo/delete`, `thing/topo/get`, on the gateway's own topics;
//! - sessions: `/ext/session/{gw}/combine/login` puts a sub-device online through its gateway
//!   (the gateway may then use the sub-device's `/sys/…/` topics, see
//!   [`DeviceAuth::login_sub`](crate::device_auth::DeviceAuth::login_sub)), `combine/logout`
//!   takes it offline, and so does the gateway's own disconnection.
//!
//! A sub-device's messages then arrive on its own topics and take the ordinary path.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{key, lock, submit, Inner, Key, Online, State};
use crate::alink::{
    self, code, DeviceTopic, Reply, Request, SessionKind, SessionTopic, SignedIdentity, TopicKind,
};
use crate::device_auth::SubDeviceAuthError;
use crate::engine::Publish;
use crate::now_ms;
use crate::registry::NodeType;
use crate::store::{Record, StatusChange};

/// Status-change reasons this module records.
const LOGIN: &str = "login";
const LOGOUT: &str = "logout";
const GATEWAY_OFFLINE: &str = "gateway_offline";
const TOPO_DELETED: &str = "topo_deleted";

type Refusal = (u32, String);

fn reply_publish(topic: String, reply: &Reply) -> Publish {
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
            let reply = Reply::error("", e.code(), e.to_string());
            super::task::send_reply(inner, reply_publish(reply_topic, &reply));
            return;
        }
    };
    let gw = key(&topic.product_key, &topic.device_name);
    let result = match topic.kind {
        TopicKind::TopoAdd => topo_add(inner, &gw, &req.params).await,
        TopicKind::TopoDelete => topo_delete(inner, &gw, &req.params).await,
        TopicKind::TopoGet => topo_get(inner, &gw),
        _ => return,
    };
    if req.ack {
        let reply = match result {
            Ok(data) => Reply::ok(&req.id, data),
            Err((c, m)) => Reply::error(&req.id, c, m),
        };
        super::task::send_reply(inner, reply_publish(reply_topic, &reply));
    }
}

async fn topo_add(inner: &Arc<Inner>, gw: &Key, params: &Value) -> Result<Value, Refusal> {
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
            }
        }
        state.devices.insert(k.clone(), device);
        added.push(identity_json(&k));
    }
    Ok(Value::Array(added))
}

async fn topo_delete(inner: &Arc<Inner>, gw: &Key, params: &Value) -> Result<Value, Refusal> {
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

/// `/ext/session/{gw}/combine/login|logout`. Returns the reply to publish.
pub(super) fn on_session(
    inner: &Arc<Inner>,
    topic: &SessionTopic,
    payload: &[u8],
    now: i64,
) -> Option<Publish> {
    let reply_topic = topic.reply()?.to_string();
    let req = match Request::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::error("", e.code(), e.to_string());
            return Some(reply_publish(reply_topic, &reply));
        }
    };
    let gw = key(&topic.product_key, &topic.device_name);
    let mut state = lock(&inner.state);
    let result = match topic.kind {
        SessionKind::Login => login(inner, &mut state, &gw, &req.params, now),
        SessionKind::Logout => logout(inner, &mut state, &gw, &req.params, now),
        _ => return None,
    };
    drop(state);
    let reply = match result {
        Ok(data) => Reply::ok(&req.id, data),
        Err((c, m)) => Reply::error(&req.id, c, m),
    };
    req.ack.then(|| reply_publish(reply_topic, &reply))
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
        .check_signed(&item)
        .map_err(|e| auth_refusal(e, &sub))?;
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
    if let Some(d) = state.devices.get_mut(&sub) {
        d.last_online_ms = Some(now);
        d.last_ip.clone_from(&ip);
    }
    status(inner, &sub, now, true, LOGIN, ip.clone());
    let store = inner.store.clone();
    let k = sub.clone();
    tokio::spawn(async move {
        if let Err(e) = store.mark_online(&k.0, &k.1, now, ip.as_deref()).await {
            tracing::warn!("device platform: cannot record last online: {e}");
        }
    });
    Ok(identity_json(&sub))
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
