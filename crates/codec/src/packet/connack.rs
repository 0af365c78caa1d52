//! CONNACK (3.1.1 §3.2, 5.0 §3.2).

use super::UserProperty;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, ReasonCode};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::num::{NonZeroU16, NonZeroU32};

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// v5 Connect Reason Code. On v3 it is mapped to the nearest v3 return code on encode
    /// (see [`ReasonCode::to_v3_connack`]) and back on decode.
    pub code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

/// CONNACK properties (MQTT 5 §3.2.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    /// Session Expiry Interval (0x11) the server uses, if different from the client's.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21) of the server.
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum QoS (0x24) the server supports (only 0 or 1 are sent).
    pub maximum_qos: Option<QoS>,
    /// Retain Available (0x25).
    pub retain_available: Option<bool>,
    /// Maximum Packet Size (0x27) the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_identifier: Option<ByteString>,
    /// Topic Alias Maximum (0x22) the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifiers Available (0x29).
    pub subscription_identifiers_available: Option<bool>,
    /// Shared Subscription Available (0x2A).
    pub shared_subscription_available: Option<bool>,
    /// Server Keep Alive (0x13), overriding the client's keep alive.
    pub server_keep_alive: Option<u16>,
    /// Response Information (0x1A).
    pub response_information: Option<ByteString>,
    /// Server Reference (0x1C).
    pub server_reference: Option<ByteString>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<ByteString>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
}

/// Connect Reason Codes (5.0 §3.2.2.2).
const REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

impl ConnAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::Mqtt_3_2_2_1);
        }
        let b = r.u8()?;
        let (code, properties) = if version.is_v5() {
            (super::reason_in(b, REASONS)?, properties::read(&mut r)?)
        } else {
            let code = ReasonCode::from_v3_connack(b).ok_or(DecodeError::InvalidReasonCode(b))?;
            (code, ConnAckProperties::default())
        };
        r.finish()?;
        Ok(ConnAck {
            session_present: flags & 1 == 1,
            code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + properties::encoded_len(&self.properties)
        } else {
            2
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u8(u8::from(self.session_present));
        if version.is_v5() {
            buf.put_u8(self.code.as_u8());
            properties::write(&self.properties, buf)
        } else {
            buf.put_u8(self.code.to_v3_connack());
            Ok(())
        }
    }
}

impl PropertySet for ConnAckProperties {
    const ALLOWED: u64 = mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        id::SERVER_KEEP_ALIVE,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::RESPONSE_INFORMATION,
        id::SERVER_REFERENCE,
        id::REASON_STRING,
        id::RECEIVE_MAXIMUM,
        id::TOPIC_ALIAS_MAXIMUM,
        id::MAXIMUM_QOS,
        id::RETAIN_AVAILABLE,
        id::USER_PROPERTY,
        id::MAXIMUM_PACKET_SIZE,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
    ]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => self.session_expiry_interval = Some(v),
            (id::ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v)) => {
                self.assigned_client_identifier = Some(v)
            }
            (id::SERVER_KEEP_ALIVE, Value::U16(v)) => self.server_keep_alive = Some(v),
            (id::AUTHENTICATION_METHOD, Value::Str(v)) => self.authentication_method = Some(v),
            (id::AUTHENTICATION_DATA, Value::Bin(v)) => self.authentication_data = Some(v),
            (id::RESPONSE_INFORMATION, Value::Str(v)) => self.response_information = Some(v),
            (id::SERVER_REFERENCE, Value::Str(v)) => self.server_reference = Some(v),
            (id::REASON_STRING, Value::Str(v)) => self.reason_string = Some(v),
            (id::RECEIVE_MAXIMUM, Value::NonZeroU16(v)) => self.receive_maximum = Some(v),
            (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => self.topic_alias_maximum = Some(v),
            (id::MAXIMUM_QOS, Value::Qos(v)) => self.maximum_qos = Some(v),
            (id::RETAIN_AVAILABLE, Value::Bool(v)) => self.retain_available = Some(v),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            (id::MAXIMUM_PACKET_SIZE, Value::NonZeroU32(v)) => self.maximum_packet_size = Some(v),
            (id::WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Bool(v)) => {
                self.wildcard_subscription_available = Some(v)
            }
            (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Bool(v)) => {
                self.subscription_identifiers_available = Some(v)
            }
            (id::SHARED_SUBSCRIPTION_AVAILABLE, Value::Bool(v)) => {
                self.shared_subscription_available = Some(v)
            }
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_str(
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_ref(),
        );
        s.opt_u16(id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        s.opt_str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        s.opt_bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
        s.opt_str(id::RESPONSE_INFORMATION, self.response_information.as_ref());
        s.opt_str(id::SERVER_REFERENCE, self.server_reference.as_ref());
        s.opt_str(id::REASON_STRING, self.reason_string.as_ref());
        s.opt_u16(id::RECEIVE_MAXIMUM, self.receive_maximum.map(|v| v.get()));
        s.opt_u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        // Absent Maximum QoS means 2, and sending 2 is a Protocol Error [MQTT-3.2.2-9], so
        // QoS 2 is expressed by leaving the property out.
        match self.maximum_qos {
            Some(QoS::ExactlyOnce) | None => {}
            Some(q) => s.byte(id::MAXIMUM_QOS, q as u8),
        }
        s.opt_bool(id::RETAIN_AVAILABLE, self.retain_available);
        s.opt_u32(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(|v| v.get()),
        );
        s.opt_bool(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        s.opt_bool(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        s.opt_bool(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;
    use std::num::{NonZeroU16, NonZeroU32};

    fn connack(session_present: bool, code: ReasonCode) -> Packet {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties: ConnAckProperties::default(),
        })
    }

    #[test]
    fn v311_connack_accepted() {
        both_ways(
            connack(false, ReasonCode::Success),
            V4,
            &[
                0x20, // CONNACK
                0x02, // remaining length 2
                0x00, // acknowledge flags: no session present
                0x00, // return code 0: accepted
            ],
        );
    }

    #[test]
    fn v311_connack_maps_reasons_to_return_codes() {
        both_ways(
            connack(false, ReasonCode::BadUserNameOrPassword),
            V4,
            &[
                0x20, // CONNACK
                0x02, // remaining length 2
                0x00, // acknowledge flags
                0x04, // return code 4: bad user name or password
            ],
        );
        // A v5-only reason has no v3 code of its own: it becomes "server unavailable".
        assert_eq!(
            enc(&connack(false, ReasonCode::ServerBusy), V3),
            [
                0x20, // CONNACK
                0x02, // remaining length 2
                0x00, // acknowledge flags
                0x03, // return code 3: server unavailable
            ]
        );
    }

    #[test]
    fn v311_connack_with_session_present() {
        both_ways(
            connack(true, ReasonCode::Success),
            V4,
            &[
                0x20, // CONNACK
                0x02, // remaining length 2
                0x01, // acknowledge flags: session present
                0x00, // accepted
            ],
        );
    }

    #[test]
    fn v311_connack_return_code_6_is_rejected() {
        let wire = [
            0x20, // CONNACK
            0x02, // remaining length 2
            0x00, // acknowledge flags
            0x06, // return code 6: reserved
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::InvalidReasonCode(6)));
    }

    #[test]
    fn connack_reserved_acknowledge_flags_are_rejected() {
        let wire = [
            0x20, // CONNACK
            0x02, // remaining length 2
            0x02, // acknowledge flags: reserved bit 1 set
            0x00, // accepted
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_3_2_2_1));
    }

    #[test]
    fn v5_connack_without_properties() {
        both_ways(
            connack(false, ReasonCode::Success),
            V5,
            &[
                0x20, // CONNACK
                0x03, // remaining length 3
                0x00, // acknowledge flags
                0x00, // reason: success
                0x00, // property length 0
            ],
        );
    }

    #[test]
    fn v5_connack_with_properties() {
        let p = Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                receive_maximum: NonZeroU16::new(10),
                maximum_qos: Some(QoS::AtLeastOnce),
                maximum_packet_size: NonZeroU32::new(1024),
                assigned_client_identifier: Some("c1".into()),
                shared_subscription_available: Some(false),
                ..Default::default()
            },
        });
        both_ways(
            p,
            V5,
            &[
                0x20, // CONNACK
                0x14, // remaining length 20
                0x01, // acknowledge flags: session present
                0x00, // reason: success
                0x11, // property length 17
                0x12, 0x00, 0x02, b'c', b'1', // assigned client identifier "c1"
                0x21, 0x00, 0x0A, // receive maximum 10
                0x24, 0x01, // maximum QoS 1
                0x27, 0x00, 0x00, 0x04, 0x00, // maximum packet size 1024
                0x2A, 0x00, // shared subscription available: false
            ],
        );
    }

    #[test]
    fn v5_connack_maximum_qos_2_is_sent_as_absent() {
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                maximum_qos: Some(QoS::ExactlyOnce),
                ..Default::default()
            },
        });
        assert_eq!(
            enc(&p, V5),
            [
                0x20, // CONNACK
                0x03, // remaining length 3
                0x00, // acknowledge flags
                0x00, // reason: success
                0x00, // property length 0: no Maximum QoS means 2
            ]
        );
    }

    #[test]
    fn v5_connack_invalid_property_values_are_rejected() {
        let max_qos_2 = [
            0x20, // CONNACK
            0x05, // remaining length 5
            0x00, // acknowledge flags
            0x00, // reason: success
            0x02, // property length 2
            0x24, 0x02, // maximum QoS 2: not allowed
        ];
        assert_eq!(
            dec(&max_qos_2, V5),
            Err(DecodeError::InvalidPropertyValue(0x24))
        );
        let receive_max_0 = [
            0x20, // CONNACK
            0x06, // remaining length 6
            0x00, // acknowledge flags
            0x00, // reason: success
            0x03, // property length 3
            0x21, 0x00, 0x00, // receive maximum 0
        ];
        assert_eq!(
            dec(&receive_max_0, V5),
            Err(DecodeError::InvalidPropertyValue(0x21))
        );
        let retain_available_2 = [
            0x20, // CONNACK
            0x05, // remaining length 5
            0x00, // acknowledge flags
            0x00, // reason: success
            0x02, // property length 2
            0x25, 0x02, // retain available 2: booleans are 0 or 1
        ];
        assert_eq!(
            dec(&retain_available_2, V5),
            Err(DecodeError::InvalidPropertyValue(0x25))
        );
    }

    #[test]
    fn v5_connack_rejects_a_publish_only_reason() {
        let wire = [
            0x20, // CONNACK
            0x03, // remaining length 3
            0x00, // acknowledge flags
            0x10, // no matching subscribers: not a connect reason code
            0x00, // property length 0
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x10)));
    }

    #[test]
    fn v5_connack_duplicate_property_is_rejected() {
        let wire = [
            0x20, // CONNACK
            0x09, // remaining length 9
            0x00, // acknowledge flags
            0x00, // reason: success
            0x06, // property length 6
            0x13, 0x00, 0x0A, // server keep alive 10
            0x13, 0x00, 0x14, // server keep alive 20: duplicate
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x13)));
    }

    #[test]
    fn v311_connack_with_trailing_bytes_is_rejected() {
        let wire = [
            0x20, // CONNACK
            0x03, // remaining length 3
            0x00, // acknowledge flags
            0x00, // accepted
            0x00, // extra byte
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }
}
