//! Messages from the client: PUBLISH (topic aliases, flow control, QoS 2 exactly-once
//! receive), the acknowledgements we owe, and PUBREL.

use super::{Output, PendingAck, Session};
use crate::{Message, TravellingProperties, Violation};
use std::sync::Arc;
use std::time::Instant;
use thingmq_codec::topic::validate_name;
use thingmq_codec::{Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode};

impl Session {
    pub(super) fn on_publish(
        &mut self,
        now: Instant,
        mut p: Publish,
        out: &mut Vec<Output>,
    ) -> Result<(), Violation> {
        let s = self.settings.clone();
        if p.qos > s.max_qos {
            return Err(Violation::Mqtt_3_2_2_11);
        }
        if p.retain && !s.retain_available {
            return Err(Violation::Mqtt_3_2_2_14);
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Violation::Mqtt_3_3_4_6);
        }
        self.resolve_topic_alias(&mut p)?;
        validate_name(&p.topic).map_err(|_| Violation::Mqtt_3_3_2_2)?;
        if too_deep(&p.topic, s.max_topic_levels) {
            return Err(Violation::Mqtt_3_3_2_2);
        }

        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            if let Some(&routed) = self.qos2_received.get(&id) {
                // A resend of a message we already took: never route it twice [MQTT-4.3.3-10].
                if routed {
                    out.push(Output::Send(Packet::PubRec(PubRec::new(id))));
                }
                return Ok(());
            }
        }
        if p.qos > QoS::AtMostOnce
            && self.protocol.is_v5()
            && self.qos1_unacked as usize + self.qos2_received.len()
                >= usize::from(s.receive_maximum)
        {
            return Err(Violation::Mqtt_3_3_4_7);
        }
        // The acknowledgement of a QoS 1 PUBLISH is owed until publish_done: counted so a
        // future asynchronous persist step keeps Receive Maximum honest.
        let ack = p.packet_id.map(|packet_id| PendingAck {
            packet_id,
            qos: p.qos,
        });
        // Reject before routing, answering on the ack when there is one.
        let refusal = if p.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
        {
            Some(ReasonCode::PayloadFormatInvalid)
        } else if Message::is_reserved_topic(&p.topic) {
            Some(ReasonCode::NotAuthorized)
        } else if !self.policy.can_publish(&p.topic) {
            // v5 says why in the ack; v3 has no way to, and the message is dropped silently.
            out.push(Output::Denied {
                action: "publish",
                topic: p.topic.clone(),
            });
            Some(ReasonCode::NotAuthorized)
        } else {
            None
        };
        match ack {
            Some(a) if a.qos == QoS::ExactlyOnce => {
                self.qos2_received.insert(a.packet_id, false);
            }
            Some(_) => self.qos1_unacked = self.qos1_unacked.saturating_add(1),
            None => {}
        }
        if let Some(code) = refusal {
            if let Some(a) = ack {
                self.publish_done(a, code, out);
            }
            return Ok(());
        }
        let pp = p.properties;
        let travelling = TravellingProperties {
            payload_format_indicator: pp.payload_format_indicator,
            message_expiry_interval: pp.message_expiry_interval,
            content_type: pp.content_type,
            response_topic: pp.response_topic,
            correlation_data: pp.correlation_data,
            user_properties: pp.user_properties,
        };
        let message = Message::new(now, p.topic, p.payload, p.qos, p.retain, travelling);
        out.push(Output::Publish {
            message: Arc::new(message),
            ack,
        });
        Ok(())
    }

    /// The message of a QoS 1/2 PUBLISH was routed (and persisted): acknowledge it with
    /// `reason` (Success, No matching subscribers, or a refusal such as Not authorized).
    pub fn publish_done(&mut self, ack: PendingAck, reason: ReasonCode, out: &mut Vec<Output>) {
        let reason = if self.protocol.is_v5() {
            reason
        } else {
            ReasonCode::Success
        };
        let packet = match ack.qos {
            QoS::AtLeastOnce => {
                self.qos1_unacked = self.qos1_unacked.saturating_sub(1);
                let mut a = PubAck::new(ack.packet_id);
                a.reason = reason;
                Packet::PubAck(a)
            }
            _ => {
                if reason.is_success() {
                    self.qos2_received.insert(ack.packet_id, true);
                } else {
                    // A failed PUBREC ends the exchange; the id is free again.
                    self.qos2_received.remove(&ack.packet_id);
                }
                let mut r = PubRec::new(ack.packet_id);
                r.reason = reason;
                Packet::PubRec(r)
            }
        };
        if self.conn.is_some() {
            out.push(Output::Send(packet));
        }
    }

    pub(super) fn on_pubrel(&mut self, r: PubRel, out: &mut Vec<Output>) {
        let mut comp = PubComp::new(r.packet_id);
        if self.qos2_received.remove(&r.packet_id).is_some() {
            if self.persists() {
                out.push(Output::Persist(super::PersistOp::Released {
                    packet_id: r.packet_id,
                }));
            }
        } else if self.protocol.is_v5() {
            comp.reason = ReasonCode::PacketIdentifierNotFound;
        }
        out.push(Output::Send(Packet::PubComp(comp)));
    }

    fn resolve_topic_alias(&mut self, p: &mut Publish) -> Result<(), Violation> {
        let max = self.settings.topic_alias_maximum;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        match p.properties.topic_alias.take() {
            Some(alias) if alias.get() > max => Err(Violation::Mqtt_3_3_2_9),
            Some(alias) if p.topic.is_empty() => {
                p.topic = conn
                    .aliases
                    .as_ref()
                    .and_then(|a| a.inbound.get(&alias.get()))
                    .cloned()
                    .ok_or(Violation::UnknownTopicAlias)?;
                Ok(())
            }
            Some(alias) => {
                // Validated by the caller before it is used.
                conn.aliases
                    .get_or_insert_with(Default::default)
                    .inbound
                    .insert(alias.get(), p.topic.clone());
                Ok(())
            }
            None if p.topic.is_empty() => Err(Violation::UnknownTopicAlias),
            None => Ok(()),
        }
    }
}

/// True when a topic has more than `max` levels.
pub(super) fn too_deep(topic: &str, max: usize) -> bool {
    topic.bytes().filter(|&b| b == b'/').count() >= max
}

/// Builds the PUBREL for a PUBREC we accepted.
pub(super) fn pubrel(id: thingmq_codec::PacketId) -> Packet {
    Packet::PubRel(PubRel::new(id))
}
