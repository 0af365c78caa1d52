//! What a persistent session reports to the server's store, and how it is rebuilt from it.
//!
//! The session never calls a store: when [`crate::BrokerSettings::durable`] is set and the
//! session outlives its connection (Session Expiry Interval > 0), its changes leave as
//! [`Output::Persist`] values. Deliveries are reported by the store id their [`Routed`]
//! carries; the server wrote the queue entry itself when it routed the message, so a message
//! is stored once and sessions only reference it.

use super::{outgoing, Awaiting, InFlight, Output, Session, Will};
use crate::{BrokerSettings, Routed};
use bytestring::ByteString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thingmq_codec::{LastWill, PacketId, ProtocolVersion};

use super::SubscriptionRecord;

/// A change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum PersistOp {
    /// The session's own state (not its queue) changed.
    Session(Box<SessionState>),
    /// The session ended: forget it, its queue and its QoS 2 receive state.
    Ended,
    /// A delivery was sent (or its PUBREC arrived): it now waits for `awaiting`.
    Sent {
        /// The message's store id.
        message_id: u64,
        /// Packet id used for it.
        packet_id: PacketId,
        /// What the client owes next.
        awaiting: Awaiting,
    },
    /// A delivery is over (acknowledged, refused, expired or dropped).
    Done {
        /// The message's store id.
        message_id: u64,
    },
    /// The client released a QoS 2 packet id with PUBREL.
    Released {
        /// The client's packet id.
        packet_id: PacketId,
    },
}

/// A session's state apart from its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// Protocol of the last connection.
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval, seconds.
    pub expiry_interval: u32,
    /// When the offline session ends.
    pub expires_at: Option<Instant>,
    /// A connection is attached.
    pub connected: bool,
    /// The will not yet published.
    pub will: Option<LastWill>,
    /// When a delayed will is due.
    pub will_at: Option<Instant>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Next packet id to try.
    pub next_packet_id: u16,
}

/// A stored delivery handed back to [`Session::restore`].
#[derive(Debug, Clone)]
pub struct RestoredDelivery {
    /// The message as routed to this session (with its store id).
    pub routed: Routed,
    /// Packet id and state when it had been sent.
    pub sent: Option<(PacketId, Awaiting)>,
}

impl Session {
    /// True when this session's changes are reported for the store.
    pub fn persists(&self) -> bool {
        self.settings.durable && self.expiry_interval > 0 && !self.ended
    }

    /// The session's state as stored.
    pub fn state(&self) -> SessionState {
        let mut subscriptions: Vec<_> = self.subscriptions.values().cloned().collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionState {
            protocol: self.protocol,
            expiry_interval: self.expiry_interval,
            expires_at: self.expires_at,
            connected: self.conn.is_some(),
            will: self.will.as_ref().map(|w| w.message.clone()),
            will_at: self.will_at(),
            subscriptions,
            next_packet_id: self.next_packet_id,
        }
    }

    pub(super) fn persist_state(&mut self, out: &mut Vec<Output>) {
        if self.persists() {
            self.stored = true;
            out.push(Output::Persist(PersistOp::Session(Box::new(self.state()))));
        }
    }

    /// Reports the progress of a delivery whose message is in the store as `store_id`.
    pub(super) fn persist_delivery(
        &self,
        store_id: Option<u64>,
        op: impl FnOnce(u64) -> PersistOp,
        out: &mut Vec<Output>,
    ) {
        if let Some(id) = store_id {
            if self.settings.durable {
                out.push(Output::Persist(op(id)));
            }
        }
    }

    /// Rebuilds a session from the store at `now` (server start). A session that had a
    /// connection when the server stopped lost it then: its will is scheduled (published at
    /// the first [`Session::tick`] when it has no delay) and its expiry starts now. The caller
    /// then calls [`Session::tick`] so wills and expiries that fell due while the server was
    /// down take effect.
    pub fn restore(
        settings: Arc<BrokerSettings>,
        now: Instant,
        state: SessionState,
        deliveries: Vec<RestoredDelivery>,
        qos2_received: Vec<PacketId>,
    ) -> Session {
        let mut s = Session::new(settings);
        s.stored = true;
        s.protocol = state.protocol;
        s.expiry_interval = state.expiry_interval;
        s.will = state.will.map(|message| {
            let at = if state.connected {
                let delay = message.properties.will_delay_interval.unwrap_or(0);
                Some(now + Duration::from_secs(u64::from(delay)))
            } else {
                state.will_at
            };
            Box::new(Will { message, at })
        });
        s.next_packet_id = state.next_packet_id.max(1);
        s.expires_at = if state.connected {
            match s.expiry_interval {
                u32::MAX => None,
                secs => Some(now + Duration::from_secs(u64::from(secs))),
            }
        } else {
            state.expires_at
        };
        for record in state.subscriptions {
            let key = match &record.share_group {
                Some(g) => ByteString::from(format!("$share/{g}/{}", record.filter)),
                None => record.filter.clone(),
            };
            s.subscriptions.insert(key, record);
        }
        for d in deliveries {
            match d.sent {
                Some((packet_id, awaiting)) => {
                    outgoing(&mut s.outgoing).inflight.push_back(InFlight {
                        packet_id,
                        routed: d.routed,
                        awaiting,
                    })
                }
                None => {
                    let o = outgoing(&mut s.outgoing);
                    o.queued_bytes += d.routed.message.cost();
                    o.queue.push_back(d.routed);
                }
            }
        }
        for id in qos2_received {
            // PUBREC was owed or sent: a resend of the PUBLISH is answered, never routed again.
            s.qos2_received.insert(id, true);
        }
        s
    }

    /// The server is stopping and keeps its sessions in the store: the connection (if any)
    /// is told why and treated as lost, so the will is published or scheduled as for any
    /// lost connection, and the session stays (or ends if it would end anyway).
    pub fn suspend(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.conn.is_some() {
            self.send_disconnect(thingmq_codec::ReasonCode::ServerShuttingDown, None, out);
            self.connection_lost(now, out);
        }
    }
}
