//! What applications ask of devices: the shadow, property set/get, and service calls. A sync
//! request waits here for its answer (a oneshot the message handler completes, or the call
//! times out); an async one is only tracked, and its result is looked up later by call id.
//! Offline devices get their property sets as desired values instead, saved at once.

use std::time::Duration;

use serde_json::{Map, Value};
use thingmq_client::QoS;
use tokio::sync::oneshot;

use super::state::{duration_ms, key, Key};
use super::{Platform, PlatformError};
use crate::alink::Reply;
use crate::engine::{downlink, Publish};
use crate::now_ms;
use crate::registry::Product;
use crate::shadow::Shadow;
use crate::store::ServiceCallRecord;
use crate::tsl::CallType;
use crate::validate::{self, ValidationMode};

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

/// The result of [`Platform::call_service`].
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceCall {
    /// A sync service: the device's answer.
    Answered(Reply),
    /// An async service: the call id to look up with [`Platform::call_state`].
    Started(String),
}

impl Platform {
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
}

/// How the platform checks its own commands: strictly, whatever the devices' mode, unless the
/// product turns validation off.
fn commands_mode(product: &Product) -> ValidationMode {
    match product.validation {
        ValidationMode::None => ValidationMode::None,
        _ => ValidationMode::Strict,
    }
}
