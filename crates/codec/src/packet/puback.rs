//! PUBACK (3.1.1 §3.4, 5.0 §3.4).

use super::AckProperties;
use crate::primitives::Reader;
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::BytesMut;

/// PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    /// Packet Identifier of the PUBLISH (or PUBREL/PUBREC) this answers.
    pub packet_id: PacketId,
    /// Reason Code (MQTT 5); always [`ReasonCode::Success`] on v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubAck {
    /// A successful PubAck with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubAck {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// Reason codes a PUBACK may carry (5.0 §3.4.2.1).
const REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

impl PubAck {
    pub(crate) fn decode(r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (packet_id, reason, properties) = super::ack::decode(r, version, REASONS)?;
        Ok(PubAck {
            packet_id,
            reason,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        super::ack::body_len(self.reason, &self.properties, version)
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        super::ack::encode(self.packet_id, self.reason, &self.properties, version, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    #[test]
    fn v311_puback_is_the_packet_id_only() {
        both_ways(
            Packet::PubAck(PubAck::new(pid(0x1234))),
            V4,
            &[
                0x40, // PUBACK, flags 0
                0x02, // remaining length 2
                0x12, 0x34, // packet id 0x1234
            ],
        );
    }

    #[test]
    fn v311_drops_v5_fields_on_encode() {
        let mut ack = PubAck::new(pid(1));
        ack.reason = ReasonCode::NotAuthorized;
        ack.properties.reason_string = Some("no".into());
        assert_eq!(
            enc(&Packet::PubAck(ack), V4),
            [
                0x40, // PUBACK
                0x02, // remaining length 2
                0x00, 0x01, // packet id 1
            ]
        );
    }

    #[test]
    fn v5_success_without_properties_uses_the_two_byte_form() {
        both_ways(
            Packet::PubAck(PubAck::new(pid(1))),
            V5,
            &[
                0x40, // PUBACK
                0x02, // remaining length 2: reason Success implied
                0x00, 0x01, // packet id 1
            ],
        );
    }

    #[test]
    fn v5_reason_without_properties_omits_the_property_length() {
        let mut ack = PubAck::new(pid(1));
        ack.reason = ReasonCode::NoMatchingSubscribers;
        both_ways(
            Packet::PubAck(ack),
            V5,
            &[
                0x40, // PUBACK
                0x03, // remaining length 3
                0x00, 0x01, // packet id 1
                0x10, // reason: no matching subscribers
            ],
        );
    }

    #[test]
    fn v5_puback_with_properties() {
        let mut ack = PubAck::new(pid(1));
        ack.reason = ReasonCode::QuotaExceeded;
        ack.properties.reason_string = Some("q".into());
        ack.properties
            .user_properties
            .push(("a".into(), "b".into()));
        both_ways(
            Packet::PubAck(ack),
            V5,
            &[
                0x40, // PUBACK
                0x0F, // remaining length 15
                0x00, 0x01, // packet id 1
                0x97, // reason: quota exceeded
                0x0B, // property length 11
                0x1F, 0x00, 0x01, b'q', // reason string "q"
                0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property a=b
            ],
        );
    }

    #[test]
    fn v5_success_with_an_empty_property_list_is_accepted() {
        let wire = [
            0x40, // PUBACK
            0x04, // remaining length 4
            0x00, 0x01, // packet id 1
            0x00, // reason: success
            0x00, // property length 0
        ];
        assert_eq!(
            dec(&wire, V5),
            Ok(Some(Packet::PubAck(PubAck::new(pid(1)))))
        );
    }

    #[test]
    fn reason_code_not_allowed_on_puback_is_rejected() {
        let wire = [
            0x40, // PUBACK
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x92, // packet identifier not found: a PUBREL/PUBCOMP code only
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x92)));
    }

    #[test]
    fn packet_id_zero_is_rejected() {
        let wire = [
            0x40, // PUBACK
            0x02, // remaining length 2
            0x00, 0x00, // packet id 0
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_2_2_1_3));
    }

    #[test]
    fn reserved_flags_are_rejected() {
        let wire = [
            0x42, // PUBACK with flag bit 1 set
            0x02, // remaining length 2
            0x00, 0x01, // packet id 1
        ];
        assert_eq!(
            dec(&wire, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 4, flags: 2 })
        );
    }

    #[test]
    fn v311_trailing_bytes_are_rejected() {
        let wire = [
            0x40, // PUBACK
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x00, // one byte too many for v3.1.1
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn missing_bytes_are_malformed_or_awaited() {
        let short = [
            0x40, // PUBACK
            0x01, // remaining length 1: no room for a packet id
            0x00, // half a packet id
        ];
        assert!(matches!(dec(&short, V4), Err(DecodeError::Malformed(_))));
        let incomplete = [
            0x40, // PUBACK
            0x02, // remaining length 2
            0x00, // only one of the two bytes has arrived
        ];
        assert_eq!(dec(&incomplete, V4), Ok(None));
    }

    #[test]
    fn v5_duplicate_reason_string_is_rejected() {
        let wire = [
            0x40, // PUBACK
            0x0C, // remaining length 12
            0x00, 0x01, // packet id 1
            0x80, // reason: unspecified error
            0x08, // property length 8
            0x1F, 0x00, 0x01, b'a', // reason string "a"
            0x1F, 0x00, 0x01, b'b', // reason string "b": duplicate
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x1F)));
    }
}
