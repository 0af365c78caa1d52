//! PUBREL (3.1.1 §3.6, 5.0 §3.6).

use super::AckProperties;
use crate::primitives::Reader;
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::BytesMut;

/// PUBREL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRel {
    /// Packet Identifier of the PUBLISH (or PUBREL/PUBREC) this answers.
    pub packet_id: PacketId,
    /// Reason Code (MQTT 5); always [`ReasonCode::Success`] on v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubRel {
    /// A successful PubRel with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubRel {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// Reason codes a PUBREL may carry (5.0 §3.6.2.1).
const REASONS: &[u8] = &[0x00, 0x92];

impl PubRel {
    pub(crate) fn decode(r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (packet_id, reason, properties) = super::ack::decode(r, version, REASONS)?;
        Ok(PubRel {
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
    fn v311_pubrel_carries_flags_0010() {
        both_ways(
            Packet::PubRel(PubRel::new(pid(1))),
            V4,
            &[
                0x62, // PUBREL, flags 0b0010 [MQTT-3.6.1-1]
                0x02, // remaining length 2
                0x00, 0x01, // packet id 1
            ],
        );
    }

    #[test]
    fn pubrel_with_flags_0000_is_rejected() {
        let wire = [
            0x60, // PUBREL with flags 0: reserved bits wrong
            0x02, // remaining length 2
            0x00, 0x01, // packet id 1
        ];
        assert_eq!(
            dec(&wire, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 6, flags: 0 })
        );
    }

    #[test]
    fn v5_pubrel_packet_identifier_not_found() {
        let mut rel = PubRel::new(pid(2));
        rel.reason = ReasonCode::PacketIdentifierNotFound;
        both_ways(
            Packet::PubRel(rel),
            V5,
            &[
                0x62, // PUBREL
                0x03, // remaining length 3
                0x00, 0x02, // packet id 2
                0x92, // reason: packet identifier not found
            ],
        );
    }

    #[test]
    fn v5_pubrel_rejects_a_puback_reason() {
        let wire = [
            0x62, // PUBREL
            0x03, // remaining length 3
            0x00, 0x02, // packet id 2
            0x10, // no matching subscribers: PUBACK/PUBREC only
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x10)));
    }

    #[test]
    fn v5_pubrel_trailing_bytes_after_properties_are_rejected() {
        let wire = [
            0x62, // PUBREL
            0x05, // remaining length 5
            0x00, 0x02, // packet id 2
            0x00, // reason: success
            0x00, // property length 0
            0xFF, // stray byte
        ];
        assert!(matches!(dec(&wire, V5), Err(DecodeError::Malformed(_))));
    }
}
