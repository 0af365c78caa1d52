//! Messages to the client: the in-flight window, the queue behind it (also the offline
//! queue), packet ids, outgoing topic aliases, the client's Maximum Packet Size, and
//! resending after a reconnect.

use super::inbound::pubrel;
use super::{outgoing, Awaiting, DropReason, InFlight, Output, PersistOp, Session};
use crate::Routed;
use std::num::NonZeroU16;
use std::time::Instant;
use thingmq_codec::{encoded_len, Packet, PacketId, PubRec, Publish, QoS, ReasonCode};

impl Session {
    /// Takes a message routed to this session: sends it now, or queues it behind the
    /// in-flight window or until the client reconnects.
    pub fn deliver(&mut self, now: Instant, routed: Routed, out: &mut Vec<Output>) {
        if routed.message.is_expired(now) {
            self.done(&routed, out);
            out.push(Output::Dropped(DropReason::Expired));
            return;
        }
        if !self.policy.can_receive(&routed.message.topic) {
            self.done(&routed, out);
            out.push(Output::Dropped(DropReason::NotAuthorized));
            return;
        }
        let Some(conn) = &self.conn else {
            if routed.qos == QoS::AtMostOnce && !self.settings.queue_qos0 {
                out.push(Output::Dropped(DropReason::Offline));
            } else {
                self.enqueue(routed, out);
            }
            return;
        };
        // QoS 0 is not subject to the in-flight window.
        if routed.qos == QoS::AtMostOnce {
            self.transmit(now, &routed, None, out);
        } else if self.queued_len() == 0 && self.inflight_len() < usize::from(conn.send_window) {
            self.transmit_reliable(now, routed, out);
        } else {
            self.enqueue(routed, out);
        }
    }

    fn enqueue(&mut self, routed: Routed, out: &mut Vec<Output>) {
        let s = &self.settings;
        let cost = routed.message.cost();
        let o = outgoing(&mut self.outgoing);
        let over_bytes = s.max_queued_bytes > 0 && o.queued_bytes + cost > s.max_queued_bytes;
        if o.queue.len() >= s.max_queued_messages || over_bytes {
            self.done(&routed, out);
            out.push(Output::Dropped(DropReason::QueueFull));
            return;
        }
        o.queued_bytes += cost;
        o.queue.push_back(routed);
    }

    /// Sends queued messages while the window has room.
    fn drain_queue(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(window) = self.conn.as_ref().map(|c| usize::from(c.send_window)) else {
            return;
        };
        while self.inflight_len() < window {
            let Some(o) = self.outgoing.as_mut() else {
                break;
            };
            let Some(routed) = o.queue.pop_front() else {
                break;
            };
            o.queued_bytes = o.queued_bytes.saturating_sub(routed.message.cost());
            if routed.message.is_expired(now) {
                self.done(&routed, out);
                out.push(Output::Dropped(DropReason::Expired));
            } else if routed.qos == QoS::AtMostOnce {
                self.transmit(now, &routed, None, out);
            } else {
                self.transmit_reliable(now, routed, out);
            }
        }
    }

    fn transmit_reliable(&mut self, now: Instant, routed: Routed, out: &mut Vec<Output>) {
        let packet_id = outgoing(&mut self.outgoing)
            .inflight
            .allocate(&mut self.next_packet_id);
        if self.transmit(now, &routed, Some(packet_id), out) {
            let awaiting = if routed.qos == QoS::AtLeastOnce {
                Awaiting::Ack
            } else {
                Awaiting::Rec
            };
            self.persist_delivery(
                routed.store_id,
                |message_id| PersistOp::Sent {
                    message_id,
                    packet_id,
                    awaiting,
                },
                out,
            );
            outgoing(&mut self.outgoing).inflight.push_back(InFlight {
                packet_id,
                routed,
                awaiting,
            });
        } else {
            self.done(&routed, out);
        }
    }

    /// A persisted delivery is over.
    fn done(&self, routed: &Routed, out: &mut Vec<Output>) {
        self.persist_delivery(
            routed.store_id,
            |message_id| PersistOp::Done { message_id },
            out,
        );
    }

    /// Writes one PUBLISH; false when it was dropped for the client's packet size limit
    /// (which the spec treats as delivered [MQTT-3.1.2-25]).
    fn transmit(
        &mut self,
        now: Instant,
        routed: &Routed,
        packet_id: Option<PacketId>,
        out: &mut Vec<Output>,
    ) -> bool {
        let mut publish = self.build_publish(now, routed, packet_id, false);
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if let Some(max) = conn.max_packet_size {
            let packet = Packet::Publish(publish);
            if encoded_len(&packet, self.protocol) > max as usize {
                out.push(Output::Dropped(DropReason::TooLarge));
                return false;
            }
            let Packet::Publish(p) = packet else {
                unreachable!()
            };
            publish = p;
        }
        // Aliases are assigned after the size check (with the full topic, the larger form)
        // so the client never misses the packet that defines an alias.
        if conn.alias_max_out > 0 {
            let aliases = &mut conn.aliases.get_or_insert_with(Default::default).out;
            if let Some(alias) = aliases.get(&publish.topic) {
                publish.properties.topic_alias = Some(*alias);
                publish.topic = bytestring::ByteString::new();
            } else if aliases.len() < usize::from(conn.alias_max_out) {
                let n = u16::try_from(aliases.len() + 1).unwrap_or(u16::MAX);
                let alias = NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN);
                aliases.insert(publish.topic.clone(), alias);
                publish.properties.topic_alias = Some(alias);
            }
        }
        out.push(Output::Send(Packet::Publish(publish)));
        true
    }

    fn build_publish(
        &self,
        now: Instant,
        routed: &Routed,
        packet_id: Option<PacketId>,
        dup: bool,
    ) -> Publish {
        let m = &routed.message;
        let properties = if self.protocol.is_v5() {
            let mut p = m.properties.clone();
            p.message_expiry_interval = m.remaining_expiry(now);
            p.subscription_identifiers
                .clone_from(&routed.subscription_ids);
            p
        } else {
            Default::default()
        };
        Publish {
            dup,
            qos: routed.qos,
            retain: routed.retain,
            topic: m.topic.clone(),
            packet_id,
            properties,
            payload: m.payload.clone(),
        }
    }

    /// PUBACK (for QoS 1) or PUBCOMP (for QoS 2) from the client.
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        id: PacketId,
        expected: Awaiting,
        _reason: ReasonCode,
        out: &mut Vec<Output>,
    ) {
        let Some(o) = self.outgoing.as_mut() else {
            return;
        };
        if let Some(i) = o.inflight.position(id, |f| f.awaiting == expected) {
            if let Some(f) = o.inflight.remove(i) {
                self.done(&f.routed, out);
            }
            self.drain_queue(now, out);
        }
    }

    pub(super) fn on_pubrec(&mut self, now: Instant, r: PubRec, out: &mut Vec<Output>) {
        let found = self.outgoing.as_mut().and_then(|o| {
            let i = o
                .inflight
                .position(r.packet_id, |f| f.awaiting != Awaiting::Ack)?;
            Some((o, i))
        });
        let Some((o, i)) = found else {
            if self.protocol.is_v5() {
                let mut rel = thingmq_codec::PubRel::new(r.packet_id);
                rel.reason = ReasonCode::PacketIdentifierNotFound;
                out.push(Output::Send(Packet::PubRel(rel)));
            }
            return;
        };
        if !r.reason.is_success() {
            // The client refused the message: the exchange is over [MQTT-4.3.3-4].
            if let Some(f) = o.inflight.remove(i) {
                self.done(&f.routed, out);
            }
            self.drain_queue(now, out);
            return;
        }
        let Some(f) = o.inflight.get_mut(i) else {
            return;
        };
        f.awaiting = Awaiting::Comp;
        let store_id = f.routed.store_id;
        self.persist_delivery(
            store_id,
            |message_id| PersistOp::Sent {
                message_id,
                packet_id: r.packet_id,
                awaiting: Awaiting::Comp,
            },
            out,
        );
        out.push(Output::Send(pubrel(r.packet_id)));
    }

    /// After a reconnect with a present session: resend unacknowledged PUBLISHes with DUP
    /// and PUBRELs in their original order [MQTT-4.4.0-1], then the queue. All of them are
    /// resent even if the client now announces a smaller Receive Maximum: they were already
    /// in flight.
    pub(super) fn resend(&mut self, now: Instant, out: &mut Vec<Output>) {
        let max = self.conn.as_ref().and_then(|c| c.max_packet_size);
        let pending = self
            .outgoing
            .as_mut()
            .map(|o| o.inflight.take_all())
            .unwrap_or_default();
        for f in pending {
            if f.awaiting == Awaiting::Comp {
                out.push(Output::Send(pubrel(f.packet_id)));
                outgoing(&mut self.outgoing).inflight.push_back(f);
                continue;
            }
            let publish = self.build_publish(now, &f.routed, Some(f.packet_id), true);
            let packet = Packet::Publish(publish);
            if max.is_some_and(|m| encoded_len(&packet, self.protocol) > m as usize) {
                // Too large for the new connection: treated as delivered [MQTT-3.1.2-25].
                self.done(&f.routed, out);
                out.push(Output::Dropped(DropReason::TooLarge));
                continue;
            }
            out.push(Output::Send(packet));
            outgoing(&mut self.outgoing).inflight.push_back(f);
        }
        self.drain_queue(now, out);
    }
}
