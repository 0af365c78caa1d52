//! The thingmq device layer: what turns the broker into an IoT platform. Modelled on Alibaba
//! Cloud IoT Platform's thing model and Alink protocol so devices written for it work
//! unchanged.
//!
//! Pure parts (no I/O, time passed in):
//! - [`registry`]: [`Product`], [`Device`], secret generation.
//! - [`tsl`]: [`ThingModel`] parsed from and exported to TSL JSON, with errors naming the JSON
//!   path of an invalid model.
//! - [`validate`]: checking reports, events and service arguments against a model in
//!   [`ValidationMode`] strict / weak / none.
//! - [`alink`]: the topic contract ([`DeviceTopic`]), request/reply envelopes and codes.
//! - [`shadow`]: reported / desired / delta per device.
//! - [`device_auth`]: Alink signatures and plain secrets, as [`thingmq_auth::Authenticator`]
//!   and [`thingmq_auth::Authorizer`] over a registry snapshot.
//! - [`engine`]: what to do with a device's message (reply, history rows, shadow change),
//!   downlink request builders and the pending-call tracker.
//! - [`sim`]: a simulated device generating valid values from a thing model.
//!
//! [`runtime::Platform`] runs them against the broker: an MQTT client on the server's
//! in-process link feeds device messages through the engine, performs the effects (replies,
//! history rows, shadows, call answers), tracks online state from the broker's client events,
//! and offers the application API (registry, shadow, property set/get, sync and async
//! service calls with timeouts, history). [`runtime::DeviceAccessHook`] lets devices in.
//!
//! Storage ([`store`]): SQLite, PostgreSQL or MySQL/MariaDB through `sqlx`, chosen by URL, with
//! a bounded, batching history writer.

pub mod alink;
pub mod device_auth;
pub mod engine;
pub mod registry;
pub mod runtime;
pub mod shadow;
pub mod sim;
pub mod store;
pub mod throttle;
pub mod tsl;
pub mod validate;

pub use alink::{DeviceTopic, Reply, Request, TopicKind};

/// The wall clock in UTC milliseconds, the device layer's unit of time (report times, history,
/// call logs). Only the I/O edges call it; the pure parts take the time as an argument.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
pub use device_auth::DeviceAuth;
pub use registry::{Device, NodeType, Product};
pub use shadow::Shadow;
pub use tsl::{DataType, ThingModel};
pub use validate::ValidationMode;
