//! Reading the registry again from the database (SIGHUP): products, devices and credentials
//! changed by `thingmq things …` (the offline CLI) or by another process sharing the database
//! take effect without a restart, and devices that lost their right to connect are
//! disconnected, as when the same change is made through the API.

use std::collections::HashMap;

use super::state::{key, Key};
use super::{topo, Platform, PlatformError};
use crate::now_ms;
use crate::registry::{Device, Product};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryReload {
    /// Products in the database now.
    pub products: usize,
    /// Devices in the database now.
    pub devices: usize,
    /// Devices that were not loaded before.
    pub added: usize,
    /// Loaded devices that are no longer in the database.
    pub removed: usize,
    /// Devices whose record changed (secret, enabled, tags, gateway).
    pub changed: usize,
    /// Connected devices disconnected because they were removed or disabled, or their
    /// secret changed.
    pub disconnected: usize,
}

impl Platform {
    /// Reads products and devices from the database again and applies the differences.
    /// Shadows of devices already loaded stay as they are in memory (they are newer than what
    /// the database holds); new devices get theirs from the database.
    pub async fn reload_registry(&self) -> Result<RegistryReload, PlatformError> {
        let _registry = self.inner.registry.lock().await;
        let store = &self.inner.store;
        let mut products: HashMap<String, Product> = HashMap::new();
        let mut devices: HashMap<Key, Device> = HashMap::new();
        for product in store.products().await? {
            for device in store.devices(&product.product_key).await? {
                devices.insert(key(&device.product_key, &device.device_name), device);
            }
            products.insert(product.product_key.clone(), product);
        }
        let new_keys: Vec<Key> = {
            let state = self.state();
            devices
                .keys()
                .filter(|k| !state.devices.contains_key(*k))
                .cloned()
                .collect()
        };
        let mut new_shadows = Vec::with_capacity(new_keys.len());
        for k in new_keys {
            let shadow = store.shadow(&k.0, &k.1).await?;
            new_shadows.push((k, shadow));
        }

        let mut report = RegistryReload {
            products: products.len(),
            devices: devices.len(),
            ..RegistryReload::default()
        };
        let mut to_kick = Vec::new();
        // Gateways hear of their sub-devices' changes on `thing/topo/change`, as for the
        // same changes made through the API: (gateway, status, sub-device).
        let mut notices: Vec<(Key, u8, Key)> = Vec::new();
        {
            let mut state = self.state();
            let now = now_ms();
            let removed: Vec<Key> = state
                .devices
                .keys()
                .filter(|k| !devices.contains_key(*k))
                .cloned()
                .collect();
            for k in removed {
                report.removed += 1;
                if let Some(gw) = state.devices.get(&k).and_then(|d| d.gateway.clone()) {
                    notices.push((gw, topo::change::DELETED, k.clone()));
                }
                state.devices.remove(&k);
                state.shadows.remove(&k);
                state.dirty.remove(&k);
                to_kick.push(k);
            }
            for (k, mut device) in devices {
                let old = state.devices.get(&k);
                // The last connection is written by this process; its own record is as new
                // as the database's or newer.
                if let Some(old) = old.filter(|o| o.last_online_ms >= device.last_online_ms) {
                    device.last_online_ms = old.last_online_ms;
                    device.last_ip = old.last_ip.clone();
                }
                match old {
                    None => report.added += 1,
                    Some(old) if *old != device => {
                        report.changed += 1;
                        if device.device_secret != old.device_secret || !device.enabled {
                            to_kick.push(k.clone());
                        }
                        let moved = old.gateway != device.gateway;
                        if let (Some(gw), false) = (&device.gateway, moved) {
                            if old.enabled != device.enabled {
                                let status = if device.enabled {
                                    topo::change::ENABLED
                                } else {
                                    topo::change::DISABLED
                                };
                                notices.push((gw.clone(), status, k.clone()));
                            }
                        }
                        if let (Some(gw), true) = (&device.gateway, moved) {
                            notices.push((gw.clone(), topo::change::CREATED, k.clone()));
                        }
                        // A sub-device moved away from its gateway is no longer online
                        // through it.
                        if let Some(gw) = old.gateway.clone().filter(|_| moved) {
                            topo::end_session(
                                &self.inner,
                                &mut state,
                                &gw,
                                &k,
                                "topo_deleted",
                                now,
                            );
                            notices.push((gw, topo::change::DELETED, k.clone()));
                        }
                    }
                    Some(_) => {}
                }
                state.devices.insert(k, device);
            }
            for (k, shadow) in new_shadows {
                state.shadows.entry(k).or_insert(shadow);
            }
            state.products = products;
        }
        self.refresh_credentials();
        for (gw, status, sub) in &notices {
            topo::notify_topo_change(&self.inner, gw, *status, std::slice::from_ref(sub));
        }
        for k in &to_kick {
            if self.state().online.contains_key(k) {
                report.disconnected += 1;
            }
            self.kick(k).await;
        }
        tracing::info!(
            products = report.products,
            devices = report.devices,
            added = report.added,
            removed = report.removed,
            changed = report.changed,
            disconnected = report.disconnected,
            "device registry reloaded from the database"
        );
        Ok(report)
    }
}
