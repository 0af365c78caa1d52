//! The device layer running against a broker: [`Platform`].
//!
//! The platform is an MQTT client of the broker over an in-process link (no socket): it
//! subscribes to every device's uplink topics (`/sys/+/+/thing/#`, `/sys/+/+/rrpc/response/+`)
//! and to the broker's client events (`$SYS/brokers/clients/+`), runs each message through the
//! pure [`crate::engine`], and performs the effects — replies to the device, history rows to the
//! batched writer, shadow changes (saved every second), answers to calls in flight. Devices
//! authenticate and are confined to their own topics through [`DeviceAccessHook`], which the
//! server asks ahead of its password file and ACL.
//!
//! Applications use the [`Platform`] handle: registry (products, devices), shadow, property
//! set/get, service calls (sync: wait for the reply or time out; async: a call id whose result
//! can be looked up), and history queries.

mod hook;
mod reload;
mod task;
mod topo;

pub use hook::DeviceAccessHook;
pub use reload::RegistryReload;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use thingmq_client::{Client, QoS};
use thingmq_server::admin::Admin;
use thingmq_server::LocalLinker;
use tokio::sync::oneshot;

use crate::alink::Reply;
use crate::device_auth::{CredentialSnapshot, DeviceAuth, DeviceCredential};
use crate::engine::{downlink, PendingCalls, Publish};
use crate::now_ms;
use crate::registry::{valid_name, Device, Product};
use crate::shadow::Shadow;
use crate::store::{
    Bucket, HistoryWriter, PropertyPoint, Record, ServiceCallRecord, StatusChange, Store,
    StoreError, StoredEvent, WriterConfig,
};
use crate::throttle::Throttle;
use crate::tsl::CallType;
use crate::validate::{self, ValidationMode};

/// Results of async calls kept for lookup; the oldest are forgotten beyond this.
const KEPT_RESULTS: usize = 10_000;

/// Platform settings.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// How long a sync call (property set/get, sync service) waits for the device.
    pub call_timeout: Duration,
    /// How long an async service call may take before it is logged as timed out.
    pub async_call_timeout: Duration,
    /// The history writer's queue and batching.
    pub writer: WriterConfig,
    /// Delete history older than this many days (checked hourly); `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Messages per second one device may send (beyond: Alink code 429, message dropped);
    /// 0 turns the limit off. Answers to the platform's requests are never limited.
    pub max_uplinks_per_sec: u32,
    /// Messages a device may send at once after a quiet spell.
    pub uplink_burst: u32,
    /// How often changed shadows are written to the database (they live in memory between
    /// saves; a crash loses at most this much of the latest state, never history).
    pub shadow_save_interval: Duration,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            // Alibaba's limit for synchronous calls.
            call_timeout: Duration::from_secs(8),
            async_call_timeout: Duration::from_secs(60),
            writer: WriterConfig::default(),
            retention_days: None,
            // Alibaba's per-device quota for uplink messages.
            max_uplinks_per_sec: 30,
            uplink_burst: 60,
            shadow_save_interval: Duration::from_secs(1),
        }
    }
}

/// Why a platform request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// No such product, device, service or call.
    #[error("{0} not found")]
    NotFound(String),
    /// The input breaks a rule (names, the thing model); the message names it.
    #[error("invalid: {0}")]
    Invalid(String),
    /// It exists already, or something still depends on it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The device is not connected.
    #[error("device {0} is offline")]
    Offline(String),
    /// The device did not answer in time.
    #[error("the device did not answer within {0:?}")]
    Timeout(Duration),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The platform is shutting down.
    #[error("the device platform is stopped")]
    Stopped,
}

/// A device and whether it is connected now.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// The device (its secret included: callers decide what to show).
    pub device: Device,
    /// Connected now.
    pub online: bool,
}

/// What a property set did.
#[derive(Debug, Clone, PartialEq)]
pub enum SetOutcome {
    /// The device was online and answered.
    Answered(Reply),
    /// The device was offline: the values are desired properties, sent when it connects.
    /// Holds each property's new desired version.
    Desired(Vec<(String, u64)>),
}

/// What an async service call has come to.
#[derive(Debug, Clone, PartialEq)]
pub enum CallState {
    /// Sent, no answer yet.
    Pending,
    /// Answered or timed out, as logged.
    Done(ServiceCallRecord),
}

type Key = (String, String);

fn key(pk: &str, dn: &str) -> Key {
    (pk.to_string(), dn.to_string())
}

/// A connected device as the broker announced it.
#[derive(Debug, Clone)]
struct Online {
    /// The MQTT client id of the connection (the gateway's for a sub-device).
    client_id: String,
    /// The gateway a sub-device is online through (`combine/login`); `None` for a device on
    /// a connection of its own.
    via: Option<Key>,
}

/// Counters.
#[derive(Debug, Default)]
pub struct PlatformStats {
    /// Device messages handled.
    pub uplinks: AtomicU64,
    /// Device messages that could not be handled (unknown device, bad topic).
    pub rejected: AtomicU64,
    /// Device messages dropped because the platform fell behind.
    pub dropped: AtomicU64,
    /// Device messages refused with 429 because their device sent too fast.
    pub throttled: AtomicU64,
}

/// Everything behind one lock; held only for in-memory work, never across an await.
#[derive(Debug, Default)]
struct State {
    products: HashMap<String, Product>,
    devices: HashMap<Key, Device>,
    shadows: HashMap<Key, Shadow>,
    dirty: HashSet<Key>,
    online: HashMap<Key, Online>,
    /// Connected devices whose desired values go out with their first message.
    awaiting_first_uplink: HashSet<Key>,
    pending: PendingCalls,
    waiters: HashMap<(String, String, String), oneshot::Sender<Option<Reply>>>,
    results: HashMap<String, ServiceCallRecord>,
    result_order: VecDeque<String>,
    throttle: Throttle<Key>,
}

impl State {
    fn credentials(&self) -> CredentialSnapshot {
        self.devices
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    DeviceCredential {
                        secret: d.device_secret.clone(),
                        enabled: d.enabled,
                    },
                )
            })
            .collect()
    }

    fn keep_result(&mut self, record: ServiceCallRecord) {
        self.result_order.push_back(record.call_id.clone());
        self.results.insert(record.call_id.clone(), record);
        while self.result_order.len() > KEPT_RESULTS {
            if let Some(old) = self.result_order.pop_front() {
                self.results.remove(&old);
            }
        }
    }
}

struct Inner {
    store: Store,
    /// Held by every registry change (API, gateway topology, registration) across its
    /// database write and its in-memory update, and by a reload across its read and apply,
    /// so a reload never puts back what a change made meanwhile took away (or the reverse).
    registry: tokio::sync::Mutex<()>,
    writer: HistoryWriter,
    auth: Arc<DeviceAuth>,
    admin: Admin,
    client: Client,
    state: Mutex<State>,
    next_id: AtomicU64,
    config: PlatformConfig,
    stats: PlatformStats,
}

impl Inner {
    /// A new Alink message id for a request to a device. Ids are numeric strings; they start
    /// from the clock so they stay unique across restarts within a day, as the protocol asks.
    fn next_call_id(&self, now_ms: i64) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}",
            now_ms.saturating_mul(1000).saturating_add(n as i64 % 1000)
        )
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// The device platform: a cloneable handle.
#[derive(Debug, Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

impl Platform {
    /// Loads the registry and shadows from `store`, connects to the broker through `linker`,
    /// and starts handling device traffic. Register [`Platform::access_hook`] with the server
    /// so devices can connect.
    pub async fn start(
        store: Store,
        linker: LocalLinker,
        admin: Admin,
        config: PlatformConfig,
    ) -> Result<Platform, PlatformError> {
        let mut state = State {
            throttle: Throttle::new(config.max_uplinks_per_sec, config.uplink_burst),
            ..State::default()
        };
        for product in store.products().await? {
            for device in store.devices(&product.product_key).await? {
                let k = key(&device.product_key, &device.device_name);
                let shadow = store.shadow(&k.0, &k.1).await?;
                state.shadows.insert(k.clone(), shadow);
                state.devices.insert(k, device);
            }
            state.products.insert(product.product_key.clone(), product);
        }
        tracing::info!(
            backend = ?store.backend(),
            products = state.products.len(),
            devices = state.devices.len(),
            "device platform loaded"
        );
        let auth = Arc::new(DeviceAuth::new(state.credentials()));
        let (writer, _writer_task) = HistoryWriter::spawn(store.clone(), config.writer.clone());
        let (client, events) = task::connect(linker);
        let inner = Arc::new(Inner {
            store,
            registry: tokio::sync::Mutex::new(()),
            writer,
            auth,
            admin,
            client,
            state: Mutex::new(state),
            next_id: AtomicU64::new(1),
            config,
            stats: PlatformStats::default(),
        });
        task::spawn(Arc::downgrade(&inner), events);
        Ok(Platform { inner })
    }

    /// The hook that lets devices connect with their credentials and keeps them to their own
    /// topics (`ServerHandle::add_access_hook`).
    pub fn access_hook(&self) -> DeviceAccessHook {
        DeviceAccessHook::new(self.inner.auth.clone())
    }

    /// Counters.
    pub fn stats(&self) -> &PlatformStats {
        &self.inner.stats
    }

    /// The history writer's counters (rows written, dropped, failed; last batch time).
    pub fn writer_stats(&self) -> &crate::store::WriterStats {
        self.inner.writer.stats()
    }

    /// History records waiting for the writer.
    pub fn writer_queued(&self) -> usize {
        self.inner.writer.queued()
    }

    /// Devices connected now.
    pub fn online_count(&self) -> usize {
        self.state().online.len()
    }

    /// Writes what the history writer holds and the changed shadows (for tests and shutdown).
    pub async fn flush(&self) -> Result<(), PlatformError> {
        self.inner.writer.flush().await;
        task::save_shadows(&self.inner).await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn refresh_credentials(&self) {
        let snapshot = self.state().credentials();
        self.inner.auth.replace(snapshot);
    }

    fn next_call_id(&self) -> String {
        self.inner.next_call_id(now_ms())
    }

    // -- registry ---------------------------------------------------------------------------

    /// Every product, by product key.
    pub fn products(&self) -> Vec<Product> {
        let mut list: Vec<Product> = self.state().products.values().cloned().collect();
        list.sort_by(|a, b| a.product_key.cmp(&b.product_key));
        list
    }

    /// One product.
    pub fn product(&self, product_key: &str) -> Option<Product> {
        self.state().products.get(product_key).cloned()
    }

    /// Creates a product, or replaces one (e.g. a new thing model) when `replace` is set.
    pub async fn put_product(&self, product: Product, replace: bool) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        if !valid_name(&product.product_key) {
            return Err(PlatformError::Invalid(format!(
                "productKey {:?}: 1-64 letters, digits or -_.@:",
                product.product_key
            )));
        }
        if !replace && self.state().products.contains_key(&product.product_key) {
            return Err(PlatformError::Conflict(format!(
                "product {} exists",
                product.product_key
            )));
        }
        self.inner.store.put_product(&product).await?;
        self.state()
            .products
            .insert(product.product_key.clone(), product);
        Ok(())
    }

    /// Deletes a product that has no devices.
    pub async fn delete_product(&self, product_key: &str) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        {
            let state = self.state();
            if !state.products.contains_key(product_key) {
                return Err(PlatformError::NotFound(format!("product {product_key}")));
            }
            if state.devices.keys().any(|(pk, _)| pk == product_key) {
                return Err(PlatformError::Conflict(format!(
                    "product {product_key} still has devices"
                )));
            }
        }
        self.inner.store.delete_product(product_key).await?;
        self.state().products.remove(product_key);
        Ok(())
    }

    /// Devices, of one product or all, with their online state.
    pub fn devices(&self, product_key: Option<&str>) -> Vec<DeviceStatus> {
        let state = self.state();
        let mut list: Vec<DeviceStatus> = state
            .devices
            .iter()
            .filter(|((pk, _), _)| product_key.is_none_or(|p| p == pk))
            .map(|(k, d)| DeviceStatus {
                device: d.clone(),
                online: state.online.contains_key(k),
            })
            .collect();
        list.sort_by(|a, b| {
            (&a.device.product_key, &a.device.device_name)
                .cmp(&(&b.device.product_key, &b.device.device_name))
        });
        list
    }

    /// One device.
    pub fn device(&self, product_key: &str, device_name: &str) -> Option<DeviceStatus> {
        let state = self.state();
        let k = key(product_key, device_name);
        state.devices.get(&k).map(|d| DeviceStatus {
            device: d.clone(),
            online: state.online.contains_key(&k),
        })
    }

    /// Registers a device with a new random secret.
    pub async fn create_device(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Device, PlatformError> {
        let _registry = self.inner.registry.lock().await;
        if !valid_name(device_name) {
            return Err(PlatformError::Invalid(format!(
                "deviceName {device_name:?}: 1-64 letters, digits or -_.@:"
            )));
        }
        {
            let state = self.state();
            if !state.products.contains_key(product_key) {
                return Err(PlatformError::NotFound(format!("product {product_key}")));
            }
            if state.devices.contains_key(&key(product_key, device_name)) {
                return Err(PlatformError::Conflict(format!(
                    "device {device_name}&{product_key} exists"
                )));
            }
        }
        let device = Device::new(product_key, device_name, now_ms());
        self.inner.store.insert_device(&device).await?;
        {
            let mut state = self.state();
            let k = key(product_key, device_name);
            state.shadows.insert(k.clone(), Shadow::default());
            state.devices.insert(k, device.clone());
        }
        self.refresh_credentials();
        Ok(device)
    }

    /// Enables or disables a device; a disabled device is disconnected and refused. A
    /// sub-device's gateway hears of the change on `thing/topo/change` (status 8 disabled,
    /// 2 enabled).
    pub async fn set_device_enabled(
        &self,
        product_key: &str,
        device_name: &str,
        enabled: bool,
    ) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let k = key(product_key, device_name);
        let mut device = self.state().devices.get(&k).cloned().ok_or_else(|| {
            PlatformError::NotFound(format!("device {device_name}&{product_key}"))
        })?;
        let changed = device.enabled != enabled;
        device.enabled = enabled;
        self.inner.store.put_device(&device).await?;
        let gateway = device.gateway.clone();
        self.state().devices.insert(k.clone(), device);
        self.refresh_credentials();
        if let (Some(gw), true) = (gateway, changed) {
            let status = if enabled {
                topo::change::ENABLED
            } else {
                topo::change::DISABLED
            };
            topo::notify_topo_change(&self.inner, &gw, status, std::slice::from_ref(&k));
        }
        if !enabled {
            self.kick(&k).await;
        }
        Ok(())
    }

    /// Gives a device a new random secret and returns it. The old one stops working at
    /// once: the device is disconnected and must connect with the new one.
    pub async fn reset_device_secret(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let k = key(product_key, device_name);
        let mut device = self.state().devices.get(&k).cloned().ok_or_else(|| {
            PlatformError::NotFound(format!("device {device_name}&{product_key}"))
        })?;
        device.device_secret = crate::registry::generate_secret();
        self.inner.store.put_device(&device).await?;
        let secret = device.device_secret.clone();
        self.state().devices.insert(k.clone(), device);
        self.refresh_credentials();
        self.kick(&k).await;
        Ok(secret)
    }

    /// Replaces a device's tags.
    pub async fn set_device_tags(
        &self,
        product_key: &str,
        device_name: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let k = key(product_key, device_name);
        let mut device = self.state().devices.get(&k).cloned().ok_or_else(|| {
            PlatformError::NotFound(format!("device {device_name}&{product_key}"))
        })?;
        device.tags = tags;
        self.inner.store.put_device(&device).await?;
        self.state().devices.insert(k, device);
        Ok(())
    }

    /// Attaches a sub-device to the gateway allowed to report for it in `pack/post` (`None`
    /// detaches it). The gateways concerned hear of it on `thing/topo/change`: the old one
    /// with status 1 (deleted), the new one with status 0 (created).
    pub async fn set_device_gateway(
        &self,
        product_key: &str,
        device_name: &str,
        gateway: Option<(String, String)>,
    ) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let k = key(product_key, device_name);
        if let Some(g) = &gateway {
            if !self.state().devices.contains_key(g) {
                return Err(PlatformError::NotFound(format!("gateway {}&{}", g.1, g.0)));
            }
        }
        let mut device = self.state().devices.get(&k).cloned().ok_or_else(|| {
            PlatformError::NotFound(format!("device {device_name}&{product_key}"))
        })?;
        let old = std::mem::replace(&mut device.gateway, gateway);
        self.inner.store.put_device(&device).await?;
        let mut state = self.state();
        // A sub-device moved away from its gateway is no longer online through it.
        let changed = old != device.gateway;
        if let Some(old) = old.filter(|o| device.gateway.as_ref() != Some(o)) {
            topo::end_session(&self.inner, &mut state, &old, &k, "topo_deleted", now_ms());
            topo::notify_topo_change(
                &self.inner,
                &old,
                topo::change::DELETED,
                std::slice::from_ref(&k),
            );
        }
        if let (Some(new), true) = (device.gateway.clone(), changed) {
            topo::notify_topo_change(
                &self.inner,
                &new,
                topo::change::CREATED,
                std::slice::from_ref(&k),
            );
        }
        state.devices.insert(k, device);
        Ok(())
    }

    /// Deletes a device (its history stays until retention removes it) and disconnects it;
    /// a sub-device's gateway hears of it on `thing/topo/change` (status 1).
    pub async fn delete_device(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<(), PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let k = key(product_key, device_name);
        let Some(gateway) = self.state().devices.get(&k).map(|d| d.gateway.clone()) else {
            return Err(PlatformError::NotFound(format!(
                "device {device_name}&{product_key}"
            )));
        };
        self.inner
            .store
            .delete_device(product_key, device_name)
            .await?;
        {
            let mut state = self.state();
            state.devices.remove(&k);
            state.shadows.remove(&k);
            state.dirty.remove(&k);
        }
        self.refresh_credentials();
        if let Some(gw) = gateway {
            topo::notify_topo_change(
                &self.inner,
                &gw,
                topo::change::DELETED,
                std::slice::from_ref(&k),
            );
        }
        self.kick(&k).await;
        Ok(())
    }

    async fn kick(&self, k: &Key) {
        {
            // A sub-device online through its gateway: end its session, not the gateway's
            // connection.
            let mut state = self.state();
            if let Some(gw) = state.online.get(k).and_then(|o| o.via.clone()) {
                topo::end_session(&self.inner, &mut state, &gw, k, "kicked", now_ms());
                return;
            }
        }
        let client_id = self.state().online.get(k).map(|o| o.client_id.clone());
        if let Some(client_id) = client_id {
            if let Err(e) = self.inner.admin.kick(&client_id).await {
                tracing::warn!(%client_id, "could not disconnect the device: {e}");
            }
        }
    }

    // -- state and commands -----------------------------------------------------------------

    /// A device's shadow: reported values, desired values, version.
    pub fn shadow(&self, product_key: &str, device_name: &str) -> Result<Shadow, PlatformError> {
        self.state()
            .shadows
            .get(&key(product_key, device_name))
            .cloned()
            .ok_or_else(|| PlatformError::NotFound(format!("device {device_name}&{product_key}")))
    }

    fn product_of(&self, product_key: &str, device_name: &str) -> Result<Product, PlatformError> {
        let state = self.state();
        if !state.devices.contains_key(&key(product_key, device_name)) {
            return Err(PlatformError::NotFound(format!(
                "device {device_name}&{product_key}"
            )));
        }
        state
            .products
            .get(product_key)
            .cloned()
            .ok_or_else(|| PlatformError::NotFound(format!("product {product_key}")))
    }

    /// Sets properties. Online, the device gets `thing/service/property/set` and the answer
    /// is awaited (up to the call timeout); offline, the values become desired properties,
    /// sent when it next connects. Values are checked against the thing model (read-only
    /// properties refused) unless the product's validation mode is `none`.
    pub async fn set_properties(
        &self,
        product_key: &str,
        device_name: &str,
        values: Map<String, Value>,
    ) -> Result<SetOutcome, PlatformError> {
        let product = self.product_of(product_key, device_name)?;
        validate::check_property_set(&product.model, commands_mode(&product), &values)
            .map_err(|v| PlatformError::Invalid(v.to_string()))?;
        let k = key(product_key, device_name);
        let online = self.state().online.contains_key(&k);
        if !online {
            let now = now_ms();
            let (versions, shadow) = {
                let mut state = self.state();
                let shadow = state.shadows.entry(k.clone()).or_default();
                let mut versions = Vec::new();
                for (id, value) in values {
                    let version = shadow
                        .set_desired(&id, value, None, now)
                        .map_err(|e| PlatformError::Conflict(e.to_string()))?;
                    versions.push((id, version));
                }
                let shadow = shadow.clone();
                // Also dirty: a periodic save that copied the shadow before this change may
                // land after the write below; the next one writes this version again.
                state.dirty.insert(k);
                (versions, shadow)
            };
            // The caller is told the values are kept for the device: save them now, not
            // with the next periodic shadow save.
            self.inner
                .store
                .put_shadow(product_key, device_name, &shadow)
                .await?;
            return Ok(SetOutcome::Desired(versions));
        }
        let id = self.next_call_id();
        let publish = downlink::property_set(product_key, device_name, &id, values.clone());
        let reply = self
            .call(
                &k,
                &id,
                "set",
                CallType::Sync,
                Value::Object(values),
                publish,
            )
            .await?;
        Ok(SetOutcome::Answered(reply))
    }

    /// Asks an online device for property values (`thing/service/property/get`).
    pub async fn get_properties(
        &self,
        product_key: &str,
        device_name: &str,
        identifiers: &[&str],
    ) -> Result<Reply, PlatformError> {
        self.product_of(product_key, device_name)?;
        let k = key(product_key, device_name);
        if !self.state().online.contains_key(&k) {
            return Err(PlatformError::Offline(format!(
                "{device_name}&{product_key}"
            )));
        }
        let id = self.next_call_id();
        let publish = downlink::property_get(product_key, device_name, &id, identifiers);
        let input = Value::from(identifiers.to_vec());
        self.call(&k, &id, "get", CallType::Sync, input, publish)
            .await
    }

    /// Calls a service. A `sync` service goes over RRPC and the answer is awaited (up to the
    /// call timeout); an `async` one returns its call id at once — see
    /// [`Platform::call_state`].
    pub async fn call_service(
        &self,
        product_key: &str,
        device_name: &str,
        service: &str,
        input: Map<String, Value>,
    ) -> Result<ServiceCall, PlatformError> {
        let product = self.product_of(product_key, device_name)?;
        let call_type = match product.model.service(service) {
            Some(s) => s.call_type,
            None if product.validation == ValidationMode::None => CallType::Async,
            None => return Err(PlatformError::NotFound(format!("service {service}"))),
        };
        validate::check_service(
            &product.model,
            commands_mode(&product),
            service,
            &input,
            false,
        )
        .map_err(|v| PlatformError::Invalid(v.to_string()))?;
        let k = key(product_key, device_name);
        if !self.state().online.contains_key(&k) {
            return Err(PlatformError::Offline(format!(
                "{device_name}&{product_key}"
            )));
        }
        let id = self.next_call_id();
        match call_type {
            CallType::Sync => {
                let publish =
                    downlink::rrpc_call(product_key, device_name, &id, service, input.clone());
                let reply = self
                    .call(
                        &k,
                        &id,
                        service,
                        CallType::Sync,
                        Value::Object(input),
                        publish,
                    )
                    .await?;
                Ok(ServiceCall::Answered(reply))
            }
            CallType::Async => {
                let publish =
                    downlink::service_call(product_key, device_name, &id, service, input.clone());
                {
                    let mut state = self.state();
                    state.pending.start(
                        product_key,
                        device_name,
                        &id,
                        service,
                        CallType::Async,
                        Value::Object(input),
                        now_ms(),
                        duration_ms(self.inner.config.async_call_timeout),
                    );
                }
                self.send(publish).await?;
                Ok(ServiceCall::Started(id))
            }
        }
    }

    /// Where an async call stands. Results are kept for the last 10,000 calls.
    pub fn call_state(
        &self,
        product_key: &str,
        device_name: &str,
        call_id: &str,
    ) -> Result<CallState, PlatformError> {
        let state = self.state();
        if let Some(r) = state.results.get(call_id) {
            return Ok(CallState::Done(r.clone()));
        }
        if state
            .pending
            .is_sync(product_key, device_name, call_id)
            .is_some()
        {
            return Ok(CallState::Pending);
        }
        Err(PlatformError::NotFound(format!("call {call_id}")))
    }

    /// Sends a request, tracks it, and waits for the device's answer.
    async fn call(
        &self,
        k: &Key,
        id: &str,
        service: &str,
        call_type: CallType,
        input: Value,
        publish: Publish,
    ) -> Result<Reply, PlatformError> {
        let timeout = self.inner.config.call_timeout;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.pending.start(
                &k.0,
                &k.1,
                id,
                service,
                call_type,
                input,
                now_ms(),
                duration_ms(timeout),
            );
            state
                .waiters
                .insert((k.0.clone(), k.1.clone(), id.to_string()), tx);
        }
        self.send(publish).await?;
        // The task answers or times the call out; the extra second only covers its timer.
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Ok(None)) | Err(_) => Err(PlatformError::Timeout(timeout)),
            Ok(Err(_)) => Err(PlatformError::Stopped),
        }
    }

    async fn send(&self, publish: Publish) -> Result<(), PlatformError> {
        self.inner
            .client
            .publish(publish.topic, QoS::AtMostOnce, false, publish.payload)
            .await
            .map(|_| ())
            .map_err(|_| PlatformError::Stopped)
    }

    // -- history ----------------------------------------------------------------------------

    /// Values of one property in `[from_ms, to_ms)`, oldest first, at most `limit`.
    pub async fn property_history(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<PropertyPoint>, PlatformError> {
        Ok(self
            .inner
            .store
            .property_history(
                product_key,
                device_name,
                identifier,
                from_ms,
                to_ms,
                i64::from(limit),
            )
            .await?)
    }

    /// Numeric values of one property downsampled into buckets of `bucket_ms`.
    pub async fn property_buckets(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>, PlatformError> {
        Ok(self
            .inner
            .store
            .property_buckets(
                product_key,
                device_name,
                identifier,
                from_ms,
                to_ms,
                bucket_ms,
            )
            .await?)
    }

    /// Events in `[from_ms, to_ms)`, of one type (`info`/`alert`/`error`) or all.
    pub async fn events(
        &self,
        product_key: &str,
        device_name: &str,
        event_type: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, PlatformError> {
        Ok(self
            .inner
            .store
            .events(
                product_key,
                device_name,
                event_type,
                from_ms,
                to_ms,
                i64::from(limit),
            )
            .await?)
    }

    /// Online/offline changes in `[from_ms, to_ms)`.
    pub async fn status_changes(
        &self,
        product_key: &str,
        device_name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatusChange>, PlatformError> {
        Ok(self
            .inner
            .store
            .status_changes(product_key, device_name, from_ms, to_ms)
            .await?)
    }

    /// Service calls started in `[from_ms, to_ms)`.
    pub async fn service_calls(
        &self,
        product_key: &str,
        device_name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ServiceCallRecord>, PlatformError> {
        Ok(self
            .inner
            .store
            .service_calls(product_key, device_name, from_ms, to_ms)
            .await?)
    }

    /// Stops the platform's MQTT link and writes what is pending.
    pub async fn shutdown(&self) {
        let _ = self.inner.client.disconnect().await;
        if let Err(e) = self.flush().await {
            tracing::warn!("device platform: final save failed: {e}");
        }
    }
}

/// The result of [`Platform::call_service`].
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceCall {
    /// A sync service: the device's answer.
    Answered(Reply),
    /// An async service: the call id to look up with [`Platform::call_state`].
    Started(String),
}

/// How the platform checks its own commands: strictly, whatever the devices' mode, unless the
/// product turns validation off.
fn commands_mode(product: &Product) -> ValidationMode {
    match product.validation {
        ValidationMode::None => ValidationMode::None,
        _ => ValidationMode::Strict,
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A poisoned lock means a panic while holding it; the data is plain maps, still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs a record the writer could not take (its queue is full).
fn submit(writer: &HistoryWriter, record: Record) {
    if !writer.submit(record) {
        tracing::debug!("history writer queue full: record dropped");
    }
}
