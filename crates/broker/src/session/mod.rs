//! The per-client session state machine.
//!
//! A [`Session`] lives as long as the MQTT session (across connections, while offline, until
//! it expires). Every entry point takes `now` and appends its side effects to an output vector
//! as [`Output`] values; the caller (the server's session task) performs them: writes packets,
//! routes messages, updates the router, arms a timer for [`Session::next_deadline`].
//!
//! Entry points: [`Session::attach`] (a CONNECT was accepted), [`Session::handle_packet`]
//! (a packet from the client), [`Session::deliver`] (a message routed to this session),
//! [`Session::publish_done`] (a message we received was routed and may be acknowledged),
//! [`Session::tick`] (a deadline passed), [`Session::connection_lost`] and
//! [`Session::takeover`].

mod connect;
mod inbound;
mod inflight;
mod outbound;
mod persist;
mod subscribe;

pub use persist::{PersistOp, RestoredDelivery, SessionState};

pub use connect::{effective_keep_alive, validate_connect};

use crate::router::SubscriptionEntry;
use crate::{AccessPolicy, AllowAll, BrokerSettings, Message, Routed, Violation};
use bytestring::ByteString;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;
use thingmq_codec::{LastWill, Packet, PacketId, ProtocolVersion, QoS, ReasonCode};

/// A side effect requested by the session, performed by its owner in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this packet to the client.
    Send(Packet),
    /// Route this message received from the client (and store it if retained). When `ack` is
    /// set, call [`Session::publish_done`] once routing (and persisting) is done.
    Publish {
        /// The message.
        message: Arc<Message>,
        /// The acknowledgement owed to the client.
        ack: Option<PendingAck>,
    },
    /// Publish the client's Will Message.
    Will(Arc<Message>),
    /// Add (or replace) a subscription in the router, then send retained messages as its
    /// retain handling says.
    Subscribe(SubscriptionRecord),
    /// Remove a subscription from the router.
    Unsubscribe(SubscriptionRecord),
    /// Close the network connection after writing the packets sent before this output.
    Close,
    /// A message for this client was dropped.
    Dropped(DropReason),
    /// The policy refused a PUBLISH, SUBSCRIBE or will of this client (for logs and metrics).
    Denied {
        /// Publish (write) or subscribe/receive (read).
        action: &'static str,
        /// The topic or filter.
        topic: ByteString,
    },
    /// The session is over: remove its subscriptions from the router and forget it. Messages
    /// it got through shared subscriptions and never delivered are handed back so another
    /// group member can take them.
    Ended {
        /// Undelivered shared-subscription messages.
        orphans: Vec<Routed>,
    },
    /// Write this change to the store (only with [`BrokerSettings::durable`]). Packets sent
    /// after it must not reach the client before it is durable.
    Persist(PersistOp),
}

/// Why a message for this client was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue limit (messages or bytes) was reached.
    QueueFull,
    /// The message expired before delivery began.
    Expired,
    /// It is larger than the client's Maximum Packet Size.
    TooLarge,
    /// QoS 0 message for a client that is offline.
    Offline,
    /// The client may not receive messages on this topic.
    NotAuthorized,
}

/// An acknowledgement owed for a QoS 1/2 PUBLISH we received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingAck {
    /// Packet id of the client's PUBLISH.
    pub packet_id: PacketId,
    /// Its QoS (1 → PUBACK, 2 → PUBREC).
    pub qos: QoS,
}

/// One subscription as the session knows it: the filter as the client wrote it, split into
/// the router's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The topic filter without any `$share/group/` prefix.
    pub filter: ByteString,
    /// The share group, for `$share/` filters.
    pub share_group: Option<ByteString>,
    /// Options (QoS = granted QoS) and subscription identifier.
    pub entry: SubscriptionEntry,
}

/// State of one of our QoS 1/2 deliveries awaiting the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Ack,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

#[derive(Debug, Clone)]
struct InFlight {
    packet_id: PacketId,
    routed: Routed,
    awaiting: Awaiting,
}

/// State that exists only while a network connection is attached.
#[derive(Debug)]
struct Connection {
    /// Keep-alive in force (after the server's maximum), seconds; 0 = none.
    keep_alive: u16,
    last_packet: Instant,
    /// How many QoS 1/2 deliveries may be unacknowledged (client's Receive Maximum and ours,
    /// both `u16`s). Not a `usize`: the box is then 48 bytes, an allocator size class,
    /// instead of 64 (see the size test in `tests.rs`).
    send_window: u16,
    /// Largest packet the client accepts.
    max_packet_size: Option<u32>,
    /// Topic aliases the client accepts from us.
    alias_max_out: u16,
    /// Made when the first alias is set: most clients use none, and two empty maps inline
    /// were ~100 bytes of every idle connection.
    aliases: Option<Box<Aliases>>,
    /// Whether reason strings may be sent (Request Problem Information).
    problem_info: bool,
    /// The Session Expiry Interval given at CONNECT: 0 forbids setting one at DISCONNECT.
    expiry_at_connect: u32,
}

/// QoS 2 packet ids received and not yet released, made on the first one: most sessions
/// never receive QoS 2, and an empty map inline is 48 bytes of every idle connection.
// The box is the point: absent, the set costs one pointer instead of an empty map's 48 bytes.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
struct Qos2Received(Option<Box<HashMap<PacketId, bool>>>);

impl Qos2Received {
    fn get(&self, id: &PacketId) -> Option<&bool> {
        self.0.as_ref()?.get(id)
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    fn insert(&mut self, id: PacketId, routed: bool) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(id, routed);
    }

    fn remove(&mut self, id: &PacketId) -> Option<bool> {
        let m = self.0.as_mut()?;
        let r = m.remove(id);
        if m.is_empty() {
            self.0 = None;
        }
        r
    }
}

/// Our deliveries to the client not yet done: the in-flight window and the queue behind it
/// (messages beyond the window, or kept while the client is offline).
#[derive(Debug, Default)]
struct Outgoing {
    inflight: inflight::Window,
    queue: VecDeque<Routed>,
    /// What the queued messages cost ([`Message::cost`]), against `max_queued_bytes`.
    queued_bytes: usize,
}

/// The session's [`Outgoing`], made when first needed (a function of the field, so it can
/// be borrowed beside the session's other fields).
fn outgoing(o: &mut Option<Box<Outgoing>>) -> &mut Outgoing {
    o.get_or_insert_with(Box::default)
}

/// Topic aliases of one connection, both ways.
#[derive(Debug, Default)]
struct Aliases {
    /// Those we set toward the client.
    out: HashMap<ByteString, NonZeroU16>,
    /// Those the client set toward us.
    inbound: HashMap<u16, ByteString>,
}

/// The MQTT session of one client id.
#[derive(Debug)]
pub struct Session {
    settings: Arc<BrokerSettings>,
    protocol: ProtocolVersion,
    /// Boxed: ~60 bytes that an offline session does without, and that would keep the
    /// session task a tokio size class larger (see the server's `session_task.rs`).
    conn: Option<Box<Connection>>,
    /// Session Expiry Interval, seconds; `u32::MAX` never expires.
    expiry_interval: u32,
    /// When an offline session ends.
    expires_at: Option<Instant>,
    /// Boxed: a will is ~200 bytes, and most sessions have none.
    will: Option<Box<Will>>,
    /// By filter as subscribed (`$share/` prefix included). Small: most sessions have a few.
    subscriptions: crate::small_map::SmallMap<ByteString, SubscriptionRecord>,
    /// Made on the first message to deliver and let go of once nothing is in flight or
    /// queued ([`Session::release_idle`]): an idle session holds a pointer, not ~80 bytes.
    outgoing: Option<Box<Outgoing>>,
    next_packet_id: u16,
    /// QoS 2 packet ids received and not yet released by PUBREL; the flag says whether the
    /// PUBREC was sent (the message was routed).
    qos2_received: Qos2Received,
    /// QoS 1 PUBLISHes routed but not yet acknowledged.
    qos1_unacked: u32,
    ended: bool,
    /// The store holds this session (a state was reported and not yet ended).
    stored: bool,
    /// What this client may publish, subscribe to and receive.
    policy: Arc<dyn AccessPolicy>,
    /// Why the last connection closed, for lifecycle events and logs.
    close_reason: Option<CloseReason>,
}

/// The client's Last Will, and when it is due once the connection is gone: its delay lives
/// and ends with it, so the deadline is here rather than a word of every session.
#[derive(Debug)]
struct Will {
    message: LastWill,
    /// Set when the connection is lost with a Will Delay Interval (offline only).
    at: Option<Instant>,
}

impl Will {
    /// The Will Delay Interval, seconds.
    fn delay(&self) -> u32 {
        self.message.properties.will_delay_interval.unwrap_or(0)
    }
}

/// Why a connection closed (`$SYS/brokers/clients/disconnected`, the device layer's
/// online/offline log). Names follow EMQX's disconnect reasons where they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent DISCONNECT (with this reason code; 0x04 keeps the will).
    Disconnect(ReasonCode),
    /// No packet within 1.5 times the keep-alive.
    KeepAliveTimeout,
    /// The client broke the protocol; the code is the one sent (v5) or that would have been.
    ProtocolError(ReasonCode),
    /// Another connection with the same client id took the session over.
    TakenOver,
    /// An administrator disconnected the client.
    Kicked,
    /// The broker is shutting down.
    ServerShutdown,
    /// The network connection closed (or failed) without a DISCONNECT.
    ConnectionLost,
    /// The session was ended while connected (e.g. its device was deleted).
    SessionEnded,
}

impl CloseReason {
    /// A short stable name: `normal`, `keepalive_timeout`, `protocol_error`, `takenover`,
    /// `kicked`, `server_shutdown`, `connection_lost`, `session_ended` (a DISCONNECT with a
    /// non-zero reason code is `disconnect_0x..`).
    pub fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Disconnect(ReasonCode::Success) => "normal".into(),
            Self::Disconnect(code) => format!("disconnect_0x{:02x}", code.as_u8()).into(),
            Self::KeepAliveTimeout => "keepalive_timeout".into(),
            Self::ProtocolError(_) => "protocol_error".into(),
            Self::TakenOver => "takenover".into(),
            Self::Kicked => "kicked".into(),
            Self::ServerShutdown => "server_shutdown".into(),
            Self::ConnectionLost => "connection_lost".into(),
            Self::SessionEnded => "session_ended".into(),
        }
    }
}

impl Session {
    /// A new, empty session for `client_id`.
    pub fn new(settings: Arc<BrokerSettings>) -> Session {
        Session {
            settings,
            protocol: ProtocolVersion::V3_1_1,
            conn: None,
            expiry_interval: 0,
            expires_at: None,
            will: None,
            subscriptions: Default::default(),
            outgoing: None,
            next_packet_id: 1,
            qos2_received: Qos2Received::default(),
            qos1_unacked: 0,
            ended: false,
            stored: false,
            policy: AllowAll::shared(),
            close_reason: None,
        }
    }

    /// Why the last connection closed; `None` while the first is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Sets the authorization policy (at connect, and again when rules are reloaded).
    pub fn set_policy(&mut self, policy: Arc<dyn AccessPolicy>) {
        self.policy = policy;
    }

    /// Protocol version of the current (or last) connection.
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// True while a network connection is attached.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// True once the session has ended; it must then be dropped.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The session's subscriptions, keyed by the filter as subscribed.
    pub fn subscriptions(&self) -> impl Iterator<Item = &SubscriptionRecord> {
        self.subscriptions.values()
    }

    /// Messages waiting for the in-flight window or for the client to reconnect.
    pub fn queued_len(&self) -> usize {
        self.outgoing.as_ref().map_or(0, |o| o.queue.len())
    }

    /// Our unacknowledged QoS 1/2 deliveries.
    pub fn inflight_len(&self) -> usize {
        self.outgoing.as_ref().map_or(0, |o| o.inflight.len())
    }

    /// Lets go of what an idle session need not hold: the (empty) in-flight window and
    /// queue. For the owner to call when it waits with nothing to do.
    pub fn release_idle(&mut self) {
        if self
            .outgoing
            .as_ref()
            .is_some_and(|o| o.inflight.len() == 0 && o.queue.is_empty())
        {
            self.outgoing = None;
        }
    }

    /// When a delayed will is due (offline only).
    fn will_at(&self) -> Option<Instant> {
        self.will.as_ref().and_then(|w| w.at)
    }

    /// The earliest moment [`Session::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.conn {
            Some(c) if c.keep_alive > 0 => {
                // [MQTT-3.1.2-24]: one and a half times the keep-alive.
                let grace = std::time::Duration::from_millis(u64::from(c.keep_alive) * 1500);
                Some(c.last_packet + grace)
            }
            Some(_) => None,
            None => match (self.will_at(), self.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Handles a packet from the client. On a protocol violation the session has already
    /// queued the DISCONNECT (v5) and [`Output::Close`]; the violation is returned to be logged.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: Packet,
        out: &mut Vec<Output>,
    ) -> Result<(), Violation> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        conn.last_packet = now;
        let result = match packet {
            Packet::Publish(p) => self.on_publish(now, p, out),
            Packet::PubAck(a) => {
                self.on_ack(now, a.packet_id, Awaiting::Ack, a.reason, out);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.on_pubrec(now, r, out);
                Ok(())
            }
            Packet::PubRel(r) => {
                self.on_pubrel(r, out);
                Ok(())
            }
            Packet::PubComp(c) => {
                self.on_ack(now, c.packet_id, Awaiting::Comp, c.reason, out);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s, out),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u, out);
                Ok(())
            }
            Packet::PingReq => {
                out.push(Output::Send(Packet::PingResp));
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(now, d, out),
            Packet::Connect(_) => Err(Violation::Mqtt_3_1_0_2),
            // No enhanced authentication method is offered, so an AUTH can't be valid.
            Packet::Auth(_) => Err(Violation::Mqtt_4_12_0_1),
            p @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => Err(Violation::ServerOnlyPacket(p.kind())),
        };
        if let Err(v) = &result {
            self.violation(now, v, out);
        }
        result
    }

    /// Called when a deadline from [`Session::next_deadline`] may have passed.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.conn.is_some() {
            if self.next_deadline().is_some_and(|d| now >= d) {
                self.violation(now, &Violation::KeepAliveTimeout, out);
            }
            return;
        }
        if self.will_at().is_some_and(|t| now >= t) {
            self.publish_will(now, out);
            self.persist_state(out);
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            self.end(now, out);
        }
    }

    /// Ends the session now (clean-start reconnect, admin kick with session removal).
    pub fn end(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.end_because(now, CloseReason::SessionEnded, out);
    }

    pub(super) fn end_because(&mut self, now: Instant, reason: CloseReason, out: &mut Vec<Output>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.expires_at = None;
        if self.conn.take().is_some() {
            self.close_reason = Some(reason);
            out.push(Output::Close);
        }
        // The will goes out at the earlier of its delay and the end of the session.
        self.publish_will(now, out);
        for record in self.subscriptions.take_values() {
            out.push(Output::Unsubscribe(record));
        }
        let orphans = match self.outgoing.take() {
            Some(mut o) => o
                .inflight
                .take_all()
                .into_iter()
                .filter(|f| f.awaiting != Awaiting::Comp)
                .map(|f| f.routed)
                .chain(o.queue.drain(..))
                .filter(|r| r.share.is_some())
                .collect(),
            None => Vec::new(),
        };
        if std::mem::take(&mut self.stored) {
            out.push(Output::Persist(PersistOp::Ended));
        }
        out.push(Output::Ended { orphans });
    }
}

#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod tests;
