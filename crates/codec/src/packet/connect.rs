//! CONNECT (3.1 / 3.1.1 §3.1, 5.0 §3.1).

use super::UserProperty;
use crate::primitives::{field_len, put_binary, put_str, Reader};
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::num::{NonZeroU16, NonZeroU32};

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level (`MQIsdp`/3, `MQTT`/4, `MQTT`/5).
    pub protocol: ProtocolVersion,
    /// Clean Session (v3) / Clean Start (v5).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client Identifier; may be empty (the server then assigns one or refuses).
    pub client_id: ByteString,
    /// The Will Message, when the Will Flag is set.
    pub will: Option<LastWill>,
    /// User Name, when its flag is set.
    pub username: Option<ByteString>,
    /// Password, when its flag is set (binary data).
    pub password: Option<Bytes>,
    /// MQTT 5 properties (all default on v3).
    pub properties: ConnectProperties,
}

/// CONNECT properties (MQTT 5 §3.1.2.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// Session Expiry Interval (0x11), seconds; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21): how many QoS 1/2 publishes the client takes unacknowledged.
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum Packet Size (0x27) the client accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Topic Alias Maximum (0x22) the client accepts from the server.
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information (0x19).
    pub request_response_information: Option<bool>,
    /// Request Problem Information (0x17); absent means true.
    pub request_problem_information: Option<bool>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Authentication Method (0x15), for enhanced authentication.
    pub authentication_method: Option<ByteString>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
}

/// The Will Message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic (a topic name, no wildcards).
    pub topic: ByteString,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (MQTT 5).
    pub properties: WillProperties,
}

/// Will properties (MQTT 5 §3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// Will Delay Interval (0x18), seconds.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator (0x01): true = UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type (0x03).
    pub content_type: Option<ByteString>,
    /// Response Topic (0x08).
    pub response_topic: Option<ByteString>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Connect Flags bits (§3.1.2.3).
mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const CLEAN_START: u8 = 0x02;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USERNAME: u8 = 0x80;
}

fn protocol_name(v: ProtocolVersion) -> &'static [u8] {
    match v {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

impl Connect {
    pub(crate) fn decode(mut r: Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let protocol = match (&name[..], level) {
            (b"MQIsdp", 3) => ProtocolVersion::V3_1,
            (b"MQTT", 4) => ProtocolVersion::V3_1_1,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::Mqtt_3_1_2_2(level)),
            _ => return Err(DecodeError::Mqtt_3_1_2_1),
        };
        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::Mqtt_3_1_2_3);
        }
        let has_will = flags & flag::WILL != 0;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        let will_qos = (flags >> flag::WILL_QOS_SHIFT) & 0b11;
        // [MQTT-3.1.2-11, -13, -15]: Will QoS and Retain are 0 without a will; QoS 3 is invalid.
        if !has_will && (will_qos != 0 || will_retain) {
            return Err(DecodeError::Mqtt_3_1_2_11);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Mqtt_3_1_2_11)?;
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        // v5 dropped this rule so a password can carry a token without a user name.
        if protocol == ProtocolVersion::V3_1_1 && has_password && !has_username {
            return Err(DecodeError::Mqtt_3_1_2_22);
        }
        let keep_alive = r.u16()?;
        let v5 = protocol.is_v5();
        let properties = if v5 {
            properties::read(&mut r)?
        } else {
            Default::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if v5 {
                properties::read(&mut r)?
            } else {
                Default::default()
            };
            Some(LastWill {
                properties,
                topic: r.string()?,
                payload: r.binary()?,
                qos: will_qos,
                retain: will_retain,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            f |= flag::WILL | (will.qos as u8) << flag::WILL_QOS_SHIFT;
            if will.retain {
                f |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            f |= flag::USERNAME;
        }
        if self.password.is_some() {
            f |= flag::PASSWORD;
        }
        f
    }

    /// Remaining Length, in the packet's own protocol version.
    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut n = field_len(protocol_name(self.protocol)) + 1 + 1 + 2;
        if v5 {
            n += properties::encoded_len(&self.properties);
        }
        n += field_len(self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                n += properties::encoded_len(&will.properties);
            }
            n += field_len(will.topic.as_bytes()) + field_len(&will.payload);
        }
        n += self
            .username
            .as_ref()
            .map_or(0, |u| field_len(u.as_bytes()));
        n += self.password.as_ref().map_or(0, |p| field_len(p));
        n
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        put_binary(buf, protocol_name(self.protocol))?;
        buf.put_u8(self.protocol.level());
        buf.put_u8(self.flags());
        buf.put_u16(self.keep_alive);
        if v5 {
            properties::write(&self.properties, buf)?;
        }
        put_str(buf, &self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                properties::write(&will.properties, buf)?;
            }
            put_str(buf, &will.topic)?;
            put_binary(buf, &will.payload)?;
        }
        if let Some(u) = &self.username {
            put_str(buf, u)?;
        }
        if let Some(p) = &self.password {
            put_binary(buf, p)?;
        }
        Ok(())
    }
}

impl PropertySet for ConnectProperties {
    const ALLOWED: u64 = mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REQUEST_PROBLEM_INFORMATION,
        id::REQUEST_RESPONSE_INFORMATION,
        id::RECEIVE_MAXIMUM,
        id::TOPIC_ALIAS_MAXIMUM,
        id::USER_PROPERTY,
        id::MAXIMUM_PACKET_SIZE,
    ]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => self.session_expiry_interval = Some(v),
            (id::AUTHENTICATION_METHOD, Value::Str(v)) => self.authentication_method = Some(v),
            (id::AUTHENTICATION_DATA, Value::Bin(v)) => self.authentication_data = Some(v),
            (id::REQUEST_PROBLEM_INFORMATION, Value::Bool(v)) => {
                self.request_problem_information = Some(v)
            }
            (id::REQUEST_RESPONSE_INFORMATION, Value::Bool(v)) => {
                self.request_response_information = Some(v)
            }
            (id::RECEIVE_MAXIMUM, Value::NonZeroU16(v)) => self.receive_maximum = Some(v),
            (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => self.topic_alias_maximum = Some(v),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            (id::MAXIMUM_PACKET_SIZE, Value::NonZeroU32(v)) => self.maximum_packet_size = Some(v),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_u32(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.opt_str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        s.opt_bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
        s.opt_bool(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        s.opt_bool(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        s.opt_u16(id::RECEIVE_MAXIMUM, self.receive_maximum.map(|v| v.get()));
        s.opt_u16(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.opt_u32(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(|v| v.get()),
        );
        s.users(&self.user_properties);
    }
}

impl PropertySet for WillProperties {
    const ALLOWED: u64 = mask(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::WILL_DELAY_INTERVAL,
        id::USER_PROPERTY,
    ]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::PAYLOAD_FORMAT_INDICATOR, Value::Bool(v)) => {
                self.payload_format_indicator = Some(v)
            }
            (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => self.message_expiry_interval = Some(v),
            (id::CONTENT_TYPE, Value::Str(v)) => self.content_type = Some(v),
            (id::RESPONSE_TOPIC, Value::Str(v)) => self.response_topic = Some(v),
            (id::CORRELATION_DATA, Value::Bin(v)) => self.correlation_data = Some(v),
            (id::WILL_DELAY_INTERVAL, Value::U32(v)) => self.will_delay_interval = Some(v),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_bool(id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.opt_u32(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        s.opt_str(id::CONTENT_TYPE, self.content_type.as_ref());
        s.opt_str(id::RESPONSE_TOPIC, self.response_topic.as_ref());
        s.opt_bin(id::CORRELATION_DATA, self.correlation_data.as_ref());
        s.opt_u32(id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;
    use std::num::NonZeroU16;

    fn connect(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    fn packet(c: Connect) -> Packet {
        Packet::Connect(Box::new(c))
    }

    #[test]
    fn v311_minimal_connect() {
        both_ways(
            packet(connect(V4)),
            V4,
            &[
                0x10, // CONNECT
                0x0D, // remaining length 13
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
                0x04, // protocol level 4
                0x02, // connect flags: clean session
                0x00, 0x3C, // keep alive 60
                0x00, 0x01, b'c', // client id "c"
            ],
        );
    }

    #[test]
    fn v31_connect_uses_mqisdp_level_3() {
        // The connection's version does not matter: CONNECT carries its own.
        both_ways(
            packet(connect(V3)),
            V5,
            &[
                0x10, // CONNECT
                0x0F, // remaining length 15
                0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
                0x03, // protocol level 3
                0x02, // connect flags: clean session
                0x00, 0x3C, // keep alive 60
                0x00, 0x01, b'c', // client id "c"
            ],
        );
    }

    #[test]
    fn v311_connect_with_will_username_and_password() {
        let mut c = connect(V4);
        c.clean_start = false;
        c.will = Some(LastWill {
            topic: "t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        c.username = Some("u".into());
        c.password = Some(Bytes::from_static(b"p"));
        both_ways(
            packet(c),
            V4,
            &[
                0x10, // CONNECT
                0x1B, // remaining length 27
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
                0x04, // protocol level 4
                0xD4, // flags: user name, password, will QoS 2, will flag
                0x00, 0x3C, // keep alive 60
                0x00, 0x01, b'c', // client id "c"
                0x00, 0x01, b't', // will topic "t"
                0x00, 0x03, b'b', b'y', b'e', // will payload "bye"
                0x00, 0x01, b'u', // user name "u"
                0x00, 0x01, b'p', // password "p"
            ],
        );
    }

    #[test]
    fn v5_connect_with_properties_and_will_properties() {
        let mut c = connect(V5);
        c.keep_alive = 10;
        c.properties.session_expiry_interval = Some(120);
        c.properties.receive_maximum = NonZeroU16::new(20);
        c.will = Some(LastWill {
            topic: "t".into(),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..Default::default()
            },
        });
        c.username = Some("u".into());
        c.password = Some(Bytes::from_static(&[1, 2]));
        both_ways(
            packet(c),
            V5,
            &[
                0x10, // CONNECT
                0x2A, // remaining length 42
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
                0x05, // protocol level 5
                0xEE, // flags: user name, password, will retain, will QoS 1, will, clean start
                0x00, 0x0A, // keep alive 10
                0x08, // property length 8
                0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
                0x21, 0x00, 0x14, // receive maximum 20
                0x00, 0x01, b'c', // client id "c"
                0x05, // will property length 5
                0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5
                0x00, 0x01, b't', // will topic "t"
                0x00, 0x02, b'h', b'i', // will payload "hi"
                0x00, 0x01, b'u', // user name "u"
                0x00, 0x02, 0x01, 0x02, // password 01 02
            ],
        );
    }

    #[test]
    fn v311_connect_leaves_properties_out() {
        let mut c = connect(V4);
        c.properties.session_expiry_interval = Some(1);
        // Properties cannot be carried at level 4, so they are left out.
        assert_eq!(enc(&packet(c), V4).len(), 15);
    }

    /// A v3.1.1 CONNECT with client id "c" and the given flags byte.
    fn with_flags(flags: u8) -> [u8; 15] {
        [
            0x10, // CONNECT
            0x0D, // remaining length 13
            0x00, 0x04, b'M', b'Q', b'T', b'T',  // protocol name "MQTT"
            0x04,  // protocol level 4
            flags, // connect flags under test
            0x00, 0x3C, // keep alive 60
            0x00, 0x01, b'c', // client id "c"
        ]
    }

    #[test]
    fn connect_reserved_flag_is_rejected() {
        assert_eq!(dec(&with_flags(0x03), V4), Err(DecodeError::Mqtt_3_1_2_3));
    }

    #[test]
    fn will_qos_or_retain_without_will_flag_is_rejected() {
        // will QoS 1 without the will flag
        assert_eq!(dec(&with_flags(0x0A), V4), Err(DecodeError::Mqtt_3_1_2_11));
        // will retain without the will flag
        assert_eq!(dec(&with_flags(0x22), V4), Err(DecodeError::Mqtt_3_1_2_11));
        // will flag with will QoS 3
        assert_eq!(dec(&with_flags(0x1E), V4), Err(DecodeError::Mqtt_3_1_2_11));
    }

    #[test]
    fn v311_password_without_username_is_rejected() {
        assert_eq!(dec(&with_flags(0x42), V4), Err(DecodeError::Mqtt_3_1_2_22));
    }

    #[test]
    fn v5_password_without_username_is_accepted() {
        let wire = [
            0x10, // CONNECT
            0x10, // remaining length 16
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x05, // protocol level 5
            0x42, // flags: password, clean start
            0x00, 0x3C, // keep alive 60
            0x00, // property length 0
            0x00, 0x00, // client id ""
            0x00, 0x01, b'p', // password "p"
        ];
        let mut c = connect(V5);
        c.client_id = "".into();
        c.password = Some(Bytes::from_static(b"p"));
        both_ways(packet(c), V5, &wire);
    }

    #[test]
    fn unknown_protocol_name_and_level_are_rejected() {
        let name = [
            0x10, // CONNECT
            0x0D, // remaining length 13
            0x00, 0x04, b'M', b'Q', b'T', b'X', // protocol name "MQTX"
            0x04, // protocol level 4
            0x02, // clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x01, b'c', // client id "c"
        ];
        assert_eq!(dec(&name, V4), Err(DecodeError::Mqtt_3_1_2_1));
        let level = [
            0x10, // CONNECT
            0x0D, // remaining length 13
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x03, // protocol level 3: only valid with "MQIsdp"
            0x02, // clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x01, b'c', // client id "c"
        ];
        assert_eq!(dec(&level, V4), Err(DecodeError::Mqtt_3_1_2_2(3)));
    }

    #[test]
    fn connect_with_reserved_fixed_header_flags_is_rejected() {
        let mut wire = with_flags(0x02);
        wire[0] = 0x11; // CONNECT with flag bit 0 set
        assert_eq!(
            dec(&wire, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 1, flags: 1 })
        );
    }

    #[test]
    fn client_id_with_nul_is_rejected() {
        let mut wire = with_flags(0x02);
        wire[14] = 0x00; // client id "\0"
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_1_5_4_1));
    }

    #[test]
    fn connect_with_trailing_or_missing_bytes_is_rejected() {
        let trailing = [
            0x10, // CONNECT
            0x0E, // remaining length 14
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04, // protocol level 4
            0x02, // clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x01, b'c', // client id "c"
            0x00, // extra byte
        ];
        assert!(matches!(dec(&trailing, V4), Err(DecodeError::Malformed(_))));
        let missing = [
            0x10, // CONNECT
            0x0C, // remaining length 12
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04, // protocol level 4
            0x82, // user name, clean session
            0x00, 0x3C, // keep alive 60
            0x00, 0x00, // client id ""; the user name is missing
        ];
        assert!(matches!(dec(&missing, V4), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn v5_connect_property_not_allowed_is_rejected() {
        let wire = [
            0x10, // CONNECT
            0x10, // remaining length 16
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x05, // protocol level 5
            0x02, // clean start
            0x00, 0x3C, // keep alive 60
            0x03, // property length 3
            0x23, 0x00, 0x01, // topic alias: a PUBLISH property
            0x00, 0x00, // client id ""
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidProperty(0x23)));
    }

    #[test]
    fn v5_will_property_not_allowed_is_rejected() {
        let wire = [
            0x10, // CONNECT
            0x18, // remaining length 24
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x05, // protocol level 5
            0x06, // will flag, clean start
            0x00, 0x3C, // keep alive 60
            0x00, // property length 0
            0x00, 0x00, // client id ""
            0x05, // will property length 5
            0x11, 0x00, 0x00, 0x00,
            0x01, // session expiry: a CONNECT property, not a will one
            0x00, 0x01, b't', // will topic "t"
            0x00, 0x00, // will payload ""
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidProperty(0x11)));
    }
}
