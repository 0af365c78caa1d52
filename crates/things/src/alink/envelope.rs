//! Alink JSON payloads: `{"id","version","params","method","sys":{"ack"}}` requests and
//! `{"id","code","data","message"}` replies.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::code;

/// At most this many properties in one report (Alibaba's limit; code 6106 beyond).
pub const MAX_PROPERTIES_PER_REPORT: usize = 200;
/// A report's `time` may be at most this far in the future (24 h).
pub const MAX_TIME_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// A payload that cannot be accepted; [`EnvelopeError::code`] is the reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a JSON object, or `id` missing.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `params` do not have the expected shape.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// More than [`MAX_PROPERTIES_PER_REPORT`] properties.
    #[error("too many properties: {0} > {MAX_PROPERTIES_PER_REPORT}")]
    TooManyProperties(usize),
}

impl EnvelopeError {
    /// The Alink reply code for this error.
    pub fn code(&self) -> u32 {
        match self {
            Self::BadRequest(_) => code::BAD_REQUEST,
            Self::InvalidParams(_) => code::INVALID_PARAMS,
            Self::TooManyProperties(_) => code::TOO_MANY_PROPERTIES,
        }
    }
}

/// An Alink request (up or down).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Message id, a numeric string unique per device per day; echoed in the reply.
    pub id: String,
    /// Protocol version, `"1.0"`.
    pub version: String,
    /// The arguments.
    pub params: Value,
    /// e.g. `thing.event.property.post`; optional on the wire (the topic says it too).
    pub method: Option<String>,
    /// `sys.ack`: whether the sender wants a reply (`sys.ack = 0` asks for none).
    pub ack: bool,
}

impl Request {
    /// A request with `ack` on.
    pub fn new(id: impl Into<String>, method: impl Into<String>, params: Value) -> Self {
        Self {
            id: id.into(),
            version: "1.0".into(),
            params,
            method: Some(method.into()),
            ack: true,
        }
    }

    /// Parses a payload. A numeric `id` is accepted as well as the numeric string Alink asks
    /// for, since device SDKs differ.
    pub fn parse(payload: &[u8]) -> Result<Self, EnvelopeError> {
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| EnvelopeError::BadRequest(format!("not JSON: {e}")))?;
        let Value::Object(mut o) = v else {
            return Err(EnvelopeError::BadRequest("not a JSON object".into()));
        };
        let id = match o.remove("id") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(EnvelopeError::BadRequest("id is required".into())),
        };
        let version = match o.remove("version") {
            Some(Value::String(s)) => s,
            _ => "1.0".into(),
        };
        let method = match o.remove("method") {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => return Err(EnvelopeError::BadRequest("method must be a string".into())),
        };
        let ack = !matches!(
            o.get("sys")
                .and_then(|s| s.get("ack"))
                .and_then(Value::as_i64),
            Some(0)
        );
        Ok(Self {
            id,
            version,
            params: o.remove("params").unwrap_or_else(|| json!({})),
            method,
            ack,
        })
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "version": self.version,
            "sys": {"ack": u8::from(self.ack)},
            "params": self.params,
        });
        if let Some(m) = &self.method {
            v["method"] = Value::String(m.clone());
        }
        v
    }

    /// `params` as an object (every Alink request has object params).
    pub fn params_object(&self) -> Result<&Map<String, Value>, EnvelopeError> {
        self.params
            .as_object()
            .ok_or_else(|| EnvelopeError::InvalidParams("params must be an object".into()))
    }
}

/// An Alink reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id.
    pub id: String,
    /// [`code::OK`] or an error code.
    pub code: u32,
    /// Result data (a service's output arguments, `checkFailedData`, …).
    pub data: Value,
    /// `success` or the reason.
    pub message: String,
}

impl Reply {
    /// A 200 reply carrying `data`.
    pub fn ok(id: impl Into<String>, data: Value) -> Self {
        Self {
            id: id.into(),
            code: code::OK,
            data,
            message: "success".into(),
        }
    }

    /// An error reply.
    pub fn error(id: impl Into<String>, code: u32, message: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            code,
            data: json!({}),
            message: message.into(),
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "code": self.code,
            "data": self.data,
            "message": self.message,
            "version": "1.0",
        })
    }

    /// Parses a reply payload (a device answering set/get/service calls).
    pub fn parse(payload: &[u8]) -> Result<Self, EnvelopeError> {
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| EnvelopeError::BadRequest(format!("not JSON: {e}")))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(EnvelopeError::BadRequest("id is required".into())),
        };
        let code = v
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| EnvelopeError::BadRequest("code is required".into()))?;
        Ok(Self {
            id,
            code,
            data: v.get("data").cloned().unwrap_or_else(|| json!({})),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// One reported property value.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue {
    /// The value.
    pub value: Value,
    /// Device time in ms, or the receive time for the short form.
    pub time: i64,
}

/// Reads a property report's params in short form (`{"temp":21.5}`) or full form
/// (`{"temp":{"value":21.5,"time":1700000000000}}`), both may be mixed.
///
/// An object is read as the full form when its keys are exactly `value` or `value` and `time`;
/// a struct property whose only members are named so is therefore ambiguous, as it is on
/// Alibaba's platform, and must be sent in full form.
pub fn property_values(
    params: &Map<String, Value>,
    now_ms: i64,
) -> Result<BTreeMap<String, PropertyValue>, EnvelopeError> {
    if params.len() > MAX_PROPERTIES_PER_REPORT {
        return Err(EnvelopeError::TooManyProperties(params.len()));
    }
    let mut out = BTreeMap::new();
    for (id, v) in params {
        let full = v
            .as_object()
            .filter(|o| o.contains_key("value") && o.keys().all(|k| k == "value" || k == "time"));
        let pv = match full {
            Some(o) => PropertyValue {
                value: o["value"].clone(),
                time: match o.get("time") {
                    None => now_ms,
                    Some(t) => time_ms(t, now_ms)
                        .map_err(|m| EnvelopeError::InvalidParams(format!("{id}.time: {m}")))?,
                },
            },
            None => PropertyValue {
                value: v.clone(),
                time: now_ms,
            },
        };
        out.insert(id.clone(), pv);
    }
    Ok(out)
}

fn time_ms(t: &Value, now_ms: i64) -> Result<i64, &'static str> {
    let t = match t {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|t| *t >= 0)
    .ok_or("must be UTC milliseconds")?;
    if t > now_ms.saturating_add(MAX_TIME_AHEAD_MS) {
        return Err("more than 24 hours in the future");
    }
    Ok(t)
}

/// An event's params: `{"value":{…outputData…},"time":ms}`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventParams {
    /// The output arguments.
    pub value: Map<String, Value>,
    /// Device time, or the receive time when absent.
    pub time: i64,
}

/// Reads an event's params.
pub fn event_params(
    params: &Map<String, Value>,
    now_ms: i64,
) -> Result<EventParams, EnvelopeError> {
    let value = match params.get("value") {
        Some(Value::Object(o)) => o.clone(),
        None => Map::new(),
        Some(_) => {
            return Err(EnvelopeError::InvalidParams(
                "value must be an object".into(),
            ))
        }
    };
    let time = match params.get("time") {
        None => now_ms,
        Some(t) => {
            time_ms(t, now_ms).map_err(|m| EnvelopeError::InvalidParams(format!("time: {m}")))?
        }
    };
    Ok(EventParams { value, time })
}

/// One sub-device's part of a pack report.
#[derive(Debug, Clone, PartialEq)]
pub struct SubDeviceReport {
    /// `identity.productKey`.
    pub product_key: String,
    /// `identity.deviceName`.
    pub device_name: String,
    /// Its properties.
    pub properties: BTreeMap<String, PropertyValue>,
    /// Its events by identifier.
    pub events: BTreeMap<String, EventParams>,
}

/// `thing.event.property.pack.post` params: the gateway's own properties and events plus a
/// report per sub-device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackPost {
    /// The sender's properties.
    pub properties: BTreeMap<String, PropertyValue>,
    /// The sender's events.
    pub events: BTreeMap<String, EventParams>,
    /// `subDevices`.
    pub sub_devices: Vec<SubDeviceReport>,
}

/// Reads pack-post params. The property limit applies to the whole pack.
pub fn pack_post(params: &Map<String, Value>, now_ms: i64) -> Result<PackPost, EnvelopeError> {
    type Part = (
        BTreeMap<String, PropertyValue>,
        BTreeMap<String, EventParams>,
    );
    fn part(o: &Map<String, Value>, now_ms: i64, count: &mut usize) -> Result<Part, EnvelopeError> {
        let props = match o.get("properties") {
            None => BTreeMap::new(),
            Some(Value::Object(p)) => property_values(p, now_ms)?,
            Some(_) => {
                return Err(EnvelopeError::InvalidParams(
                    "properties must be an object".into(),
                ))
            }
        };
        *count += props.len();
        let mut events = BTreeMap::new();
        match o.get("events") {
            None => {}
            Some(Value::Object(e)) => {
                for (id, ev) in e {
                    let ev = ev.as_object().ok_or_else(|| {
                        EnvelopeError::InvalidParams(format!("events.{id} must be an object"))
                    })?;
                    events.insert(id.clone(), event_params(ev, now_ms)?);
                }
            }
            Some(_) => {
                return Err(EnvelopeError::InvalidParams(
                    "events must be an object".into(),
                ))
            }
        }
        Ok((props, events))
    }
    let mut count = 0;
    let (properties, events) = part(params, now_ms, &mut count)?;
    let mut sub_devices = Vec::new();
    if let Some(subs) = params.get("subDevices") {
        let subs = subs
            .as_array()
            .ok_or_else(|| EnvelopeError::InvalidParams("subDevices must be an array".into()))?;
        for (i, s) in subs.iter().enumerate() {
            let where_ = format!("subDevices[{i}]");
            let s = s
                .as_object()
                .ok_or_else(|| bad_at(&where_, "must be an object"))?;
            let (product_key, device_name) = identity(s, &where_)?;
            let (properties, events) = part(s, now_ms, &mut count)?;
            sub_devices.push(SubDeviceReport {
                product_key,
                device_name,
                properties,
                events,
            });
        }
    }
    if count > MAX_PROPERTIES_PER_REPORT {
        return Err(EnvelopeError::TooManyProperties(count));
    }
    Ok(PackPost {
        properties,
        events,
        sub_devices,
    })
}

fn bad_at(where_: &str, what: &str) -> EnvelopeError {
    EnvelopeError::InvalidParams(format!("{where_}: {what}"))
}

/// `identity: {productKey, deviceName}` of a pack or history entry.
fn identity(o: &Map<String, Value>, where_: &str) -> Result<(String, String), EnvelopeError> {
    let ident = o
        .get("identity")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_at(where_, "identity is required"))?;
    let field = |k: &str| {
        ident
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad_at(where_, &format!("identity.{k} is required")))
    };
    Ok((field("productKey")?, field("deviceName")?))
}

/// Reads `thing.event.property.history.post` params: an array of
/// `{"identity":{productKey,deviceName},"properties":[{id:{value,time}},…],"events":[{id:{value,time}},…]}`.
///
/// Each element of `properties` / `events` is one snapshot and becomes one
/// [`SubDeviceReport`] (a property may appear in several snapshots with different times).
/// History is data recorded earlier, so every value and event must carry its `time`.
pub fn history_post(params: &Value, now_ms: i64) -> Result<Vec<SubDeviceReport>, EnvelopeError> {
    let entries = params
        .as_array()
        .ok_or_else(|| EnvelopeError::InvalidParams("params must be an array".into()))?;
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("params[{i}]");
        let entry = entry
            .as_object()
            .ok_or_else(|| bad_at(&at, "must be an object"))?;
        let (product_key, device_name) = identity(entry, &at)?;
        let snapshots = |key: &str| -> Result<Vec<&Map<String, Value>>, EnvelopeError> {
            match entry.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        s.as_object()
                            .ok_or_else(|| bad_at(&format!("{at}.{key}[{j}]"), "must be an object"))
                    })
                    .collect(),
                Some(_) => Err(bad_at(&at, &format!("{key} must be an array"))),
            }
        };
        let report = |properties, events| SubDeviceReport {
            product_key: product_key.clone(),
            device_name: device_name.clone(),
            properties,
            events,
        };
        for (j, snap) in snapshots("properties")?.into_iter().enumerate() {
            if let Some((id, _)) = snap
                .iter()
                .find(|(_, v)| v.get("time").is_none() || v.get("value").is_none())
            {
                return Err(bad_at(
                    &format!("{at}.properties[{j}].{id}"),
                    "history values need value and time",
                ));
            }
            out.push(report(property_values(snap, now_ms)?, BTreeMap::new()));
        }
        for (j, snap) in snapshots("events")?.into_iter().enumerate() {
            let mut events = BTreeMap::new();
            for (id, ev) in snap {
                let here = format!("{at}.events[{j}].{id}");
                let ev = ev
                    .as_object()
                    .filter(|e| e.contains_key("time"))
                    .ok_or_else(|| bad_at(&here, "history events need value and time"))?;
                let parsed = event_params(ev, now_ms).map_err(|e| bad_at(&here, &e.to_string()))?;
                events.insert(id.clone(), parsed);
            }
            out.push(report(BTreeMap::new(), events));
        }
    }
    Ok(out)
}

/// A sub-device's identity with the signature that proves its gateway holds the sub-device's
/// secret: an item of `thing.topo.add`, or the params of `combine/login`. The signature is
/// computed as for an MQTT password (`device_auth::sign_content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdentity {
    /// `productKey`.
    pub product_key: String,
    /// `deviceName`.
    pub device_name: String,
    /// `clientId`, part of the signed content.
    pub client_id: String,
    /// `timestamp`, part of the signed content when present.
    pub timestamp: Option<String>,
    /// `signmethod` (topo/add) or `signMethod` (combine/login); `hmacmd5` when absent.
    pub sign_method: String,
    /// `sign`: the hex HMAC.
    pub sign: String,
}

/// Reads one [`SignedIdentity`] from an object; `where_` names it in errors.
pub fn signed_identity(
    o: &Map<String, Value>,
    where_: &str,
) -> Result<SignedIdentity, EnvelopeError> {
    signed_identity_or(o, where_, "hmacmd5")
}

/// As [`signed_identity`], with `default_method` when the object names no sign method.
fn signed_identity_or(
    o: &Map<String, Value>,
    where_: &str,
    default_method: &str,
) -> Result<SignedIdentity, EnvelopeError> {
    let text = |k: &str| -> Option<String> {
        match o.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let need = |k: &str| text(k).ok_or_else(|| bad_at(where_, &format!("{k} is required")));
    Ok(SignedIdentity {
        product_key: need("productKey")?,
        device_name: need("deviceName")?,
        client_id: need("clientId")?,
        timestamp: text("timestamp"),
        sign_method: text("signmethod")
            .or_else(|| text("signMethod"))
            .unwrap_or_else(|| default_method.into()),
        sign: need("sign")?,
    })
}

/// `combine/batch_login` params: `{"deviceList": [item, …], "signMethod": …}`, each item as
/// `combine/login` params. Alibaba's SDK names the method once for the batch, other gateways
/// in each item; an item's own method wins.
pub fn batch_login(params: &Value) -> Result<Vec<SignedIdentity>, EnvelopeError> {
    let o = params
        .as_object()
        .ok_or_else(|| bad_at("params", "must be an object with deviceList"))?;
    let list = o
        .get("deviceList")
        .ok_or_else(|| bad_at("params", "deviceList is required"))?;
    let method = ["signMethod", "signmethod"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str))
        .unwrap_or("hmacmd5");
    objects(list)
        .map_err(|_| bad_at("params.deviceList", "must be an array of objects"))?
        .into_iter()
        .enumerate()
        .map(|(i, item)| signed_identity_or(item, &format!("params.deviceList[{i}]"), method))
        .collect()
}

/// `thing.topo.add` params: an array of [`SignedIdentity`].
pub fn topo_add(params: &Value) -> Result<Vec<SignedIdentity>, EnvelopeError> {
    objects(params)?
        .into_iter()
        .enumerate()
        .map(|(i, o)| signed_identity(o, &format!("params[{i}]")))
        .collect()
}

/// `thing.topo.delete` and `combine/logout` items: `{productKey, deviceName}` each, as
/// `(productKey, deviceName)`. `params` is an array of them or (logout) one object.
pub fn identities(params: &Value) -> Result<Vec<(String, String)>, EnvelopeError> {
    let one;
    let items = match params {
        Value::Object(o) => {
            one = [o];
            one.to_vec()
        }
        v => objects(v)?,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let at = format!("params[{i}]");
            let field = |k: &str| {
                o.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad_at(&at, &format!("{k} is required")))
            };
            Ok((field("productKey")?, field("deviceName")?))
        })
        .collect()
}

fn objects(params: &Value) -> Result<Vec<&Map<String, Value>>, EnvelopeError> {
    let items = params
        .as_array()
        .ok_or_else(|| EnvelopeError::InvalidParams("params must be an array".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_object()
                .ok_or_else(|| bad_at(&format!("params[{i}]"), "must be an object"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn request_parses_the_documented_envelope() {
        let r = Request::parse(br#"{"id":"123","version":"1.0","sys":{"ack":0},"params":{"temp":21.5},"method":"thing.event.property.post"}"#).unwrap();
        assert_eq!(r.id, "123");
        assert!(!r.ack);
        assert_eq!(r.method.as_deref(), Some("thing.event.property.post"));
        assert_eq!(r.params, json!({"temp": 21.5}));
        let back = Request::parse(r.to_json().to_string().as_bytes()).unwrap();
        assert_eq!(back, r);
        let r = Request::parse(br#"{"id":42,"params":{}}"#).unwrap();
        assert_eq!(r.id, "42");
        assert!(r.ack, "ack defaults to on");
    }

    #[test]
    fn malformed_requests_get_400() {
        for p in [
            &b"nope"[..],
            b"[]",
            br#"{"params":{}}"#,
            br#"{"id":"","params":{}}"#,
            br#"{"id":"1","method":5}"#,
        ] {
            assert_eq!(
                Request::parse(p).unwrap_err().code(),
                400,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
        let r = Request::parse(br#"{"id":"1","params":[1]}"#).unwrap();
        assert_eq!(r.params_object().unwrap_err().code(), 460);
    }

    #[test]
    fn replies_have_the_alink_shape() {
        let ok = Reply::ok("7", json!({"done": 1})).to_json();
        assert_eq!(
            ok,
            json!({"id":"7","code":200,"data":{"done":1},"message":"success","version":"1.0"})
        );
        let err = Reply::error("8", code::INVALID_PARAMS, "temp: must be <= max 85").to_json();
        assert_eq!(err["code"], 460);
        assert_eq!(err["message"], "temp: must be <= max 85");
        let parsed =
            Reply::parse(br#"{"id":"9","code":6100,"data":{},"message":"device not found"}"#)
                .unwrap();
        assert_eq!(parsed.code, code::DEVICE_NOT_FOUND);
        assert_eq!(Reply::parse(br#"{"id":"9"}"#).unwrap_err().code(), 400);
    }

    #[test]
    fn short_and_full_property_forms() {
        let p = json!({"temp": 21.5, "hum": {"value": 40, "time": NOW - 5}, "color": {"r": 1, "g": 2}, "x": {"value": 1}});
        let v = property_values(p.as_object().unwrap(), NOW).unwrap();
        assert_eq!(
            v["temp"],
            PropertyValue {
                value: json!(21.5),
                time: NOW
            }
        );
        assert_eq!(
            v["hum"],
            PropertyValue {
                value: json!(40),
                time: NOW - 5
            }
        );
        assert_eq!(
            v["color"].value,
            json!({"r": 1, "g": 2}),
            "a struct is a short-form value"
        );
        assert_eq!(
            v["x"],
            PropertyValue {
                value: json!(1),
                time: NOW
            }
        );
    }

    #[test]
    fn report_times_in_the_far_future_or_malformed_are_refused() {
        let p = json!({"t": {"value": 1, "time": NOW + MAX_TIME_AHEAD_MS + 1}});
        assert_eq!(
            property_values(p.as_object().unwrap(), NOW)
                .unwrap_err()
                .code(),
            460
        );
        let p = json!({"t": {"value": 1, "time": NOW + MAX_TIME_AHEAD_MS}});
        assert!(property_values(p.as_object().unwrap(), NOW).is_ok());
        let p = json!({"t": {"value": 1, "time": "soon"}});
        assert_eq!(
            property_values(p.as_object().unwrap(), NOW)
                .unwrap_err()
                .code(),
            460
        );
    }

    #[test]
    fn more_than_200_properties_get_6106() {
        let mut m = Map::new();
        for i in 0..=MAX_PROPERTIES_PER_REPORT {
            m.insert(format!("p{i}"), json!(i));
        }
        assert_eq!(property_values(&m, NOW).unwrap_err().code(), 6106);
        m.remove("p0");
        assert!(property_values(&m, NOW).is_ok());
    }

    #[test]
    fn event_params_with_and_without_time() {
        let p = json!({"value": {"temp": 90.0}, "time": NOW - 1});
        let e = event_params(p.as_object().unwrap(), NOW).unwrap();
        assert_eq!(e.time, NOW - 1);
        assert_eq!(e.value["temp"], 90.0);
        let e = event_params(json!({"value": {}}).as_object().unwrap(), NOW).unwrap();
        assert_eq!(e.time, NOW);
        assert!(event_params(json!({"value": 3}).as_object().unwrap(), NOW).is_err());
    }

    #[test]
    fn pack_post_splits_gateway_and_sub_devices() {
        let p = json!({
            "properties": {"uptime": 5},
            "events": {"alarm": {"value": {"level": 2}, "time": NOW - 10}},
            "subDevices": [
                {"identity": {"productKey": "pkS", "deviceName": "s1"},
                 "properties": {"temp": {"value": 20.5, "time": NOW - 3}},
                 "events": {}}
            ]
        });
        let pack = pack_post(p.as_object().unwrap(), NOW).unwrap();
        assert_eq!(pack.properties["uptime"].value, 5);
        assert_eq!(pack.events["alarm"].time, NOW - 10);
        assert_eq!(pack.sub_devices.len(), 1);
        assert_eq!(pack.sub_devices[0].device_name, "s1");
        assert_eq!(pack.sub_devices[0].properties["temp"].time, NOW - 3);
        let bad = json!({"subDevices": [{"properties": {}}]});
        assert_eq!(
            pack_post(bad.as_object().unwrap(), NOW)
                .unwrap_err()
                .to_string(),
            "invalid params: subDevices[0]: identity is required"
        );
    }

    #[test]
    fn history_post_gives_one_report_per_snapshot() {
        let p = json!([
            {"identity": {"productKey": "pk", "deviceName": "d1"},
             "properties": [
                {"temp": {"value": 20.5, "time": NOW - 2000}, "hum": {"value": 40, "time": NOW - 2000}},
                {"temp": {"value": 21.0, "time": NOW - 1000}}
             ],
             "events": [{"overheat": {"value": {"temp": 90}, "time": NOW - 500}}]},
            {"identity": {"productKey": "pkS", "deviceName": "s1"},
             "properties": [{"temp": {"value": 19, "time": NOW - 3000}}]}
        ]);
        let h = history_post(&p, NOW).unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].properties["hum"].value, 40);
        assert_eq!(h[1].properties["temp"].time, NOW - 1000);
        assert_eq!(h[2].events["overheat"].time, NOW - 500);
        assert_eq!(
            (h[3].product_key.as_str(), h[3].device_name.as_str()),
            ("pkS", "s1")
        );
    }

    #[test]
    fn history_post_needs_an_array_identities_and_times() {
        let err = |p: Value| history_post(&p, NOW).unwrap_err().to_string();
        assert_eq!(
            err(json!({"identity": {}})),
            "invalid params: params must be an array"
        );
        assert_eq!(
            err(json!([{"properties": []}])),
            "invalid params: params[0]: identity is required"
        );
        let ident = json!({"productKey": "pk", "deviceName": "d1"});
        assert_eq!(
            err(json!([{"identity": ident, "properties": [{"temp": 21}]}])),
            "invalid params: params[0].properties[0].temp: history values need value and time"
        );
        assert_eq!(
            err(json!([{"identity": ident, "events": [{"e": {"value": {}}}]}])),
            "invalid params: params[0].events[0].e: history events need value and time"
        );
        assert_eq!(
            err(
                json!([{"identity": ident, "properties": [{"t": {"value": 1, "time": NOW + 2 * MAX_TIME_AHEAD_MS}}]}])
            ),
            "invalid params: t.time: more than 24 hours in the future"
        );
    }

    #[test]
    fn topo_and_login_params_are_read_in_both_spellings() {
        let add = json!([{"productKey": "pk", "deviceName": "s1", "clientId": "pk.s1",
                          "timestamp": 1524448722000_i64, "signmethod": "hmacSha256", "sign": "AB"}]);
        let ids = topo_add(&add).unwrap();
        assert_eq!(ids[0].timestamp.as_deref(), Some("1524448722000"));
        assert_eq!(ids[0].sign_method, "hmacSha256");
        let login = json!({"productKey": "pk", "deviceName": "s1", "clientId": "c",
                           "signMethod": "hmacsha1", "sign": "x", "cleanSession": "true"});
        let one = signed_identity(login.as_object().unwrap(), "params").unwrap();
        assert_eq!(
            (one.sign_method.as_str(), one.timestamp),
            ("hmacsha1", None)
        );
        assert_eq!(
            topo_add(&json!([{"productKey": "pk", "deviceName": "s1"}]))
                .unwrap_err()
                .to_string(),
            "invalid params: params[0]: clientId is required"
        );
        assert_eq!(
            identities(&json!([{"productKey": "pk", "deviceName": "s1"}])).unwrap(),
            [("pk".to_string(), "s1".to_string())]
        );
        assert_eq!(
            identities(&json!({"productKey": "pk", "deviceName": "s2"})).unwrap()[0].1,
            "s2"
        );
        assert!(identities(&json!("x")).is_err());
    }

    #[test]
    fn batch_login_items_take_the_batch_sign_method_unless_they_name_one() {
        let item =
            |dn: &str| json!({"productKey": "pk", "deviceName": dn, "clientId": "c", "sign": "s"});
        let mut own = item("s2");
        own["signMethod"] = json!("hmacsha1");
        let batch = json!({"signMethod": "hmacSha256", "deviceList": [item("s1"), own]});
        let ids = batch_login(&batch).unwrap();
        assert_eq!(
            ids.iter()
                .map(|i| i.sign_method.as_str())
                .collect::<Vec<_>>(),
            ["hmacSha256", "hmacsha1"]
        );
        assert_eq!(
            batch_login(&json!({"deviceList": [item("s1")]})).unwrap()[0].sign_method,
            "hmacmd5"
        );
        let err = |p: Value| batch_login(&p).unwrap_err().to_string();
        assert_eq!(
            err(json!([item("s1")])),
            "invalid params: params: must be an object with deviceList"
        );
        assert_eq!(
            err(json!({})),
            "invalid params: params: deviceList is required"
        );
        assert_eq!(
            err(json!({"deviceList": [1]})),
            "invalid params: params.deviceList: must be an array of objects"
        );
        assert_eq!(
            err(json!({"deviceList": [{"productKey": "pk", "deviceName": "s1"}]})),
            "invalid params: params.deviceList[0]: clientId is required"
        );
    }
}
