//! The registry as applications change it: products and devices created, replaced, enabled,
//! re-keyed, attached to gateways and deleted. Each change is written to the database before
//! memory, under the registry lock, so a concurrent reload (`reload.rs`) cannot undo it; a
//! device that loses its right to connect is disconnected, and a sub-device's gateway is told
//! on `thing/topo/change`.

use super::state::{key, Key};
use super::{topo, Platform, PlatformError};
use crate::now_ms;
use crate::registry::{valid_name, Device, Product};
use crate::shadow::Shadow;

/// A device and whether it is connected now.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// The device (its secret included: callers decide what to show).
    pub device: Device,
    /// Connected now.
    pub online: bool,
}

impl Platform {
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

    pub(super) async fn kick(&self, k: &Key) {
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
}
