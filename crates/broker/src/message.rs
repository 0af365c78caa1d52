//! Application messages as they travel through the broker.

use bytes::Bytes;
use bytestring::ByteString;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use thingmq_codec::{PublishProperties, QoS};

/// An application message, created once when it is received and shared by `Arc` with every
/// subscriber: the payload is a `Bytes` slice of the publisher's read buffer, never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (never an alias).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties that travel with the message (payload format, content type, response
    /// topic, correlation data, user properties). Topic alias, expiry and subscription
    /// identifiers are per hop and cleared here.
    pub properties: PublishProperties,
    /// When the Message Expiry Interval runs out; queued copies are dropped after it, and the
    /// remaining time is what a subscriber is told.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// True when the message expiry has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// Seconds left before expiry, rounded up, as forwarded in Message Expiry Interval.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// Builds a message from what a client sent (a PUBLISH or a will): the properties that
    /// travel with it are kept, the per-hop ones (alias, expiry, identifiers) are not.
    pub fn new(
        now: Instant,
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        p: TravellingProperties,
    ) -> Message {
        Message {
            topic,
            payload,
            qos,
            retain,
            expires_at: p
                .message_expiry_interval
                .map(|secs| now + std::time::Duration::from_secs(u64::from(secs))),
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                ..PublishProperties::default()
            },
        }
    }

    /// True for topics clients may not publish to: `$SYS` (the broker's own) and anything
    /// under `$share/` (not a topic name).
    pub fn is_reserved_topic(topic: &str) -> bool {
        topic == "$SYS" || topic.starts_with("$SYS/") || topic.starts_with("$share/")
    }

    /// Approximate memory cost, for queue byte limits.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// The properties a client gives a message that travel on with it (from a PUBLISH or from
/// the will properties of CONNECT).
#[derive(Debug, Clone, Default)]
pub struct TravellingProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties.
    pub user_properties: Vec<thingmq_codec::UserProperty>,
}

/// A message routed to one subscriber: the shared message plus what this subscriber's
/// matching subscriptions decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The message.
    pub message: Arc<Message>,
    /// Delivery QoS: the lower of the published QoS and the granted QoS.
    pub qos: QoS,
    /// RETAIN flag to send (retained-on-subscribe, or retain-as-published).
    pub retain: bool,
    /// Subscription identifiers of every matching subscription (MQTT 5).
    pub subscription_ids: Vec<NonZeroU32>,
    /// The `$share` group and filter when delivered through a shared subscription, so an
    /// undelivered copy can be handed to another member of that subscription when this
    /// session ends.
    pub share: Option<(Arc<str>, Arc<str>)>,
    /// The message's id in the server's store when this delivery was persisted for this
    /// session; the session reports its progress ([`crate::session::PersistOp`]) by it.
    pub store_id: Option<u64>,
}
