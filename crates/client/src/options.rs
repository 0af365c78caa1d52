//! Connection options, transports, and the requests the handle sends to the event loop.

use bytes::Bytes;
use bytestring::ByteString;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use thingmq_codec::{
    Disconnect, LastWill, ProtocolVersion, Publish, SubAck, Subscribe, UnsubAck, Unsubscribe,
    UserProperty,
};

/// Everything about a session that is not the transport.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// Client identifier; empty asks the server to assign one (v5, or v3.1.1 with clean start).
    pub client_id: ByteString,
    /// MQTT 3.1.1 or 5.0.
    pub version: ProtocolVersion,
    /// Keep-alive interval; zero turns keep-alive off. A v5 server may lower it.
    pub keep_alive: Duration,
    /// How long to wait for PINGRESP before the connection is considered dead.
    pub ping_timeout: Duration,
    /// How long to wait for CONNACK after CONNECT.
    pub connect_timeout: Duration,
    /// Clean start (v3: clean session) on the first connection. Reconnects resume the session
    /// whenever the server may still hold it (v3 with this false, v5 with a session expiry).
    pub clean_start: bool,
    /// v5 Session Expiry Interval in seconds.
    pub session_expiry_interval: Option<u32>,
    /// User name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
    /// Last Will and Testament.
    pub will: Option<LastWill>,
    /// Our QoS 1/2 messages in flight at once (also capped by the server's Receive Maximum).
    pub max_inflight: u16,
    /// v5 Receive Maximum we announce: QoS 1/2 messages the server may have in flight to us.
    pub receive_maximum: u16,
    /// v5 Maximum Packet Size we announce.
    pub max_packet_size: Option<NonZeroU32>,
    /// v5 Topic Alias Maximum we announce: the server may then shorten topics it sends us.
    pub topic_alias_maximum: u16,
    /// v5 user properties sent in CONNECT.
    pub user_properties: Vec<UserProperty>,
    /// Requests queued or in flight before the handle's calls wait (back-pressure); at most
    /// 60000, so packet ids never run out.
    pub request_capacity: usize,
    /// Reconnect after a lost connection, or not.
    pub reconnect: Option<Reconnect>,
}

impl MqttOptions {
    /// Options with the usual defaults: v5, keep-alive 60 s, clean start, 100 in flight.
    pub fn new(client_id: impl Into<ByteString>) -> Self {
        MqttOptions {
            client_id: client_id.into(),
            version: ProtocolVersion::V5,
            keep_alive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            clean_start: true,
            session_expiry_interval: None,
            username: None,
            password: None,
            will: None,
            max_inflight: 100,
            receive_maximum: 100,
            max_packet_size: None,
            topic_alias_maximum: 16,
            user_properties: Vec::new(),
            request_capacity: 1000,
            reconnect: Some(Reconnect::default()),
        }
    }
}

/// Exponential back-off between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Delay before the first attempt after a loss; doubled after each failure.
    pub min_delay: Duration,
    /// The delay never grows beyond this.
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl Reconnect {
    /// The delay before attempt `failures + 1`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(20);
        self.min_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// TLS settings for `mqtts://` and `wss://`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust; without it the system has none, so either
    /// this or `insecure` is needed.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate and host name. For tests only: it removes all protection
    /// against a man in the middle.
    pub insecure: bool,
    /// Name to check the certificate against; the host by default.
    pub server_name: Option<String>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Transport {
    /// MQTT over TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// MQTT over TLS.
    Tls {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Certificates.
        tls: TlsOptions,
    },
    /// MQTT over WebSocket (sub-protocol `mqtt`); `url` is `ws://host:port/path`.
    Ws {
        /// The WebSocket URL.
        url: String,
    },
    /// MQTT over WebSocket over TLS; `url` is `wss://host:port/path`.
    Wss {
        /// The WebSocket URL.
        url: String,
        /// Certificates.
        tls: TlsOptions,
    },
}

/// What the handle asks the session to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request {
    /// Publish (the packet id is assigned when it is sent).
    Publish(Publish),
    /// Subscribe (the packet id is assigned when it is sent).
    Subscribe(Subscribe),
    /// Unsubscribe (the packet id is assigned when it is sent).
    Unsubscribe(Unsubscribe),
    /// Send DISCONNECT and stop.
    Disconnect(Disconnect),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Published: `None` for QoS 0 (written, no ack), else the PUBACK / PUBCOMP reason code.
    Published(Option<thingmq_codec::ReasonCode>),
    /// SUBACK, one reason code per filter.
    SubAck(SubAck),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// DISCONNECT was queued.
    Disconnected,
}
