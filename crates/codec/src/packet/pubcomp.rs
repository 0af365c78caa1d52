//! PUBCOMP (3.1.1 §3.7, 5.0 §3.7).

use super::AckProperties;
use crate::primitives::Reader;
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::BytesMut;

/// PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubComp {
    /// Packet Identifier of the PUBLISH (or PUBREL/PUBREC) this answers.
    pub packet_id: PacketId,
    /// Reason Code (MQTT 5); always [`ReasonCode::Success`] on v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubComp {
    /// A successful PubComp with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubComp {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// Reason codes a PUBCOMP may carry (5.0 §3.7.2.1).
const REASONS: &[u8] = &[0x00, 0x92];

impl PubComp {
    pub(crate) fn decode(r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (packet_id, reason, properties) = super::ack::decode(r, version, REASONS)?;
        Ok(PubComp {
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
    fn v311_pubcomp_is_the_packet_id_only() {
        both_ways(
            Packet::PubComp(PubComp::new(pid(0xFFFF))),
            V4,
            &[
                0x70, // PUBCOMP, flags 0
                0x02, // remaining length 2
                0xFF, 0xFF, // packet id 65535
            ],
        );
    }

    #[test]
    fn v5_pubcomp_with_user_property() {
        let mut comp = PubComp::new(pid(3));
        comp.properties
            .user_properties
            .push(("k".into(), "".into()));
        both_ways(
            Packet::PubComp(comp),
            V5,
            &[
                0x70, // PUBCOMP
                0x0A, // remaining length 10
                0x00, 0x03, // packet id 3
                0x00, // reason: success (needed because properties follow)
                0x06, // property length 6
                0x26, 0x00, 0x01, b'k', 0x00, 0x00, // user property k=""
            ],
        );
    }

    #[test]
    fn v5_pubcomp_with_truncated_properties_is_malformed() {
        let wire = [
            0x70, // PUBCOMP
            0x05, // remaining length 5
            0x00, 0x03, // packet id 3
            0x00, // reason: success
            0x05, // property length 5, but only one byte follows
            0x1F, // reason string id, value missing
        ];
        assert!(matches!(dec(&wire, V5), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn v5_pubcomp_reason_string_must_be_utf8_without_nul() {
        let wire = [
            0x70, // PUBCOMP
            0x09, // remaining length 9
            0x00, 0x03, // packet id 3
            0x00, // reason: success
            0x05, // property length 5
            0x1F, 0x00, 0x02, b'a', 0x00, // reason string "a\0"
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::Mqtt_1_5_4_1));
    }
}
