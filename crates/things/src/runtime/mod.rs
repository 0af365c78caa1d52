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
//!
//! Where things live: this file holds the handle, its settings, errors and counters, and
//! `start`. `state.rs` is what the handle and the tasks share (the state behind one lock);
//! `registry.rs`, `commands.rs` and `history.rs` are the application API by concern;
//! `task.rs` runs the MQTT link and handles device messages; `topo.rs` is everything about
//! gateways and their sub-devices; `reload.rs` re-reads the registry; `hook.rs` lets devices
//! connect.

mod commands;
mod history;
mod hook;
mod registry;
mod reload;
mod state;
mod task;
mod topo;

pub use commands::{CallState, ServiceCall, SetOutcome};
pub use hook::DeviceAccessHook;
pub use registry::DeviceStatus;
pub use reload::RegistryReload;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thingmq_server::admin::Admin;
use thingmq_server::LocalLinker;

use crate::device_auth::DeviceAuth;
use crate::now_ms;
use crate::store::{HistoryWriter, Store, StoreError, WriterConfig};
use crate::throttle::Throttle;
use state::{key, lock, Inner, State};

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

    /// Stops the platform's MQTT link and writes what is pending.
    pub async fn shutdown(&self) {
        let _ = self.inner.client.disconnect().await;
        if let Err(e) = self.flush().await {
            tracing::warn!("device platform: final save failed: {e}");
        }
    }
}
