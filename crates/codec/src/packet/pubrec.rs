//! PUBREC (3.1.1 §3.5, 5.0 §3.5).

use super::AckProperties;
use crate::primitives::Reader;
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::BytesMut;

/// PUBREC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRec {
    /// Packet Identifier of the PUBLISH (or PUBREL/PUBREC) this answers.
    pub packet_id: PacketId,
    /// Reason Code (MQTT 5); always [`ReasonCode::Success`] on v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubRec {
    /// A successful PubRec with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubRec {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// Reason codes a PUBREC may carry (5.0 §3.5.2.1).
const REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

impl PubRec {
    pub(crate) fn decode(r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (packet_id, reason, properties) = super::ack::decode(r, version, REASONS)?;
        Ok(PubRec {
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
    fn v311_pubrec_is_the_packet_id_only() {
        both_ways(
            Packet::PubRec(PubRec::new(pid(10))),
            V4,
            &[
                0x50, // PUBREC, flags 0
                0x02, // remaining length 2
                0x00, 0x0A, // packet id 10
            ],
        );
    }

    #[test]
    fn v5_pubrec_short_forms_and_full_form() {
        both_ways(
            Packet::PubRec(PubRec::new(pid(10))),
            V5,
            &[
                0x50, // PUBREC
                0x02, // remaining length 2: success, no properties
                0x00, 0x0A, // packet id 10
            ],
        );
        let mut rec = PubRec::new(pid(10));
        rec.reason = ReasonCode::PacketIdentifierInUse;
        both_ways(
            Packet::PubRec(rec.clone()),
            V5,
            &[
                0x50, // PUBREC
                0x03, // remaining length 3
                0x00, 0x0A, // packet id 10
                0x91, // reason: packet identifier in use
            ],
        );
        rec.properties.reason_string = Some("x".into());
        both_ways(
            Packet::PubRec(rec),
            V5,
            &[
                0x50, // PUBREC
                0x08, // remaining length 8
                0x00, 0x0A, // packet id 10
                0x91, // reason: packet identifier in use
                0x04, // property length 4
                0x1F, 0x00, 0x01, b'x', // reason string "x"
            ],
        );
    }

    #[test]
    fn pubrec_rejects_reserved_flags_and_unknown_reasons() {
        // PUBREC with the PUBREL flag pattern, packet id 1
        let flags = [0x52, 0x02, 0x00, 0x01];
        assert_eq!(
            dec(&flags, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 5, flags: 2 })
        );
        // PUBREC, remaining length 3, packet id 1, reason 0x03 (not a reason code)
        let reason = [0x50, 0x03, 0x00, 0x01, 0x03];
        assert_eq!(dec(&reason, V5), Err(DecodeError::InvalidReasonCode(0x03)));
    }

    #[test]
    fn pubrec_property_not_allowed_is_rejected() {
        let wire = [
            0x50, // PUBREC
            0x06, // remaining length 6
            0x00, 0x01, // packet id 1
            0x00, // reason: success
            0x02, // property length 2
            0x01, 0x01, // payload format indicator: a PUBLISH property
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidProperty(0x01)));
    }
}
