//! An async MQTT 3.1.1 / 5.0 client built on `thingmq-codec`.
//!
//! Two layers, as in the broker:
//!
//! - [`ClientState`] is the session as a pure state machine — `handle_packet(now, packet)`,
//!   `handle_request(now, request, token)`, `handle_timeout(now)`, with [`Output`]s (packets to
//!   send, [`Event`]s, finished requests) read back by `poll_output`. It owns packet ids
//!   (`NonZeroU16`), the in-flight window (bounded by [`MqttOptions::max_inflight`] and the
//!   server's Receive Maximum), the QoS 2 exactly-once receive set, topic aliases set by the
//!   server, keep-alive deadlines, and resending unacknowledged PUBLISH (DUP) and PUBREL when a
//!   reconnect finds the session present. It never reads the clock.
//! - [`Client`] + [`EventLoop`]: a cloneable handle whose calls (`publish`, `subscribe`,
//!   `unsubscribe`, `disconnect`) wait for their acknowledgement, and the loop that owns the
//!   state and the connection — TCP, TLS, WebSocket, WebSocket over TLS ([`Transport`]) or any
//!   `AsyncRead + AsyncWrite` stream ([`Client::with_stream`], [`Client::with_connector`]) — and
//!   reconnects with exponential back-off ([`Reconnect`]).
//!
//! ```no_run
//! use thingmq_client::{Client, Event, MqttOptions, QoS, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Transport::Tcp { host: "127.0.0.1".into(), port: 1883 };
//! let (client, mut events) = Client::new(MqttOptions::new("sensor-1"), transport);
//! tokio::spawn(async move {
//!     while let Some(event) = events.poll().await {
//!         if let Event::Publish(p) = event {
//!             println!("{}: {:?}", p.topic, p.payload);
//!         }
//!     }
//! });
//! client.subscribe("commands/sensor-1", QoS::AtLeastOnce).await?;
//! client.publish("telemetry/sensor-1", QoS::AtLeastOnce, false, "21.5").await?;
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Inside the platform, the same client runs over the broker's in-process link
//! (`thingmq_server::ServerHandle::connect_local()` or a `LocalLinker`) with
//! [`Client::with_stream`] / [`Client::with_connector`]: no socket, same MQTT semantics.
//!
//! Guarantees: a QoS 1/2 publish that was not acknowledged is kept across reconnects and
//! resent (DUP) when the server resumes the session; when it does not (a clean session, or an
//! expired one), it is sent again as a new message, so QoS 1 stays at-least-once. A QoS 2
//! message is delivered to the application once per server-side session, even if the server
//! resends it. More in `examples/`.

mod client;
mod error;
mod event_loop;
mod options;
pub mod state;
mod transport;

pub use client::{Client, Message};
pub use error::{ClientError, ConnectionError};
pub use event_loop::EventLoop;
pub use options::{MqttOptions, Reconnect, Request, Response, TlsOptions, Transport};
pub use state::{ClientState, Event, Output};
pub use thingmq_codec::{self as codec, ProtocolVersion, Publish, QoS, ReasonCode};
pub use transport::{AsyncStream, BoxedStream};
