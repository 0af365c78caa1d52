//! What to do with a message a device published: a pure function from (product, shadow, topic,
//! payload, now) to an [`Outcome`] — the reply to publish, the history rows to store, the
//! shadow change, and any answer to a call the platform made. The runtime that the broker will
//! drive (not part of this crate yet) performs those effects.
//!
//! Downlink requests (property set/get, service calls) are built by [`downlink`] and tracked
//! until their reply or timeout by [`PendingCalls`].

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::alink::{
    code, event_params, property_values, DeviceTopic, EnvelopeError, EventParams, PropertyValue,
    Reply, Request, TopicKind,
};
use crate::registry::Product;
use crate::shadow::Shadow;
use crate::store::{Record, ServiceCallRecord, StoredEvent};
use crate::tsl::CallType;
use crate::validate::{check_event, check_properties, ValidationMode, Violation};

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Topic name.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// The effects of one uplink message.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The reply to send the device (none when it asked for no ack, or for replies).
    pub reply: Option<Publish>,
    /// History rows for the [`crate::store::HistoryWriter`].
    pub records: Vec<Record>,
    /// Whether the shadow changed and should be saved.
    pub shadow_changed: bool,
    /// The device answered a platform request (set/get/service/RRPC) with this reply.
    pub answer: Option<(TopicKind, Reply)>,
}

fn reply_to(topic: &DeviceTopic, reply: &Reply) -> Option<Publish> {
    topic.reply().map(|t| Publish {
        topic: t.to_string(),
        payload: reply.to_json().to_string().into_bytes(),
    })
}

/// Handles a message a device published on one of its own topics. `topic` has been parsed
/// and its product key / device name are the device's (the ACL guarantees it).
pub fn handle_uplink(
    product: &Product,
    shadow: &mut Shadow,
    topic: &DeviceTopic,
    payload: &[u8],
    now_ms: i64,
) -> Outcome {
    match &topic.kind {
        TopicKind::PropertyPost => request(topic, payload, |req, out| {
            property_post(product, shadow, topic, req, now_ms, out)
        }),
        TopicKind::EventPost(event_id) => request(topic, payload, |req, out| {
            event_post(product, topic, event_id, req, now_ms, out)
        }),
        TopicKind::DesiredGet => request(topic, payload, |req, _| Ok(desired_get(shadow, req))),
        TopicKind::DesiredDelete => {
            request(topic, payload, |req, out| desired_delete(shadow, req, out))
        }
        TopicKind::PropertySetReply
        | TopicKind::PropertyGetReply
        | TopicKind::ServiceReply(_)
        | TopicKind::RrpcResponse(_) => match Reply::parse(payload) {
            Ok(reply) => Outcome {
                answer: Some((topic.kind.clone(), reply)),
                ..Outcome::default()
            },
            Err(e) => {
                tracing::debug!(%topic, error = %e, "unreadable reply from device");
                Outcome::default()
            }
        },
        // Downlink topics: nothing to do. Pack and history posts involve several devices'
        // products and shadows, so `Platform` handles them (with `check_report`).
        _ => Outcome::default(),
    }
}

/// The reply to a request refused because its device sends too fast (Alink 429): none when
/// the request asked for no reply or cannot be read.
pub fn throttled_reply(topic: &DeviceTopic, payload: &[u8]) -> Option<Publish> {
    let req = Request::parse(payload).ok()?;
    if !req.ack {
        return None;
    }
    let reply = Reply::error(&req.id, code::THROTTLED, "request too frequent");
    reply_to(topic, &reply)
}

/// Parses the envelope, runs `f`, and turns its result into the reply.
fn request(
    topic: &DeviceTopic,
    payload: &[u8],
    f: impl FnOnce(&Request, &mut Outcome) -> Result<Value, (u32, String)>,
) -> Outcome {
    let mut out = Outcome::default();
    let req = match Request::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            // Without an id there is nothing to correlate a reply with; Alibaba still answers
            // with id "" so the device sees the failure.
            out.reply = reply_to(topic, &Reply::error("", e.code(), e.to_string()));
            return out;
        }
    };
    let reply = match f(&req, &mut out) {
        Ok(data) => Reply::ok(&req.id, data),
        Err((code, message)) => Reply::error(&req.id, code, message),
    };
    if req.ack {
        out.reply = reply_to(topic, &reply);
    }
    out
}

fn env_err(e: EnvelopeError) -> (u32, String) {
    (e.code(), e.to_string())
}

fn property_post(
    product: &Product,
    shadow: &mut Shadow,
    topic: &DeviceTopic,
    req: &Request,
    now_ms: i64,
    out: &mut Outcome,
) -> Result<Value, (u32, String)> {
    let values = property_values(req.params_object().map_err(env_err)?, now_ms).map_err(env_err)?;
    let plain: Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let checked = check_properties(&product.model, product.validation, &plain)
        .map_err(|v| (code::INVALID_PARAMS, format!("invalid params: {v}")))?;
    let accepted: Vec<(&str, &Value, i64)> = checked
        .accepted
        .keys()
        .map(|k| (k.as_str(), &values[k].value, values[k].time))
        .collect();
    for (id, value, time) in &accepted {
        out.records.push(Record::Property {
            product_key: topic.product_key.clone(),
            device_name: topic.device_name.clone(),
            identifier: id.to_string(),
            time: *time,
            value: (*value).clone(),
        });
    }
    let before = shadow.version;
    shadow.apply_reported(accepted);
    out.shadow_changed = shadow.version != before;
    if checked.failed.is_empty() {
        Ok(json!({}))
    } else {
        Ok(json!({ "checkFailedData": checked.check_failed_data(&plain) }))
    }
}

fn event_post(
    product: &Product,
    topic: &DeviceTopic,
    event_id: &str,
    req: &Request,
    now_ms: i64,
    out: &mut Outcome,
) -> Result<Value, (u32, String)> {
    let ev = event_params(req.params_object().map_err(env_err)?, now_ms).map_err(env_err)?;
    let checked = check_event(&product.model, product.validation, event_id, &ev.value)
        .map_err(|v| (code::INVALID_PARAMS, format!("invalid params: {v}")))?;
    // In mode none every event counts as info (as on Alibaba's platform).
    let event_type = match (product.validation, product.model.event(event_id)) {
        (ValidationMode::None, _) | (_, None) => "info",
        (_, Some(e)) => e.event_type.as_str(),
    };
    out.records.push(Record::Event {
        product_key: topic.product_key.clone(),
        device_name: topic.device_name.clone(),
        event: StoredEvent {
            identifier: event_id.to_string(),
            event_type: event_type.to_string(),
            time: ev.time,
            output: Value::Object(checked.accepted.clone()),
        },
    });
    if checked.failed.is_empty() {
        Ok(json!({}))
    } else {
        Ok(json!({ "checkFailedData": checked.check_failed_data(&ev.value) }))
    }
}

/// One device's part of a pack report, checked: what to store and apply, and what weak mode
/// let through with failures.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedReport {
    /// History rows (properties and events).
    pub records: Vec<Record>,
    /// Accepted property values with their times, for the shadow.
    pub reported: Vec<(String, Value, i64)>,
    /// `checkFailedData` for this device, when weak mode found failures.
    pub failed: Option<Value>,
}

/// Checks one device's properties and events of a `pack/post` against its product. Strict
/// mode refuses the first violation (with the event identifier prefixed for event arguments).
pub fn check_report(
    product: &Product,
    device_name: &str,
    properties: &BTreeMap<String, PropertyValue>,
    events: &BTreeMap<String, EventParams>,
) -> Result<CheckedReport, Violation> {
    let pk = &product.product_key;
    let plain: Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let checked = check_properties(&product.model, product.validation, &plain)?;
    let mut records = Vec::new();
    let mut reported = Vec::new();
    for k in checked.accepted.keys() {
        let pv = &properties[k];
        records.push(Record::Property {
            product_key: pk.clone(),
            device_name: device_name.to_string(),
            identifier: k.clone(),
            time: pv.time,
            value: pv.value.clone(),
        });
        reported.push((k.clone(), pv.value.clone(), pv.time));
    }
    let mut failed = Map::new();
    if !checked.failed.is_empty() {
        if let Value::Object(m) = checked.check_failed_data(&plain) {
            failed.extend(m);
        }
    }
    for (id, ev) in events {
        let c = check_event(&product.model, product.validation, id, &ev.value).map_err(|v| {
            Violation {
                path: format!("{id}.{}", v.path),
                rule: v.rule,
            }
        })?;
        let event_type = match (product.validation, product.model.event(id)) {
            (ValidationMode::None, _) | (_, None) => "info",
            (_, Some(e)) => e.event_type.as_str(),
        };
        if !c.failed.is_empty() {
            failed.insert(id.clone(), c.check_failed_data(&ev.value));
        }
        records.push(Record::Event {
            product_key: pk.clone(),
            device_name: device_name.to_string(),
            event: StoredEvent {
                identifier: id.clone(),
                event_type: event_type.to_string(),
                time: ev.time,
                output: Value::Object(c.accepted),
            },
        });
    }
    Ok(CheckedReport {
        records,
        reported,
        failed: (!failed.is_empty()).then_some(Value::Object(failed)),
    })
}

/// `{"properties":["power",…]}` → `{"power":{"value":…,"version":…}}`; all when the list is
/// empty or absent.
fn desired_get(shadow: &Shadow, req: &Request) -> Value {
    let wanted: Option<Vec<&str>> = req
        .params
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .filter(|v: &Vec<&str>| !v.is_empty());
    let data: Map<String, Value> = shadow
        .desired
        .iter()
        .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.contains(&k.as_str())))
        .map(|(k, d)| (k.clone(), json!({"value": d.value, "version": d.version})))
        .collect();
    Value::Object(data)
}

/// `{"properties":{"power":{"version":3},"mode":{}}}` deletes those desired values.
fn desired_delete(
    shadow: &mut Shadow,
    req: &Request,
    out: &mut Outcome,
) -> Result<Value, (u32, String)> {
    let Some(props) = req.params.get("properties").and_then(Value::as_object) else {
        return Err((
            code::INVALID_PARAMS,
            "params.properties must be an object".into(),
        ));
    };
    let items: Vec<(String, Option<u64>)> = props
        .iter()
        .map(|(k, v)| (k.clone(), v.get("version").and_then(Value::as_u64)))
        .collect();
    let before = shadow.version;
    shadow.delete_desired(&items);
    out.shadow_changed = shadow.version != before;
    Ok(json!({}))
}

/// Builders for platform → device requests.
pub mod downlink {
    use serde_json::{Map, Value};

    use super::Publish;
    use crate::alink::{DeviceTopic, Request, TopicKind};

    fn publish(pk: &str, dn: &str, kind: TopicKind, req: &Request) -> Publish {
        Publish {
            topic: DeviceTopic::new(pk, dn, kind).to_string(),
            payload: req.to_json().to_string().into_bytes(),
        }
    }

    /// `thing/service/property/set` with the values to set.
    pub fn property_set(pk: &str, dn: &str, id: &str, values: Map<String, Value>) -> Publish {
        let req = Request::new(id, "thing.service.property.set", Value::Object(values));
        publish(pk, dn, TopicKind::PropertySet, &req)
    }

    /// `thing/service/property/get` for these identifiers.
    pub fn property_get(pk: &str, dn: &str, id: &str, identifiers: &[&str]) -> Publish {
        let req = Request::new(
            id,
            "thing.service.property.get",
            Value::from(identifiers.to_vec()),
        );
        publish(pk, dn, TopicKind::PropertyGet, &req)
    }

    /// An async service call on `thing/service/{service}`.
    pub fn service_call(
        pk: &str,
        dn: &str,
        id: &str,
        service: &str,
        args: Map<String, Value>,
    ) -> Publish {
        let req = Request::new(id, format!("thing.service.{service}"), Value::Object(args));
        publish(pk, dn, TopicKind::ServiceCall(service.to_string()), &req)
    }

    /// A sync (RRPC) service call on `rrpc/request/{id}`.
    pub fn rrpc_call(
        pk: &str,
        dn: &str,
        id: &str,
        service: &str,
        args: Map<String, Value>,
    ) -> Publish {
        let req = Request::new(id, format!("thing.service.{service}"), Value::Object(args));
        publish(pk, dn, TopicKind::RrpcRequest(id.to_string()), &req)
    }
}

/// A call the platform sent and waits on.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    service: String,
    call_type: CallType,
    input: Value,
    started_ms: i64,
    deadline_ms: i64,
}

/// Calls in flight, keyed by (productKey, deviceName, message id); pure, time passed in.
///
/// [`PendingCalls::on_answer`] matches a device's reply (from [`Outcome::answer`]) to its call
/// and [`PendingCalls::expire`] times calls out; both give the [`ServiceCallRecord`] to log.
#[derive(Debug, Default)]
pub struct PendingCalls {
    calls: HashMap<(String, String, String), Pending>,
}

impl PendingCalls {
    /// Starts tracking a call sent at `now_ms` that times out after `timeout_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        pk: &str,
        dn: &str,
        id: &str,
        service: &str,
        call_type: CallType,
        input: Value,
        now_ms: i64,
        timeout_ms: i64,
    ) {
        self.calls.insert(
            (pk.to_string(), dn.to_string(), id.to_string()),
            Pending {
                service: service.to_string(),
                call_type,
                input,
                started_ms: now_ms,
                deadline_ms: now_ms.saturating_add(timeout_ms),
            },
        );
    }

    /// Number of calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The device `pk`/`dn` answered; returns the completed call, or `None` for an unknown or
    /// already expired id.
    pub fn on_answer(
        &mut self,
        pk: &str,
        dn: &str,
        reply: &Reply,
        now_ms: i64,
    ) -> Option<ServiceCallRecord> {
        let p = self
            .calls
            .remove(&(pk.to_string(), dn.to_string(), reply.id.clone()))?;
        Some(ServiceCallRecord {
            call_id: reply.id.clone(),
            service: p.service,
            input: p.input,
            output: Some(reply.data.clone()),
            status: if reply.code == code::OK {
                "ok"
            } else {
                "error"
            }
            .to_string(),
            code: Some(i64::from(reply.code)),
            started_ms: p.started_ms,
            latency_ms: Some(now_ms - p.started_ms),
        })
    }

    /// Removes and returns (as `timeout` records, with productKey and deviceName) every call
    /// whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(String, String, ServiceCallRecord)> {
        let due: Vec<_> = self
            .calls
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<_> = due
            .into_iter()
            .filter_map(|k| {
                let p = self.calls.remove(&k)?;
                let (pk, dn, id) = k;
                Some((
                    pk,
                    dn,
                    ServiceCallRecord {
                        call_id: id,
                        service: p.service,
                        input: p.input,
                        output: None,
                        status: "timeout".to_string(),
                        code: None,
                        started_ms: p.started_ms,
                        latency_ms: None,
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| {
            a.2.started_ms
                .cmp(&b.2.started_ms)
                .then(a.2.call_id.cmp(&b.2.call_id))
        });
        out
    }

    /// The earliest deadline, for the runtime's timer.
    pub fn next_deadline(&self) -> Option<i64> {
        self.calls.values().map(|p| p.deadline_ms).min()
    }

    /// Whether the call is synchronous (a caller is waiting on it).
    pub fn is_sync(&self, pk: &str, dn: &str, id: &str) -> Option<bool> {
        self.calls
            .get(&(pk.to_string(), dn.to_string(), id.to_string()))
            .map(|p| p.call_type == CallType::Sync)
    }
}

#[cfg(test)]
mod tests;
