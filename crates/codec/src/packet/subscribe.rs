//! SUBSCRIBE (3.1.1 §3.8, 5.0 §3.8).

use super::UserProperty;
use crate::primitives::{field_len, put_str, Reader};
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, QoS};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;
use std::num::NonZeroU32;

/// SUBSCRIBE: one or more topic filters with options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: SubscribeProperties,
    /// Topic filters (not yet validated as filters: the broker answers bad ones per filter)
    /// and their options. Never empty ([MQTT-3.8.3-3]).
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// SUBSCRIBE properties (MQTT 5 §3.8.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// Subscription Identifier (0x0B), 1..=268,435,455.
    pub subscription_identifier: Option<NonZeroU32>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Subscription Options byte (MQTT 5 §3.8.3.1); v3 carries only the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not send the client its own publications.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag when forwarding.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent on subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe.
    #[default]
    OnSubscribe = 0,
    /// 1: send only if the subscription did not exist.
    OnNewSubscribe = 1,
    /// 2: never send retained messages at subscribe.
    Never = 2,
}

impl SubscriptionOptions {
    /// Parses the options byte. v3 has only the QoS bits; the rest are reserved there.
    fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if b & reserved != 0 {
            return Err(DecodeError::Mqtt_3_8_3_5);
        }
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::Mqtt_3_8_3_5),
        };
        Ok(SubscriptionOptions {
            qos: QoS::from_u8(b & 0b11).ok_or(DecodeError::Mqtt_3_8_3_5)?,
            no_local: b & 0b0100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= u8::from(self.no_local) << 2
                | u8::from(self.retain_as_published) << 3
                | (self.retain_handling as u8) << 4;
        }
        b
    }
}

impl Subscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            properties::read(&mut r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::Mqtt_3_8_3_3);
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2;
        if version.is_v5() {
            n += properties::encoded_len(&self.properties);
        }
        n + self
            .filters
            .iter()
            .map(|(f, _)| field_len(f.as_bytes()) + 1)
            .sum::<usize>()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::InvalidField("SUBSCRIBE without topic filters"));
        }
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            properties::write(&self.properties, buf)?;
        }
        for (filter, options) in &self.filters {
            put_str(buf, filter)?;
            buf.put_u8(options.to_byte(version));
        }
        Ok(())
    }
}

impl PropertySet for SubscribeProperties {
    const ALLOWED: u64 = mask(&[id::SUBSCRIPTION_IDENTIFIER, id::USER_PROPERTY]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::SUBSCRIPTION_IDENTIFIER, Value::NonZeroU32(v)) => {
                self.subscription_identifier = Some(v)
            }
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        if let Some(sub) = self.subscription_identifier {
            s.varint(id::SUBSCRIPTION_IDENTIFIER, sub.get());
        }
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    fn qos(q: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: q,
            ..Default::default()
        }
    }

    #[test]
    fn v311_subscribe_two_filters() {
        both_ways(
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: SubscribeProperties::default(),
                filters: vec![
                    ("a/+".into(), qos(QoS::AtLeastOnce)),
                    ("#".into(), qos(QoS::ExactlyOnce)),
                ],
            }),
            V4,
            &[
                0x82, // SUBSCRIBE, flags 0b0010
                0x0C, // remaining length 12
                0x00, 0x01, // packet id 1
                0x00, 0x03, b'a', b'/', b'+', // filter "a/+"
                0x01, // options: QoS 1
                0x00, 0x01, b'#', // filter "#"
                0x02, // options: QoS 2
            ],
        );
    }

    #[test]
    fn v5_subscribe_with_all_options_and_identifier() {
        both_ways(
            Packet::Subscribe(Subscribe {
                packet_id: pid(2),
                properties: SubscribeProperties {
                    subscription_identifier: NonZeroU32::new(300),
                    user_properties: vec![],
                },
                filters: vec![(
                    "t".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::Never,
                    },
                )],
            }),
            V5,
            &[
                0x82, // SUBSCRIBE
                0x0A, // remaining length 10
                0x00, 0x02, // packet id 2
                0x03, // property length 3
                0x0B, 0xAC, 0x02, // subscription identifier 300
                0x00, 0x01, b't', // filter "t"
                0x2D, // options: retain handling 2, RAP, no local, QoS 1
            ],
        );
    }

    #[test]
    fn v311_encoding_keeps_only_the_qos_bits() {
        let p = Packet::Subscribe(Subscribe {
            packet_id: pid(2),
            properties: SubscribeProperties::default(),
            filters: vec![(
                "t".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            )],
        });
        assert_eq!(*enc(&p, V4).last().unwrap(), 0x01); // options: QoS 1 only
    }

    #[test]
    fn subscribe_flags_must_be_0010() {
        let wire = [
            0x80, // SUBSCRIBE with flags 0
            0x06, // remaining length 6
            0x00, 0x01, // packet id 1
            0x00, 0x01, b't', // filter "t"
            0x00, // options: QoS 0
        ];
        assert_eq!(
            dec(&wire[..], V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 8, flags: 0 })
        );
    }

    #[test]
    fn subscribe_without_filters_is_rejected() {
        let v4 = [
            0x82, // SUBSCRIBE
            0x02, // remaining length 2
            0x00, 0x01, // packet id 1, then nothing
        ];
        assert_eq!(dec(&v4, V4), Err(DecodeError::Mqtt_3_8_3_3));
        let v5 = [
            0x82, // SUBSCRIBE
            0x03, // remaining length 3
            0x00, 0x01, // packet id 1
            0x00, // property length 0, then nothing
        ];
        assert_eq!(dec(&v5, V5), Err(DecodeError::Mqtt_3_8_3_3));
    }

    #[test]
    fn reserved_option_bits_are_rejected() {
        let v4_no_local = [
            0x82, // SUBSCRIBE
            0x06, // remaining length 6
            0x00, 0x01, // packet id 1
            0x00, 0x01, b't', // filter "t"
            0x04, // options: bit 2 is reserved on v3.1.1
        ];
        assert_eq!(dec(&v4_no_local, V4), Err(DecodeError::Mqtt_3_8_3_5));
        let v5_bit_6 = [
            0x82, // SUBSCRIBE
            0x07, // remaining length 7
            0x00, 0x01, // packet id 1
            0x00, // property length 0
            0x00, 0x01, b't', // filter "t"
            0x40, // options: bit 6 is reserved
        ];
        assert_eq!(dec(&v5_bit_6, V5), Err(DecodeError::Mqtt_3_8_3_5));
        let v5_retain_handling_3 = [
            0x82, // SUBSCRIBE
            0x07, // remaining length 7
            0x00, 0x01, // packet id 1
            0x00, // property length 0
            0x00, 0x01, b't', // filter "t"
            0x30, // options: retain handling 3
        ];
        assert_eq!(
            dec(&v5_retain_handling_3, V5),
            Err(DecodeError::Mqtt_3_8_3_5)
        );
        let qos_3 = [
            0x82, // SUBSCRIBE
            0x06, // remaining length 6
            0x00, 0x01, // packet id 1
            0x00, 0x01, b't', // filter "t"
            0x03, // options: QoS 3
        ];
        assert_eq!(dec(&qos_3, V4), Err(DecodeError::Mqtt_3_8_3_5));
    }

    #[test]
    fn filter_without_options_byte_is_malformed() {
        let wire = [
            0x82, // SUBSCRIBE
            0x05, // remaining length 5
            0x00, 0x01, // packet id 1
            0x00, 0x01, b't', // filter "t", options byte missing
        ];
        assert!(matches!(dec(&wire, V4), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn v5_subscription_identifier_may_not_repeat_in_subscribe() {
        let wire = [
            0x82, // SUBSCRIBE
            0x0B, // remaining length 11
            0x00, 0x01, // packet id 1
            0x04, // property length 4
            0x0B, 0x01, // subscription identifier 1
            0x0B, 0x02, // subscription identifier 2: duplicate
            0x00, 0x01, b't', // filter "t"
            0x00, // options: QoS 0
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x0B)));
    }

    #[test]
    fn packet_id_zero_is_rejected() {
        let wire = [
            0x82, // SUBSCRIBE
            0x06, // remaining length 6
            0x00, 0x00, // packet id 0
            0x00, 0x01, b't', // filter "t"
            0x00, // options: QoS 0
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_2_2_1_3));
    }

    #[test]
    fn empty_subscribe_cannot_be_encoded() {
        let p = Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: SubscribeProperties::default(),
            filters: vec![],
        });
        let mut buf = BytesMut::new();
        assert!(matches!(
            crate::encode(&p, V4, &mut buf),
            Err(EncodeError::InvalidField(_))
        ));
    }
}
