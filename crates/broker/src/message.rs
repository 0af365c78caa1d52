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
    /// Client id of the publisher (`None` for $SYS and API messages), for No Local.
    pub publisher: Option<ByteString>,
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

    /// Approximate memory cost, for queue byte limits.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
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
    /// The `$share` group when delivered through a shared subscription, so an undelivered
    /// copy can be handed to another member of the group when this session ends.
    pub share: Option<Arc<str>>,
}
