//! UNSUBSCRIBE (3.1.1 §3.10, 5.0 §3.10).

use super::UserProperty;
use crate::primitives::{field_len, put_str, Reader};
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

/// UNSUBSCRIBE: topic filters to remove. Never empty ([MQTT-3.10.3-2]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
    /// Topic filters.
    pub filters: Vec<ByteString>,
}

/// UNSUBSCRIBE properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

impl Unsubscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            properties::read(&mut r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        // [MQTT-3.10.3-2]: at least one filter.
        if filters.is_empty() {
            return Err(DecodeError::Mqtt_3_8_3_3);
        }
        Ok(Unsubscribe {
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
            .map(|f| field_len(f.as_bytes()))
            .sum::<usize>()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::InvalidField(
                "UNSUBSCRIBE without topic filters",
            ));
        }
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            properties::write(&self.properties, buf)?;
        }
        for filter in &self.filters {
            put_str(buf, filter)?;
        }
        Ok(())
    }
}

impl PropertySet for UnsubscribeProperties {
    const ALLOWED: u64 = mask(&[id::USER_PROPERTY]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    fn unsubscribe(filters: &[&str]) -> Packet {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(7),
            properties: UnsubscribeProperties::default(),
            filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
        })
    }

    #[test]
    fn v311_unsubscribe_two_filters() {
        both_ways(
            unsubscribe(&["a", "b/#"]),
            V4,
            &[
                0xA2, // UNSUBSCRIBE, flags 0b0010
                0x0A, // remaining length 10
                0x00, 0x07, // packet id 7
                0x00, 0x01, b'a', // filter "a"
                0x00, 0x03, b'b', b'/', b'#', // filter "b/#"
            ],
        );
    }

    #[test]
    fn v5_unsubscribe_with_user_property() {
        let p = Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(7),
            properties: UnsubscribeProperties {
                user_properties: vec![("k".into(), "v".into())],
            },
            filters: vec!["a".into()],
        });
        both_ways(
            p,
            V5,
            &[
                0xA2, // UNSUBSCRIBE
                0x0D, // remaining length 13
                0x00, 0x07, // packet id 7
                0x07, // property length 7
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
                0x00, 0x01, b'a', // filter "a"
            ],
        );
    }

    #[test]
    fn unsubscribe_without_filters_is_rejected() {
        let wire = [
            0xA2, // UNSUBSCRIBE
            0x02, // remaining length 2
            0x00, 0x07, // packet id 7, no filters
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_3_8_3_3));
    }

    #[test]
    fn unsubscribe_flags_must_be_0010() {
        let wire = [
            0xA0, // UNSUBSCRIBE with flags 0
            0x05, // remaining length 5
            0x00, 0x07, // packet id 7
            0x00, 0x01, b'a', // filter "a"
        ];
        assert_eq!(
            dec(&wire, V4),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 10, flags: 0 })
        );
    }

    #[test]
    fn v5_unsubscribe_reason_string_is_not_allowed() {
        let wire = [
            0xA2, // UNSUBSCRIBE
            0x0A, // remaining length 10
            0x00, 0x07, // packet id 7
            0x04, // property length 4
            0x1F, 0x00, 0x01, b'r', // reason string: not an UNSUBSCRIBE property
            0x00, 0x01, b'a', // filter "a"
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidProperty(0x1F)));
    }

    #[test]
    fn filter_with_nul_is_rejected() {
        let wire = [
            0xA2, // UNSUBSCRIBE
            0x05, // remaining length 5
            0x00, 0x07, // packet id 7
            0x00, 0x01, 0x00, // filter "\0"
        ];
        assert_eq!(dec(&wire, V4), Err(DecodeError::Mqtt_1_5_4_1));
    }
}
