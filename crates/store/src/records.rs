//! What is stored: plain data with wall-clock deadlines (milliseconds since the Unix epoch),
//! so expiry keeps counting while the broker is down.

use bytes::Bytes;
use bytestring::ByteString;
use std::collections::{BTreeMap, HashMap};
use thingmq_broker::session::SubscriptionRecord;
use thingmq_codec::{LastWill, ProtocolVersion, PublishProperties, QoS};

/// An application message, stored once however many sessions reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Topic name.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// The properties that travel with the message.
    pub properties: PublishProperties,
    /// Message expiry deadline, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// A session's state apart from its queue: what a reconnecting client finds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Protocol of the last connection.
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval, seconds (`u32::MAX` never).
    pub expiry_interval: u32,
    /// When the offline session ends, Unix milliseconds; `None` while connected.
    pub expires_at_ms: Option<u64>,
    /// A connection was attached when this was written: if the broker stops without
    /// writing again, the connection was lost with it.
    pub connected: bool,
    /// The will of the last connection, if not yet published.
    pub will: Option<LastWill>,
    /// When a delayed will is due, Unix milliseconds.
    pub will_at_ms: Option<u64>,
    /// Subscriptions with their options.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Next packet id to try for deliveries.
    pub next_packet_id: u16,
    /// Username of the last connection: the access rules (ACL) that apply to the session's
    /// deliveries and will while it is offline after a restart are this user's.
    pub username: Option<ByteString>,
    /// The listener of the last connection: whose access rules (ACL) apply while the
    /// session is offline after a restart. Added in format 2.
    pub listener: ListenerRef,
}

/// Which listener a session's last connection came in through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListenerRef {
    /// Not recorded (a session written by format 1): the first listener's rules apply.
    #[default]
    Unknown,
    /// The platform's in-process link, trusted past the access rules.
    Internal,
    /// A configured listener.
    Listener {
        /// Its position in the configuration (0-based).
        index: u32,
        /// Its protocol and configured bind address, e.g. `tcp 0.0.0.0:1883`: checked at
        /// restore so a reordered configuration does not apply another listener's rules.
        address: ByteString,
    },
}

/// Where a delivery of a message to a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Queued, not sent yet.
    Queued,
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitingAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitingRec,
    /// PUBREL sent, waiting for PUBCOMP (the message must not be sent again).
    AwaitingComp,
}

/// One message in one session's queue or in-flight window: a reference, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Vec<u32>,
    /// Packet id once sent.
    pub packet_id: Option<u16>,
    /// Where the delivery stands.
    pub state: EntryState,
    /// `(group, filter)` when the message came through a `$share` subscription: if the
    /// session ends before delivering it, it is handed to another member of that group.
    /// Added in format 2.
    pub share: Option<(ByteString, ByteString)>,
}

/// One change; a batch of them is applied atomically by [`crate::Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a session.
    PutSession {
        /// Client identifier (the key).
        client_id: ByteString,
        /// Its state.
        record: SessionRecord,
    },
    /// Forgets a session with its entries and QoS 2 receive state.
    DeleteSession {
        /// Client identifier.
        client_id: ByteString,
    },
    /// Stores a message; it lives while entries reference it (put them in the same batch).
    PutMessage {
        /// Message id (unique, increasing).
        id: u64,
        /// The message.
        record: MessageRecord,
    },
    /// Adds a message to a session's queue (ignored if the message is unknown).
    PutEntry {
        /// Session.
        client_id: ByteString,
        /// Message id.
        message_id: u64,
        /// The delivery.
        entry: EntryRecord,
    },
    /// A delivery was sent or moved on (ignored if the entry is gone).
    UpdateEntry {
        /// Session.
        client_id: ByteString,
        /// Message id.
        message_id: u64,
        /// Packet id used.
        packet_id: u16,
        /// New state.
        state: EntryState,
    },
    /// A delivery is complete (or dropped); the message goes with its last reference.
    DeleteEntry {
        /// Session.
        client_id: ByteString,
        /// Message id.
        message_id: u64,
    },
    /// A QoS 2 PUBLISH from the client was taken (PUBREC owed or sent).
    PutQos2 {
        /// Session.
        client_id: ByteString,
        /// The client's packet id.
        packet_id: u16,
    },
    /// The client released a QoS 2 packet id (PUBREL).
    DeleteQos2 {
        /// Session.
        client_id: ByteString,
        /// The client's packet id.
        packet_id: u16,
    },
    /// Sets the retained message of a topic.
    PutRetained {
        /// Topic.
        topic: ByteString,
        /// The message.
        record: MessageRecord,
    },
    /// Clears the retained message of a topic.
    DeleteRetained {
        /// Topic.
        topic: ByteString,
    },
}

/// A session as loaded, with its queue in message-id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// Session state.
    pub record: SessionRecord,
    /// Queue and in-flight entries, by increasing message id.
    pub entries: Vec<(u64, EntryRecord)>,
    /// QoS 2 packet ids received and not yet released.
    pub qos2_received: Vec<u16>,
}

/// Everything stored, as loaded at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Messages referenced by entries, by id.
    pub messages: HashMap<u64, MessageRecord>,
    /// Sessions by client id.
    pub sessions: BTreeMap<ByteString, SessionSnapshot>,
    /// Retained messages by topic.
    pub retained: BTreeMap<ByteString, MessageRecord>,
}

impl Snapshot {
    /// The first message id not in use.
    pub fn next_message_id(&self) -> u64 {
        self.messages.keys().max().map_or(1, |m| m + 1)
    }
}
