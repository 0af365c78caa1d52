//! DISCONNECT (3.1.1 §3.14, 5.0 §3.14).

use super::UserProperty;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

/// DISCONNECT; in v5 it may be sent by either side and carries a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason Code (v5); Normal disconnection on v3.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// DISCONNECT properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// Session Expiry Interval (0x11), client to server only.
    pub session_expiry_interval: Option<u32>,
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Server Reference (0x1C).
    pub server_reference: Option<ByteString>,
}

impl Disconnect {
    /// A DISCONNECT with the given reason and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }
}

/// Disconnect Reason Codes (5.0 §3.14.2.1).
const REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

impl Disconnect {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut d = Disconnect::new(ReasonCode::Success);
        // Remaining Length 0 means Normal disconnection without properties (§3.14.2.1);
        // 1 means a reason code without properties (§3.14.2.2.1).
        if version.is_v5() && !r.is_empty() {
            d.reason = super::reason_in(r.u8()?, REASONS)?;
            if !r.is_empty() {
                d.properties = properties::read(&mut r)?;
            }
        }
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 0;
        }
        // Only the normal disconnection uses the short form. With a reason code the property
        // length is always written, although the spec lets it be left out: several client
        // libraries (rumqttc 0.24, paho-mqtt 2.1) misread a DISCONNECT without it.
        match (self.reason, properties::content_len(&self.properties)) {
            (ReasonCode::Success, 0) => 0,
            _ => 1 + properties::encoded_len(&self.properties),
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match self.body_len(version) {
            0 => Ok(()),
            _ => {
                buf.put_u8(self.reason.as_u8());
                properties::write(&self.properties, buf)
            }
        }
    }
}

impl PropertySet for DisconnectProperties {
    const ALLOWED: u64 = mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::SERVER_REFERENCE,
        id::REASON_STRING,
        id::USER_PROPERTY,
    ]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => self.session_expiry_interval = Some(v),
            (id::SERVER_REFERENCE, Value::Str(v)) => self.server_reference = Some(v),
            (id::REASON_STRING, Value::Str(v)) => self.reason_string = Some(v),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_str(id::SERVER_REFERENCE, self.server_reference.as_ref());
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
    fn v311_disconnect_is_two_bytes() {
        both_ways(
            Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
            V4,
            &[
                0xE0, // DISCONNECT
                0x00, // remaining length 0
            ],
        );
    }

    #[test]
    fn v311_disconnect_drops_the_reason() {
        let mut d = Disconnect::new(ReasonCode::ServerShuttingDown);
        d.properties.reason_string = Some("bye".into());
        assert_eq!(
            enc(&Packet::Disconnect(d), V3),
            [
                0xE0, // DISCONNECT
                0x00, // remaining length 0
            ]
        );
    }

    #[test]
    fn v311_disconnect_with_a_body_is_rejected() {
        let wire = [
            0xE0, // DISCONNECT
            0x01, // remaining length 1
            0x00, // a reason code v3.1.1 does not have
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn v5_normal_disconnect_uses_the_empty_form() {
        both_ways(
            Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
            V5,
            &[
                0xE0, // DISCONNECT
                0x00, // remaining length 0: normal disconnection, no properties
            ],
        );
    }

    #[test]
    fn v5_disconnect_with_reason_only() {
        both_ways(
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
            V5,
            &[
                0xE0, // DISCONNECT
                0x02, // remaining length 2
                0x04, // disconnect with will message
                0x00, // property length 0, written for clients that need it
            ],
        );
    }

    #[test]
    fn v5_disconnect_short_form_without_property_length_is_accepted() {
        let wire = [
            0xE0, // DISCONNECT
            0x01, // remaining length 1
            0x8E, // session taken over, property length omitted (§3.14.2.2.1)
        ];
        let expected = Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver));
        assert_eq!(dec(&wire, V5), Ok(Some(expected)));
    }

    #[test]
    fn v5_disconnect_with_properties() {
        let mut d = Disconnect::new(ReasonCode::Success);
        d.properties.session_expiry_interval = Some(0);
        d.properties.server_reference = Some("s".into());
        both_ways(
            Packet::Disconnect(d),
            V5,
            &[
                0xE0, // DISCONNECT
                0x0B, // remaining length 11
                0x00, // normal disconnection
                0x09, // property length 9
                0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
                0x1C, 0x00, 0x01, b's', // server reference "s"
            ],
        );
    }

    #[test]
    fn v5_disconnect_rejects_unknown_and_foreign_reasons() {
        let wire = [
            0xE0, // DISCONNECT
            0x01, // remaining length 1
            0x18, // continue authentication: AUTH only
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x18)));
    }

    #[test]
    fn v5_disconnect_duplicate_session_expiry_is_rejected() {
        let wire = [
            0xE0, // DISCONNECT
            0x0C, // remaining length 12
            0x00, // normal disconnection
            0x0A, // property length 10
            0x11, 0x00, 0x00, 0x00, 0x01, // session expiry interval 1
            0x11, 0x00, 0x00, 0x00, 0x02, // session expiry interval 2: duplicate
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x11)));
    }

    #[test]
    fn disconnect_reserved_flags_are_rejected() {
        let wire = [
            0xE8, // DISCONNECT with flag bit 3 set
            0x00, // remaining length 0
        ];
        assert_eq!(
            dec(&wire, V5),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 14, flags: 8 })
        );
    }
}
