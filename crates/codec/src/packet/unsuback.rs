//! UNSUBACK (3.1.1 §3.11, 5.0 §3.11).

use super::UserProperty;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: UnsubAckProperties,
    /// One reason code per filter (MQTT 5 only; empty and not encoded on v3).
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBACK properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAckProperties {
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Reason codes a v5 UNSUBACK may carry (5.0 §3.11.3).
const REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

impl UnsubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let mut properties = UnsubAckProperties::default();
        let mut reasons = Vec::new();
        if version.is_v5() {
            properties = properties::read(&mut r)?;
            while !r.is_empty() {
                reasons.push(super::reason_in(r.u8()?, REASONS)?);
            }
        }
        r.finish()?;
        Ok(UnsubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + properties::encoded_len(&self.properties) + self.reasons.len()
        } else {
            2
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            properties::write(&self.properties, buf)?;
            for reason in &self.reasons {
                buf.put_u8(reason.as_u8());
            }
        }
        Ok(())
    }
}

impl PropertySet for UnsubAckProperties {
    const ALLOWED: u64 = mask(&[id::REASON_STRING, id::USER_PROPERTY]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::REASON_STRING, Value::Str(s)) => self.reason_string = Some(s),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_str(id::REASON_STRING, self.reason_string.as_ref());
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    #[test]
    fn v311_unsuback_is_the_packet_id_only() {
        both_ways(
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(7),
                properties: UnsubAckProperties::default(),
                reasons: vec![],
            }),
            V4,
            &[
                0xB0, // UNSUBACK
                0x02, // remaining length 2
                0x00, 0x07, // packet id 7
            ],
        );
    }

    #[test]
    fn v311_unsuback_leaves_reasons_out() {
        let p = Packet::UnsubAck(UnsubAck {
            packet_id: pid(7),
            properties: UnsubAckProperties::default(),
            reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        });
        assert_eq!(
            enc(&p, V4),
            [
                0xB0, // UNSUBACK
                0x02, // remaining length 2
                0x00, 0x07, // packet id 7; no reason codes on v3.1.1
            ]
        );
    }

    #[test]
    fn v5_unsuback_with_reasons() {
        both_ways(
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(7),
                properties: UnsubAckProperties::default(),
                reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            }),
            V5,
            &[
                0xB0, // UNSUBACK
                0x05, // remaining length 5
                0x00, 0x07, // packet id 7
                0x00, // property length 0
                0x00, // success
                0x11, // no subscription existed
            ],
        );
    }

    #[test]
    fn v5_unsuback_rejects_granted_qos_1() {
        let wire = [
            0xB0, // UNSUBACK
            0x04, // remaining length 4
            0x00, 0x07, // packet id 7
            0x00, // property length 0
            0x01, // granted QoS 1: SUBACK only
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x01)));
    }

    #[test]
    fn v311_unsuback_with_trailing_bytes_is_rejected() {
        let wire = [
            0xB0, // UNSUBACK
            0x03, // remaining length 3
            0x00, 0x07, // packet id 7
            0x00, // extra byte
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }
}
