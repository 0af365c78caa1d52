//! Protocol limits enforced by the core. Loaded and validated by the server's config layer.

use thingmq_codec::QoS;

/// Limits and feature switches of the broker core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Largest keep-alive a client may use; larger (or 0) is replaced and announced as
    /// Server Keep Alive to v5 clients. 0 = no maximum.
    pub max_keep_alive: u16,
    /// How many unacknowledged QoS 1/2 PUBLISHes a v5 client may send us (Receive Maximum).
    pub receive_maximum: u16,
    /// Upper bound on our unacknowledged QoS 1/2 deliveries per client (further capped by the
    /// client's Receive Maximum).
    pub max_inflight: u16,
    /// Largest packet we accept (bytes, whole packet).
    pub max_packet_size: u32,
    /// Messages a session may queue (offline or beyond its in-flight window); more are dropped
    /// and counted.
    pub max_queued_messages: usize,
    /// Bytes a session may queue; 0 = no byte limit.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0: bool,
    /// Highest QoS the broker supports.
    pub max_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether `+`/`#` filters are allowed.
    pub wildcard_subscriptions: bool,
    /// Whether `$share/` filters are allowed.
    pub shared_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// Topic aliases a v5 client may use toward us.
    pub topic_alias_maximum: u16,
    /// Cap on Session Expiry Interval (seconds); `u32::MAX` = no cap. v3 persistent sessions
    /// (which never expire by the spec) also expire after this when it is below `u32::MAX`.
    pub max_session_expiry: u32,
    /// Longest client id accepted.
    pub max_client_id_len: usize,
    /// Most levels a topic name or filter may have. Bounds the router's and retained
    /// store's walk depth; deeper topics are refused as invalid.
    pub max_topic_levels: usize,
    /// The server keeps sessions in a store: persistent sessions report their changes as
    /// [`crate::session::Output::Persist`] and survive a server shutdown instead of ending.
    pub durable: bool,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            max_keep_alive: 0,
            receive_maximum: 1024,
            max_inflight: 128,
            max_packet_size: 1024 * 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0: false,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            topic_alias_maximum: 64,
            max_session_expiry: u32::MAX,
            max_client_id_len: 256,
            max_topic_levels: 128,
            durable: false,
        }
    }
}
