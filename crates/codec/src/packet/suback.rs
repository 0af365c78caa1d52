//! SUBACK (3.1.1 §3.9, 5.0 §3.9).

use super::UserProperty;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: SubAckProperties,
    /// Granted QoS 0/1/2 or an error code. On v3.1.1 every error is encoded as 0x80; on v3.1
    /// (which has no failure code) as the QoS 0 grant is not correct either, so 0x80 is used too.
    pub reasons: Vec<ReasonCode>,
}

/// SUBACK properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAckProperties {
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Reason codes a v5 SUBACK may carry (5.0 §3.9.3).
const REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];

/// Return codes of a v3.1.1 SUBACK (§3.9.3): granted QoS 0, 1, 2 or failure.
const V3_REASONS: &[u8] = &[0x00, 0x01, 0x02, 0x80];

impl SubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let (properties, allowed) = if version.is_v5() {
            (properties::read(&mut r)?, REASONS)
        } else {
            (SubAckProperties::default(), V3_REASONS)
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reasons.push(super::reason_in(r.u8()?, allowed)?);
        }
        Ok(SubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            properties::encoded_len(&self.properties)
        } else {
            0
        };
        2 + props + self.reasons.len()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            properties::write(&self.properties, buf)?;
        }
        for reason in &self.reasons {
            let b = reason.as_u8();
            // v3 has one failure code; every v5 error collapses into it.
            buf.put_u8(if !version.is_v5() && b >= 0x80 {
                0x80
            } else {
                b
            });
        }
        Ok(())
    }
}

impl PropertySet for SubAckProperties {
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

    fn suback(reasons: Vec<ReasonCode>) -> Packet {
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: SubAckProperties::default(),
            reasons,
        })
    }

    #[test]
    fn v311_suback_granted_and_failure() {
        both_ways(
            suback(vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ]),
            V4,
            &[
                0x90, // SUBACK
                0x06, // remaining length 6
                0x00, 0x01, // packet id 1
                0x00, // granted QoS 0
                0x01, // granted QoS 1
                0x02, // granted QoS 2
                0x80, // failure
            ],
        );
    }

    #[test]
    fn v311_suback_collapses_v5_errors_into_0x80() {
        assert_eq!(
            enc(&suback(vec![ReasonCode::NotAuthorized]), V4),
            [
                0x90, // SUBACK
                0x03, // remaining length 3
                0x00, 0x01, // packet id 1
                0x80, // failure (was 0x87 not authorized)
            ]
        );
    }

    #[test]
    fn v311_suback_return_code_3_is_rejected() {
        let wire = [
            0x90, // SUBACK
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x03, // not a return code
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::InvalidReasonCode(3)));
        let v5_code_on_v3 = [
            0x90, // SUBACK
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x87, // not authorized: v5 only
        ];
        assert_eq!(
            dec(&v5_code_on_v3, V4),
            Err(DecodeError::InvalidReasonCode(0x87))
        );
    }

    #[test]
    fn v5_suback_with_reason_string() {
        let p = Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: SubAckProperties {
                reason_string: Some("r".into()),
                user_properties: vec![],
            },
            reasons: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
        });
        both_ways(
            p,
            V5,
            &[
                0x90, // SUBACK
                0x09, // remaining length 9
                0x00, 0x01, // packet id 1
                0x04, // property length 4
                0x1F, 0x00, 0x01, b'r', // reason string "r"
                0x01, // granted QoS 1
                0xA2, // wildcard subscriptions not supported
            ],
        );
    }

    #[test]
    fn v5_suback_rejects_a_reason_not_for_suback() {
        let wire = [
            0x90, // SUBACK
            0x04, // remaining length 4
            0x00, 0x01, // packet id 1
            0x00, // property length 0
            0x11, // no subscription existed: UNSUBACK only
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x11)));
    }

    #[test]
    fn suback_reserved_flags_are_rejected() {
        let wire = [
            0x92, // SUBACK with flag bit 1 set
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x00, // granted QoS 0
        ];
        assert_eq!(
            dec(&wire, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 9, flags: 2 })
        );
    }
}
