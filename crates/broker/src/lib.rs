//! The pure thingmq broker core: no sockets, no clock, no disk.
//!
//! - [`session::Session`] is the per-client state machine (`handle_*(now, input, &mut out)`):
//!   packet ids, in-flight windows, the QoS 2 receive set, the offline queue, topic aliases,
//!   keep-alive, will and expiry deadlines. Its side effects leave as [`session::Output`] values.
//! - [`router::Router`] maps topic filters (with `+`, `#` and `$share` groups) to subscribers.
//! - [`retain::RetainStore`] holds retained messages by topic.
//! - [`Message`] is an application message shared by `Arc` between all its receivers.
//! - [`BrokerSettings`] are the protocol limits the core enforces.
//! - [`AccessPolicy`] is the authorization hook a session consults (ACLs plug in here).

mod message;
mod policy;
pub mod session;
mod settings;
mod small_map;
mod violation;

pub use message::{Message, Routed, TravellingProperties};

/// A session's client identifier. Inline up to 23 bytes (every MQTT 3.1.1 server must
/// accept ids of 1 to 23 bytes, and most devices' are that short), otherwise one shared
/// allocation its copies share, where a `ByteString` was two heap blocks per session (see
/// `docs/benchmarks.md`). The [`session::Session`] keeps none: its owner does.
pub type ClientId = smol_str::SmolStr;
pub use policy::{AccessPolicy, AllowAll};
pub use settings::BrokerSettings;
pub use violation::Violation;
pub mod retain;
pub mod router;
