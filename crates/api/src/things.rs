//! `/api/v1` routes of the device layer: products and their thing models, devices, shadows,
//! property set, service calls and history. They answer 503 when the device layer is off.

use crate::{ApiError, ApiState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use thingmq_things::now_ms;
use thingmq_things::runtime::{
    CallState, DeviceStatus, Platform, PlatformError, ServiceCall, SetOutcome,
};
use thingmq_things::store::StoreError;
use thingmq_things::{NodeType, Product, ThingModel, ValidationMode};

/// Most history rows one request returns.
const MAX_LIMIT: u32 = 10_000;

fn platform(state: &ApiState) -> Result<&Platform, ApiError> {
    state.platform.as_ref().ok_or_else(|| {
        ApiError::unavailable("the device layer is disabled ([things] enabled = false)")
    })
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", e))
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> ApiError {
        match e {
            PlatformError::NotFound(what) => ApiError::not_found(what),
            PlatformError::Invalid(m) => ApiError::invalid("params", m),
            PlatformError::Conflict(m) => ApiError::conflict(m),
            PlatformError::Offline(d) => ApiError::conflict(format!("device {d} is offline")),
            PlatformError::Store(StoreError::TooLarge(m)) => ApiError::invalid("from", m),
            PlatformError::Timeout(t) => ApiError::timeout(format!(
                "the device did not answer within {} ms",
                t.as_millis()
            )),
            other => ApiError::unavailable(other),
        }
    }
}

// -- products ---------------------------------------------------------------------------------

/// A product as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProductView {
    product_key: String,
    name: String,
    node_type: &'static str,
    validation: &'static str,
    /// Gateways may register its devices with `thing/sub/register`.
    dynamic_register: bool,
    created_ms: i64,
    properties: usize,
    events: usize,
    services: usize,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> ProductView {
        ProductView {
            product_key: p.product_key.clone(),
            name: p.name.clone(),
            node_type: p.node_type.as_str(),
            validation: p.validation.as_str(),
            dynamic_register: p.dynamic_register,
            created_ms: p.created_ms,
            properties: p.model.properties.len(),
            events: p.model.events.len(),
            services: p.model.services.len(),
        }
    }
}

/// Lists products.
#[utoipa::path(get, path = "/api/v1/products", tag = "devices",
    responses((status = 200, description = "Every product", body = [ProductView])))]
pub(crate) async fn products(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let list: Vec<ProductView> = platform(&state)?
        .products()
        .iter()
        .map(Into::into)
        .collect();
    Ok(Json(list))
}

/// `POST /api/v1/products` and `PUT /api/v1/products/{productKey}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ProductBody {
    /// Required on POST; on PUT it must match the path when given.
    product_key: Option<String>,
    name: Option<String>,
    /// `direct` (default), `gateway` or `sub-device`.
    node_type: Option<String>,
    /// `strict` (default), `weak` or `none`.
    validation: Option<String>,
    /// Let gateways register devices of this product with `thing/sub/register` (default
    /// false).
    dynamic_register: Option<bool>,
    /// The thing model (TSL JSON).
    #[schema(value_type = Object)]
    tsl: Value,
}

fn product_from(body: ProductBody, key: Option<&str>) -> Result<Product, ApiError> {
    let product_key = match (key, body.product_key) {
        (Some(k), Some(b)) if k != b => {
            return Err(ApiError::invalid("productKey", "differs from the path"))
        }
        (Some(k), _) => k.to_string(),
        (None, Some(b)) => b,
        (None, None) => {
            return Err(ApiError::invalid("productKey", "required"));
        }
    };
    let model = ThingModel::from_value(&body.tsl).map_err(|e| ApiError::invalid("tsl", e))?;
    let node_type = match body.node_type.as_deref() {
        None => NodeType::Direct,
        Some(s) => NodeType::parse(s)
            .ok_or_else(|| ApiError::invalid("nodeType", "direct, gateway or sub-device"))?,
    };
    let validation = match body.validation.as_deref() {
        None => ValidationMode::Strict,
        Some(s) => ValidationMode::parse(s)
            .ok_or_else(|| ApiError::invalid("validation", "strict, weak or none"))?,
    };
    Ok(Product {
        name: body.name.unwrap_or_else(|| product_key.clone()),
        product_key,
        node_type,
        validation,
        model,
        dynamic_register: body.dynamic_register.unwrap_or(false),
        created_ms: now_ms(),
    })
}

/// Creates a product from a thing model.
#[utoipa::path(post, path = "/api/v1/products", tag = "devices",
    request_body(content = ProductBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = ProductView),
        (status = 400, description = "Invalid field or thing model (the message names the JSON path)", body = crate::error::ErrorBody),
        (status = 409, description = "Exists", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn create_product(
    State(state): State<ApiState>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let product = product_from(body(&bytes)?, None)?;
    let view = ProductView::from(&product);
    platform(&state)?.put_product(product, false).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Replaces a product's name, mode, thing model or `dynamicRegister` (kept when omitted).
#[utoipa::path(put, path = "/api/v1/products/{productKey}", tag = "devices",
    params(("productKey" = String, Path, description = "The product key")),
    request_body(content = ProductBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = ProductView),
        (status = 400, description = "Invalid", body = crate::error::ErrorBody),
        (status = 404, description = "No such product", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn put_product(
    State(state): State<ApiState>,
    Path(product_key): Path<String>,
    bytes: Bytes,
) -> Result<Json<ProductView>, ApiError> {
    let p = platform(&state)?;
    let Some(existing) = p.product(&product_key) else {
        return Err(ApiError::not_found(format!("product {product_key}")));
    };
    let body: ProductBody = body(&bytes)?;
    // A client that does not know the flag (an older console) must not switch it off.
    let keep_dynamic = body.dynamic_register.is_none();
    let mut product = product_from(body, Some(&product_key))?;
    product.created_ms = existing.created_ms;
    if keep_dynamic {
        product.dynamic_register = existing.dynamic_register;
    }
    let view = ProductView::from(&product);
    p.put_product(product, true).await?;
    Ok(Json(view))
}

/// One product with its thing model.
#[utoipa::path(get, path = "/api/v1/products/{productKey}", tag = "devices",
    params(("productKey" = String, Path, description = "The product key")),
    responses(
        (status = 200, description = "The product and its `tsl`", body = Object),
        (status = 404, description = "No such product", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn product(
    State(state): State<ApiState>,
    Path(product_key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = platform(&state)?
        .product(&product_key)
        .ok_or_else(|| ApiError::not_found(format!("product {product_key}")))?;
    let mut v = serde_json::to_value(ProductView::from(&p)).unwrap_or_default();
    v["tsl"] = p.model.to_json();
    Ok(Json(v))
}

/// Deletes a product without devices.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}", tag = "devices",
    params(("productKey" = String, Path, description = "The product key")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such product", body = crate::error::ErrorBody),
        (status = 409, description = "It still has devices", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn delete_product(
    State(state): State<ApiState>,
    Path(product_key): Path<String>,
) -> Result<StatusCode, ApiError> {
    platform(&state)?.delete_product(&product_key).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- devices ----------------------------------------------------------------------------------

/// A device as listed (no secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceView {
    product_key: String,
    device_name: String,
    enabled: bool,
    online: bool,
    tags: BTreeMap<String, String>,
    created_ms: i64,
    last_online_ms: Option<i64>,
    last_ip: Option<String>,
}

impl From<&DeviceStatus> for DeviceView {
    fn from(s: &DeviceStatus) -> DeviceView {
        let d = &s.device;
        DeviceView {
            product_key: d.product_key.clone(),
            device_name: d.device_name.clone(),
            enabled: d.enabled,
            online: s.online,
            tags: d.tags.clone(),
            created_ms: d.created_ms,
            last_online_ms: d.last_online_ms,
            last_ip: d.last_ip.clone(),
        }
    }
}

/// Filters of the device list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct DeviceFilter {
    /// Only this product's devices.
    product: Option<String>,
    /// Only online (`true`) or offline (`false`) devices.
    online: Option<bool>,
    /// Device names containing this text.
    q: Option<String>,
    /// Page, from 1.
    page: Option<usize>,
    /// Items per page (1–1000, default 50).
    per_page: Option<usize>,
}

/// Lists devices with their online state.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceFilter),
    responses((status = 200, description = "`{items, total, page, per_page}`", body = Object)))]
pub(crate) async fn devices(
    State(state): State<ApiState>,
    Query(f): Query<DeviceFilter>,
) -> Result<Json<Value>, ApiError> {
    let page = f.page.unwrap_or(1);
    let per_page = f.per_page.unwrap_or(50);
    if page == 0 {
        return Err(ApiError::invalid("page", "pages count from 1"));
    }
    if !(1..=1000).contains(&per_page) {
        return Err(ApiError::invalid("per_page", "must be between 1 and 1000"));
    }
    let all: Vec<DeviceView> = platform(&state)?
        .devices(f.product.as_deref())
        .iter()
        .filter(|d| f.online.is_none_or(|o| d.online == o))
        .filter(|d| {
            f.q.as_deref()
                .is_none_or(|q| d.device.device_name.contains(q))
        })
        .map(Into::into)
        .collect();
    let total = all.len();
    let items: Vec<DeviceView> = all
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    Ok(Json(
        json!({"items": items, "total": total, "page": page, "per_page": per_page}),
    ))
}

/// `POST /api/v1/products/{productKey}/devices` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewDevice {
    device_name: String,
}

/// Registers a device; the answer holds its secret (shown only here).
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices", tag = "devices",
    params(("productKey" = String, Path, description = "The product key")),
    request_body(content = NewDevice, content_type = "application/json"),
    responses(
        (status = 201, description = "`{productKey, deviceName, deviceSecret}`", body = Object),
        (status = 400, description = "Invalid name", body = crate::error::ErrorBody),
        (status = 404, description = "No such product", body = crate::error::ErrorBody),
        (status = 409, description = "Exists", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn create_device(
    State(state): State<ApiState>,
    Path(product_key): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewDevice = body(&bytes)?;
    let d = platform(&state)?
        .create_device(&product_key, &new.device_name)
        .await?;
    let answer = json!({
        "productKey": d.product_key,
        "deviceName": d.device_name,
        "deviceSecret": d.device_secret,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn device(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = platform(&state)?
        .device(&pk, &dn)
        .ok_or_else(|| ApiError::not_found(format!("device {dn}&{pk}")))?;
    Ok(Json(DeviceView::from(&d)))
}

/// `PATCH /api/v1/devices/{pk}/{dn}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevicePatch {
    /// Disable (disconnects and refuses it) or enable.
    enabled: Option<bool>,
    /// Replaces the tags.
    tags: Option<BTreeMap<String, String>>,
}

/// Enables or disables a device, or replaces its tags.
#[utoipa::path(patch, path = "/api/v1/devices/{productKey}/{deviceName}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body(content = DevicePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn patch_device(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<DeviceView>, ApiError> {
    let patch: DevicePatch = body(&bytes)?;
    let p = platform(&state)?;
    if let Some(enabled) = patch.enabled {
        p.set_device_enabled(&pk, &dn, enabled).await?;
    }
    if let Some(tags) = patch.tags {
        p.set_device_tags(&pk, &dn, tags).await?;
    }
    let d = p
        .device(&pk, &dn)
        .ok_or_else(|| ApiError::not_found(format!("device {dn}&{pk}")))?;
    Ok(Json(DeviceView::from(&d)))
}

/// Deletes a device and disconnects it.
#[utoipa::path(delete, path = "/api/v1/devices/{productKey}/{deviceName}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn delete_device(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    platform(&state)?.delete_device(&pk, &dn).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The device's shadow: reported values with times, desired values with versions, delta.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/shadow", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, description = "`{reported, desired, delta, version}`", body = Object),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn shadow(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = platform(&state)?.shadow(&pk, &dn)?;
    Ok(Json(json!({
        "reported": s.reported,
        "desired": s.desired,
        "delta": s.delta(),
        "version": s.version,
    })))
}

/// Sets properties: sent to an online device (waiting for its answer), or stored as desired
/// values for an offline one.
#[utoipa::path(post, path = "/api/v1/devices/{productKey}/{deviceName}/properties", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    request_body(content = Object, description = "`{identifier: value, …}`", content_type = "application/json"),
    responses(
        (status = 200, description = "The device answered: `{reply}`", body = Object),
        (status = 202, description = "Offline: stored as desired: `{desired: {identifier: version}}`", body = Object),
        (status = 400, description = "Not valid for the thing model", body = crate::error::ErrorBody),
        (status = 504, description = "The device did not answer in time", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn set_properties(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let values: Map<String, Value> = body(&bytes)?;
    if values.is_empty() {
        return Err(ApiError::invalid("body", "no properties to set"));
    }
    match platform(&state)?.set_properties(&pk, &dn, values).await? {
        SetOutcome::Answered(reply) => Ok(Json(json!({"reply": reply.to_json()})).into_response()),
        SetOutcome::Desired(versions) => {
            let desired: Map<String, Value> =
                versions.into_iter().map(|(k, v)| (k, json!(v))).collect();
            Ok((StatusCode::ACCEPTED, Json(json!({"desired": desired}))).into_response())
        }
    }
}

/// Calls a service: a sync one answers with the device's reply (504 when it does not answer
/// in time); an async one answers 202 with a call id.
#[utoipa::path(post, path = "/api/v1/devices/{productKey}/{deviceName}/services/{service}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("service" = String, Path)),
    request_body(content = Object, description = "The service's input arguments", content_type = "application/json"),
    responses(
        (status = 200, description = "Sync: `{reply}`", body = Object),
        (status = 202, description = "Async: `{callId}`", body = Object),
        (status = 400, description = "Arguments not valid for the service", body = crate::error::ErrorBody),
        (status = 404, description = "No such device or service", body = crate::error::ErrorBody),
        (status = 409, description = "The device is offline", body = crate::error::ErrorBody),
        (status = 504, description = "The device did not answer in time", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn call_service(
    State(state): State<ApiState>,
    Path((pk, dn, service)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let input: Map<String, Value> = if bytes.is_empty() {
        Map::new()
    } else {
        body(&bytes)?
    };
    match platform(&state)?
        .call_service(&pk, &dn, &service, input)
        .await?
    {
        ServiceCall::Answered(reply) => Ok(Json(json!({"reply": reply.to_json()})).into_response()),
        ServiceCall::Started(id) => {
            Ok((StatusCode::ACCEPTED, Json(json!({"callId": id}))).into_response())
        }
    }
}

/// Where an async call stands.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/calls/{callId}", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("callId" = String, Path)),
    responses(
        (status = 200, description = "`{status: pending}` or the logged call", body = Object),
        (status = 404, description = "Unknown call", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn call_state(
    State(state): State<ApiState>,
    Path((pk, dn, call_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        match platform(&state)?.call_state(&pk, &dn, &call_id)? {
            CallState::Pending => json!({"callId": call_id, "status": "pending"}),
            CallState::Done(c) => call_json(&c),
        },
    ))
}

fn call_json(c: &thingmq_things::store::ServiceCallRecord) -> Value {
    json!({
        "callId": c.call_id,
        "service": c.service,
        "input": c.input,
        "output": c.output,
        "status": c.status,
        "code": c.code,
        "startedMs": c.started_ms,
        "latencyMs": c.latency_ms,
    })
}

/// A time range, with a row limit and (for numeric history) a bucket width.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct Range {
    /// From (UTC ms, inclusive); default 24 hours ago.
    from: Option<i64>,
    /// To (UTC ms, exclusive); default now.
    to: Option<i64>,
    /// Most rows (default 1000, at most 10000).
    limit: Option<u32>,
    /// Downsample numeric values into buckets this wide (ms): avg/min/max per bucket.
    bucket_ms: Option<i64>,
    /// Events of this type only (`info`, `alert`, `error`).
    r#type: Option<String>,
}

impl Range {
    fn bounds(&self) -> Result<(i64, i64, u32), ApiError> {
        let to = self.to.unwrap_or_else(|| now_ms().saturating_add(1));
        let from = self.from.unwrap_or(to - 24 * 3600 * 1000);
        if from >= to {
            return Err(ApiError::invalid("from", "must be before `to`"));
        }
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be 1..={MAX_LIMIT}"),
            ));
        }
        Ok((from, to, limit))
    }
}

/// A property's history, raw or downsampled.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/properties/{identifier}/history", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("identifier" = String, Path), Range),
    responses(
        (status = 200, description = "`{points: [{time, value}]}` or with `bucket_ms` `{buckets: [{start, count, avg, min, max}]}`", body = Object),
        (status = 400, description = "Bad range", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn property_history(
    State(state): State<ApiState>,
    Path((pk, dn, id)): Path<(String, String, String)>,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, limit) = range.bounds()?;
    let p = platform(&state)?;
    if p.device(&pk, &dn).is_none() {
        return Err(ApiError::not_found(format!("device {dn}&{pk}")));
    }
    if let Some(bucket) = range.bucket_ms {
        if bucket < 1000 {
            return Err(ApiError::invalid("bucket_ms", "must be at least 1000"));
        }
        let buckets = p.property_buckets(&pk, &dn, &id, from, to, bucket).await?;
        let list: Vec<Value> = buckets
            .iter()
            .map(|b| json!({"start": b.start, "count": b.count, "avg": b.avg, "min": b.min, "max": b.max}))
            .collect();
        return Ok(Json(json!({"buckets": list})));
    }
    let points = p.property_history(&pk, &dn, &id, from, to, limit).await?;
    let list: Vec<Value> = points
        .iter()
        .map(|pt| json!({"time": pt.time, "value": pt.value}))
        .collect();
    Ok(Json(json!({"points": list})))
}

/// Events of a device.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/events", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), Range),
    responses((status = 200, description = "`{events: [{identifier, type, time, output}]}`", body = Object)))]
pub(crate) async fn events(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, limit) = range.bounds()?;
    if let Some(t) = &range.r#type {
        if !["info", "alert", "error"].contains(&t.as_str()) {
            return Err(ApiError::invalid("type", "info, alert or error"));
        }
    }
    let list = platform(&state)?
        .events(&pk, &dn, range.r#type.as_deref(), from, to, limit)
        .await?;
    let events: Vec<Value> = list
        .iter()
        .map(|e| json!({"identifier": e.identifier, "type": e.event_type, "time": e.time, "output": e.output}))
        .collect();
    Ok(Json(json!({"events": events})))
}

/// Online/offline changes and service calls of a device.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/log", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), Range),
    responses((status = 200, description = "`{status: [{time, online, reason, ip}], calls: [...]}`", body = Object)))]
pub(crate) async fn log(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, _) = range.bounds()?;
    let p = platform(&state)?;
    let status: Vec<Value> = p
        .status_changes(&pk, &dn, from, to)
        .await?
        .iter()
        .map(|s| json!({"time": s.time, "online": s.online, "reason": s.reason, "ip": s.ip}))
        .collect();
    let calls: Vec<Value> = p
        .service_calls(&pk, &dn, from, to)
        .await?
        .iter()
        .map(call_json)
        .collect();
    Ok(Json(json!({"status": status, "calls": calls})))
}

/// Reveals a device's secret (admin only: it is a POST), e.g. to provision the device.
#[utoipa::path(post, path = "/api/v1/devices/{productKey}/{deviceName}/credentials", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, description = "`{productKey, deviceName, deviceSecret}`", body = Object),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn credentials(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let d = platform(&state)?
        .device(&pk, &dn)
        .ok_or_else(|| ApiError::not_found(format!("device {dn}&{pk}")))?;
    Ok(Json(json!({
        "productKey": d.device.product_key,
        "deviceName": d.device.device_name,
        "deviceSecret": d.device.device_secret,
    })))
}

/// Gives the device a new secret (the old one stops working and the device is
/// disconnected); the answer is the only place the new secret is shown.
#[utoipa::path(post, path = "/api/v1/devices/{productKey}/{deviceName}/secret", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, description = "`{productKey, deviceName, deviceSecret}` with the new secret", body = Object),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn reset_secret(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let secret = platform(&state)?.reset_device_secret(&pk, &dn).await?;
    Ok(Json(json!({
        "productKey": pk,
        "deviceName": dn,
        "deviceSecret": secret,
    })))
}

/// `?identifiers=a,b` (all properties when absent).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct Identifiers {
    /// Comma-separated property identifiers.
    identifiers: Option<String>,
}

/// Asks the online device for property values now (`thing/service/property/get`); the shadow
/// has the last reported ones without asking.
#[utoipa::path(get, path = "/api/v1/devices/{productKey}/{deviceName}/properties", tag = "devices",
    params(("productKey" = String, Path), ("deviceName" = String, Path), Identifiers),
    responses(
        (status = 200, description = "The device answered: `{reply}` (its `data` holds the values)", body = Object),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
        (status = 409, description = "The device is offline", body = crate::error::ErrorBody),
        (status = 504, description = "The device did not answer in time", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn get_properties(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    Query(q): Query<Identifiers>,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<&str> = q
        .identifiers
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let reply = platform(&state)?.get_properties(&pk, &dn, &ids).await?;
    Ok(Json(json!({"reply": reply.to_json()})))
}
