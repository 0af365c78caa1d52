//! What the [`Platform`](super::Platform) handle and the platform's tasks share: [`Inner`],
//! and the in-memory [`State`] behind its one lock. It lives apart from the handle because
//! every other runtime module (API methods, the message handler, gateways, reload) works on
//! it, and none of them should need to look inside `mod.rs` to learn its rules.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thingmq_client::Client;
use thingmq_server::admin::Admin;
use tokio::sync::oneshot;

use super::{PlatformConfig, PlatformStats};
use crate::alink::Reply;
use crate::device_auth::{CredentialSnapshot, DeviceAuth, DeviceCredential};
use crate::engine::PendingCalls;
use crate::registry::{Device, Product};
use crate::shadow::Shadow;
use crate::store::{HistoryWriter, Record, ServiceCallRecord, Store};
use crate::throttle::Throttle;

/// Results of async calls kept for lookup; the oldest are forgotten beyond this.
const KEPT_RESULTS: usize = 10_000;

pub(super) type Key = (String, String);

pub(super) fn key(pk: &str, dn: &str) -> Key {
    (pk.to_string(), dn.to_string())
}

/// A connected device as the broker announced it.
#[derive(Debug, Clone)]
pub(super) struct Online {
    /// The MQTT client id of the connection (the gateway's for a sub-device).
    pub(super) client_id: String,
    /// The gateway a sub-device is online through (`combine/login`); `None` for a device on
    /// a connection of its own.
    pub(super) via: Option<Key>,
}

/// Everything behind one lock; held only for in-memory work, never across an await.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) products: HashMap<String, Product>,
    pub(super) devices: HashMap<Key, Device>,
    pub(super) shadows: HashMap<Key, Shadow>,
    pub(super) dirty: HashSet<Key>,
    pub(super) online: HashMap<Key, Online>,
    /// Connected devices whose desired values go out with their first message.
    pub(super) awaiting_first_uplink: HashSet<Key>,
    pub(super) pending: PendingCalls,
    pub(super) waiters: HashMap<(String, String, String), oneshot::Sender<Option<Reply>>>,
    pub(super) results: HashMap<String, ServiceCallRecord>,
    pub(super) result_order: VecDeque<String>,
    pub(super) throttle: Throttle<Key>,
}

impl State {
    pub(super) fn credentials(&self) -> CredentialSnapshot {
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

    pub(super) fn keep_result(&mut self, record: ServiceCallRecord) {
        self.result_order.push_back(record.call_id.clone());
        self.results.insert(record.call_id.clone(), record);
        while self.result_order.len() > KEPT_RESULTS {
            if let Some(old) = self.result_order.pop_front() {
                self.results.remove(&old);
            }
        }
    }
}

/// The platform's core, one per platform: the handles hold it, the tasks only a weak
/// reference, so dropping the last handle stops them.
pub(super) struct Inner {
    pub(super) store: Store,
    /// Held by every registry change (API, gateway topology, registration) across its
    /// database write and its in-memory update, and by a reload across its read and apply,
    /// so a reload never puts back what a change made meanwhile took away (or the reverse).
    pub(super) registry: tokio::sync::Mutex<()>,
    pub(super) writer: HistoryWriter,
    pub(super) auth: Arc<DeviceAuth>,
    pub(super) admin: Admin,
    pub(super) client: Client,
    pub(super) state: Mutex<State>,
    pub(super) next_id: AtomicU64,
    pub(super) config: PlatformConfig,
    pub(super) stats: PlatformStats,
}

impl Inner {
    /// A new Alink message id for a request to a device. Ids are numeric strings; they start
    /// from the clock so they stay unique across restarts within a day, as the protocol asks.
    pub(super) fn next_call_id(&self, now_ms: i64) -> String {
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

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A poisoned lock means a panic while holding it; the data is plain maps, still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs a record the writer could not take (its queue is full).
pub(super) fn submit(writer: &HistoryWriter, record: Record) {
    if !writer.submit(record) {
        tracing::debug!("history writer queue full: record dropped");
    }
}
