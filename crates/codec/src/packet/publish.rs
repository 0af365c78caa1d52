//! PUBLISH (3.1.1 §3.3, 5.0 §3.3).

use super::UserProperty;
use crate::primitives::{field_len, put_str, Reader};
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, QoS};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::num::{NonZeroU16, NonZeroU32};

/// PUBLISH: an application message in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this may be a re-delivery.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name. May be empty in v5 when a Topic Alias is given.
    pub topic: ByteString,
    /// Packet Identifier: present exactly when `qos > 0`.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
    /// Application payload: a slice of the read buffer, shared (never copied) on fan-out.
    pub payload: Bytes,
}

/// PUBLISH properties (MQTT 5 §3.3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// Payload Format Indicator (0x01): true = UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (0x23).
    pub topic_alias: Option<NonZeroU16>,
    /// Response Topic (0x08).
    pub response_topic: Option<ByteString>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Subscription Identifier (0x0B), server to client only; may repeat.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Content Type (0x03).
    pub content_type: Option<ByteString>,
}

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

impl Publish {
    /// The fixed-header flag nibble. DUP is never sent on QoS 0 [MQTT-3.3.1-2].
    pub(crate) fn flags(&self) -> u8 {
        let mut f = (self.qos as u8) << 1;
        if self.dup && self.qos != QoS::AtMostOnce {
            f |= DUP;
        }
        if self.retain {
            f |= RETAIN;
        }
        f
    }

    pub(crate) fn decode(
        flags: u8,
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Mqtt_3_3_1_4)?;
        let dup = flags & DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Mqtt_3_3_1_2);
        }
        let topic = r.string()?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(r.packet_id()?),
        };
        let properties = if version.is_v5() {
            properties::read(&mut r)?
        } else {
            PublishProperties::default()
        };
        Ok(Publish {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = field_len(self.topic.as_bytes()) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            n += properties::encoded_len(&self.properties);
        }
        n
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        put_str(buf, &self.topic)?;
        if self.qos != QoS::AtMostOnce {
            let id = self.packet_id.ok_or(EncodeError::InvalidField(
                "QoS 1/2 PUBLISH without packet identifier",
            ))?;
            buf.put_u16(id.get());
        }
        if version.is_v5() {
            properties::write(&self.properties, buf)?;
        }
        buf.put_slice(&self.payload);
        Ok(())
    }
}

impl PropertySet for PublishProperties {
    const ALLOWED: u64 = mask(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::SUBSCRIPTION_IDENTIFIER,
        id::TOPIC_ALIAS,
        id::USER_PROPERTY,
    ]);
    const REPEATABLE: u64 = mask(&[id::USER_PROPERTY, id::SUBSCRIPTION_IDENTIFIER]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::PAYLOAD_FORMAT_INDICATOR, Value::Bool(v)) => {
                self.payload_format_indicator = Some(v)
            }
            (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => self.message_expiry_interval = Some(v),
            (id::CONTENT_TYPE, Value::Str(v)) => self.content_type = Some(v),
            (id::RESPONSE_TOPIC, Value::Str(v)) => self.response_topic = Some(v),
            (id::CORRELATION_DATA, Value::Bin(v)) => self.correlation_data = Some(v),
            (id::SUBSCRIPTION_IDENTIFIER, Value::NonZeroU32(v)) => {
                self.subscription_identifiers.push(v)
            }
            (id::TOPIC_ALIAS, Value::NonZeroU16(v)) => self.topic_alias = Some(v),
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
        for sub in &self.subscription_identifiers {
            s.varint(id::SUBSCRIPTION_IDENTIFIER, sub.get());
        }
        s.opt_u16(id::TOPIC_ALIAS, self.topic_alias.map(|v| v.get()));
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    fn publish(qos: QoS, packet_id: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b".into(),
            packet_id: packet_id.map(pid),
            properties: PublishProperties::default(),
            payload: Bytes::from_static(b"hi"),
        }
    }

    #[test]
    fn v311_qos0_publish() {
        both_ways(
            Packet::Publish(publish(QoS::AtMostOnce, None)),
            V4,
            &[
                0x30, // PUBLISH, QoS 0, no DUP, no RETAIN
                0x07, // remaining length 7
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                b'h', b'i', // payload "hi"
            ],
        );
    }

    #[test]
    fn v311_qos1_retained_duplicate_publish() {
        let mut p = publish(QoS::AtLeastOnce, Some(10));
        p.dup = true;
        p.retain = true;
        both_ways(
            Packet::Publish(p),
            V4,
            &[
                0x3B, // PUBLISH, DUP, QoS 1, RETAIN
                0x09, // remaining length 9
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                0x00, 0x0A, // packet id 10
                b'h', b'i', // payload "hi"
            ],
        );
    }

    #[test]
    fn v5_publish_without_properties_has_a_zero_property_length() {
        both_ways(
            Packet::Publish(publish(QoS::ExactlyOnce, Some(1))),
            V5,
            &[
                0x34, // PUBLISH, QoS 2
                0x0A, // remaining length 10
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                0x00, 0x01, // packet id 1
                0x00, // property length 0
                b'h', b'i', // payload "hi"
            ],
        );
    }

    #[test]
    fn v5_publish_with_alias_and_repeated_subscription_ids() {
        let mut p = publish(QoS::AtMostOnce, None);
        p.topic = "".into();
        p.payload = Bytes::new();
        p.properties.topic_alias = NonZeroU16::new(5);
        p.properties.subscription_identifiers =
            vec![NonZeroU32::new(1).unwrap(), NonZeroU32::new(200).unwrap()];
        p.properties.payload_format_indicator = Some(true);
        both_ways(
            Packet::Publish(p),
            V5,
            &[
                0x30, // PUBLISH, QoS 0
                0x0D, // remaining length 13
                0x00, 0x00, // topic "" (the alias stands for it)
                0x0A, // property length 10
                0x01, 0x01, // payload format indicator: UTF-8
                0x0B, 0x01, // subscription identifier 1
                0x0B, 0xC8, 0x01, // subscription identifier 200 (two-byte varint)
                0x23, 0x00, 0x05, // topic alias 5
            ],
        );
    }

    #[test]
    fn qos_3_is_rejected() {
        let wire = [
            0x36, // PUBLISH with both QoS bits set
            0x05, // remaining length 5
            0x00, 0x01, b't', // topic "t"
            0x00, 0x01, // packet id 1
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_3_3_1_4));
    }

    #[test]
    fn dup_on_qos0_is_rejected() {
        let wire = [
            0x38, // PUBLISH, DUP, QoS 0
            0x03, // remaining length 3
            0x00, 0x01, b't', // topic "t"
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_3_3_1_2));
    }

    #[test]
    fn dup_is_not_encoded_on_qos0() {
        let mut p = publish(QoS::AtMostOnce, None);
        p.dup = true;
        assert_eq!(enc(&Packet::Publish(p), V4)[0], 0x30); // no DUP bit
    }

    #[test]
    fn packet_id_zero_is_rejected() {
        let wire = [
            0x32, // PUBLISH, QoS 1
            0x05, // remaining length 5
            0x00, 0x01, b't', // topic "t"
            0x00, 0x00, // packet id 0
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_2_2_1_3));
    }

    #[test]
    fn qos1_without_packet_id_cannot_be_encoded() {
        let p = Packet::Publish(publish(QoS::AtLeastOnce, None));
        let mut buf = BytesMut::new();
        assert!(matches!(
            crate::encode(&p, V4, &mut buf),
            Err(EncodeError::InvalidField(_))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn topic_with_invalid_utf8_or_nul_is_rejected() {
        let bad_utf8 = [
            0x30, // PUBLISH, QoS 0
            0x04, // remaining length 4
            0x00, 0x02, 0xC3,
            0x28, // topic: C3 starts a two-byte sequence, 28 cannot continue it
        ];
        assert_eq!(dec(&bad_utf8, V4), Err(DecodeError::Mqtt_1_5_4_1));
        let nul = [
            0x30, // PUBLISH, QoS 0
            0x05, // remaining length 5
            0x00, 0x03, b'a', 0x00, b'b', // topic "a\0b"
        ];
        assert_eq!(dec(&nul, V4), Err(DecodeError::Mqtt_1_5_4_1));
    }

    #[test]
    fn topic_longer_than_the_packet_is_malformed() {
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x03, // remaining length 3
            0x00, 0x05, b't', // topic length 5, one byte present
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn v5_topic_alias_zero_is_rejected() {
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x07, // remaining length 7
            0x00, 0x01, b't', // topic "t"
            0x03, // property length 3
            0x23, 0x00, 0x00, // topic alias 0
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidPropertyValue(0x23)));
    }

    #[test]
    fn v5_duplicate_topic_alias_is_rejected() {
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x0A, // remaining length 10
            0x00, 0x01, b't', // topic "t"
            0x06, // property length 6
            0x23, 0x00, 0x01, // topic alias 1
            0x23, 0x00, 0x02, // topic alias 2: duplicate
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x23)));
    }

    #[test]
    fn v5_payload_format_indicator_2_is_rejected() {
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x06, // remaining length 6
            0x00, 0x01, b't', // topic "t"
            0x02, // property length 2
            0x01, 0x02, // payload format indicator 2
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidPropertyValue(0x01)));
    }

    #[test]
    fn v5_subscription_identifier_zero_is_rejected() {
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x06, // remaining length 6
            0x00, 0x01, b't', // topic "t"
            0x02, // property length 2
            0x0B, 0x00, // subscription identifier 0
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidPropertyValue(0x0B)));
    }

    #[test]
    fn v311_payload_may_look_like_properties() {
        // On v3.1.1 there is no property length, so these bytes are all payload.
        let wire = [
            0x30, // PUBLISH, QoS 0
            0x05, // remaining length 5
            0x00, 0x01, b't', // topic "t"
            0x02, 0x01, // payload 02 01
        ];
        let Ok(Some(Packet::Publish(p))) = dec(&wire, V4) else {
            panic!()
        };
        assert_eq!(&p.payload[..], [0x02, 0x01]);
    }

    #[test]
    fn payload_and_topic_share_the_read_buffer() {
        let mut buf = BytesMut::from(
            &[
                0x30, // PUBLISH, QoS 0
                0x07, // remaining length 7
                0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
                b'h', b'i', // payload "hi"
            ][..],
        );
        let start = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(p))) = crate::decode(&mut buf, V4, 100) else {
            panic!()
        };
        // Both point into the original allocation: nothing was copied.
        assert_eq!(p.payload.as_ptr() as usize, start + 7);
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, start + 4);
    }
}
