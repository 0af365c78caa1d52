//! MQTT 5 properties (§2.2.2): the identifier table, value checks, and one generic reader and
//! writer shared by every packet.
//!
//! Each packet's property struct implements [`PropertySet`]: which identifiers it allows, how a
//! decoded value lands in a field (`set`), and how its fields are walked for encoding (`visit`).
//! Walking once with a length-counting sink and once with a writing sink keeps
//! `encoded_len` and `encode` from ever disagreeing.

use crate::packet::UserProperty;
use crate::primitives::{field_len, put_binary, put_str, put_varint, varint_len, Reader};
use crate::{DecodeError, EncodeError, QoS};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::num::{NonZeroU16, NonZeroU32};

/// Property identifiers (§2.2.2.2).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A set of property identifiers as a bit mask (bit n = identifier n); all identifiers are
/// below 64.
pub(crate) const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// A decoded property value, already range-checked for its identifier.
#[derive(Debug)]
pub(crate) enum Value {
    Bool(bool),
    Qos(QoS),
    U16(u16),
    NonZeroU16(NonZeroU16),
    U32(u32),
    NonZeroU32(NonZeroU32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

/// The property struct of one packet kind.
pub(crate) trait PropertySet: Default {
    /// Identifiers this packet may carry.
    const ALLOWED: u64;
    /// Identifiers that may appear more than once. Only User Property, and Subscription
    /// Identifier on PUBLISH (one per matching subscription, §3.3.2.3.8).
    const REPEATABLE: u64 = mask(&[id::USER_PROPERTY]);

    /// Stores one decoded value. Only identifiers in `ALLOWED` reach it.
    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError>;

    /// Feeds every present property to `s`, in identifier order.
    fn visit<S: Sink>(&self, s: &mut S);
}

/// Receives properties while a [`PropertySet`] is walked for encoding.
pub(crate) trait Sink {
    fn byte(&mut self, id: u8, v: u8);
    fn u16(&mut self, id: u8, v: u16);
    fn u32(&mut self, id: u8, v: u32);
    fn varint(&mut self, id: u8, v: u32);
    /// A UTF-8 string or binary data: the same length-prefixed form on the wire.
    fn bytes(&mut self, id: u8, v: &[u8]);
    fn pair(&mut self, id: u8, k: &str, v: &str);

    fn opt_bool(&mut self, id: u8, v: Option<bool>) {
        if let Some(v) = v {
            self.byte(id, u8::from(v));
        }
    }
    fn opt_u16(&mut self, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.u16(id, v);
        }
    }
    fn opt_u32(&mut self, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.u32(id, v);
        }
    }
    fn opt_str(&mut self, id: u8, v: Option<&ByteString>) {
        if let Some(v) = v {
            self.bytes(id, v.as_bytes());
        }
    }
    fn opt_bin(&mut self, id: u8, v: Option<&Bytes>) {
        if let Some(v) = v {
            self.bytes(id, v);
        }
    }
    fn users(&mut self, v: &[UserProperty]) {
        for (k, val) in v {
            self.pair(id::USER_PROPERTY, k, val);
        }
    }
}

/// Counts encoded bytes.
struct LenSink(usize);

impl Sink for LenSink {
    fn byte(&mut self, _: u8, _: u8) {
        self.0 += 2;
    }
    fn u16(&mut self, _: u8, _: u16) {
        self.0 += 3;
    }
    fn u32(&mut self, _: u8, _: u32) {
        self.0 += 5;
    }
    fn varint(&mut self, _: u8, v: u32) {
        self.0 += 1 + varint_len(v as usize);
    }
    fn bytes(&mut self, _: u8, v: &[u8]) {
        self.0 += 1 + field_len(v);
    }
    fn pair(&mut self, _: u8, k: &str, v: &str) {
        self.0 += 1 + field_len(k.as_bytes()) + field_len(v.as_bytes());
    }
}

/// Writes properties, remembering the first field that could not be written.
struct WriteSink<'a> {
    buf: &'a mut BytesMut,
    err: Result<(), EncodeError>,
}

impl WriteSink<'_> {
    fn track(&mut self, r: Result<(), EncodeError>) {
        if self.err.is_ok() {
            self.err = r;
        }
    }
}

impl Sink for WriteSink<'_> {
    fn byte(&mut self, id: u8, v: u8) {
        self.buf.put_u8(id);
        self.buf.put_u8(v);
    }
    fn u16(&mut self, id: u8, v: u16) {
        self.buf.put_u8(id);
        self.buf.put_u16(v);
    }
    fn u32(&mut self, id: u8, v: u32) {
        self.buf.put_u8(id);
        self.buf.put_u32(v);
    }
    fn varint(&mut self, id: u8, v: u32) {
        self.buf.put_u8(id);
        let r = put_varint(self.buf, v as usize);
        self.track(r);
    }
    fn bytes(&mut self, id: u8, v: &[u8]) {
        self.buf.put_u8(id);
        let r = put_binary(self.buf, v);
        self.track(r);
    }
    fn pair(&mut self, id: u8, k: &str, v: &str) {
        self.buf.put_u8(id);
        let r = put_str(self.buf, k).and_then(|()| put_str(self.buf, v));
        self.track(r);
    }
}

/// Bytes of the properties themselves, without the Property Length in front.
pub(crate) fn content_len<P: PropertySet>(p: &P) -> usize {
    let mut s = LenSink(0);
    p.visit(&mut s);
    s.0
}

/// Bytes of Property Length plus the properties.
pub(crate) fn encoded_len<P: PropertySet>(p: &P) -> usize {
    let n = content_len(p);
    varint_len(n) + n
}

/// Writes Property Length and the properties.
pub(crate) fn write<P: PropertySet>(p: &P, buf: &mut BytesMut) -> Result<(), EncodeError> {
    put_varint(buf, content_len(p))?;
    let mut s = WriteSink { buf, err: Ok(()) };
    p.visit(&mut s);
    s.err
}

/// Reads Property Length and the properties that follow, enforcing the packet's allowed set,
/// the no-duplicates rule and each property's value range.
pub(crate) fn read<P: PropertySet>(r: &mut Reader) -> Result<P, DecodeError> {
    let len = r.varint()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Malformed("property length exceeds the packet"));
    }
    let mut body = Reader::new(r.take(len)?);
    let mut props = P::default();
    let mut seen = 0u64;
    while !body.is_empty() {
        // Identifiers are Variable Byte Integers, but every defined one fits in one byte, so a
        // first byte >= 0x80 can only start an unknown identifier.
        let pid = body.u8()?;
        let bit = if pid < 64 { 1u64 << pid } else { 0 };
        if bit & P::ALLOWED == 0 {
            return Err(DecodeError::InvalidProperty(pid));
        }
        if seen & bit != 0 && P::REPEATABLE & bit == 0 {
            return Err(DecodeError::DuplicateProperty(pid));
        }
        seen |= bit;
        let v = read_value(pid, &mut body)?;
        props.set(pid, v)?;
    }
    Ok(props)
}

fn read_value(pid: u8, r: &mut Reader) -> Result<Value, DecodeError> {
    use id::*;
    let bad = DecodeError::InvalidPropertyValue(pid);
    Ok(match pid {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => match r.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(bad),
        },
        MAXIMUM_QOS => match r.u8()? {
            0 => Value::Qos(QoS::AtMostOnce),
            1 => Value::Qos(QoS::AtLeastOnce),
            _ => return Err(bad),
        },
        MESSAGE_EXPIRY_INTERVAL | SESSION_EXPIRY_INTERVAL | WILL_DELAY_INTERVAL => {
            Value::U32(r.u32()?)
        }
        MAXIMUM_PACKET_SIZE => Value::NonZeroU32(NonZeroU32::new(r.u32()?).ok_or(bad)?),
        SUBSCRIPTION_IDENTIFIER => Value::NonZeroU32(NonZeroU32::new(r.varint()?).ok_or(bad)?),
        SERVER_KEEP_ALIVE | TOPIC_ALIAS_MAXIMUM => Value::U16(r.u16()?),
        RECEIVE_MAXIMUM | TOPIC_ALIAS => Value::NonZeroU16(NonZeroU16::new(r.u16()?).ok_or(bad)?),
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::Str(r.string()?),
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Bin(r.binary()?),
        USER_PROPERTY => Value::Pair(r.string()?, r.string()?),
        _ => return Err(DecodeError::InvalidProperty(pid)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::AckProperties;

    fn read_ack(wire: &'static [u8]) -> Result<AckProperties, DecodeError> {
        read(&mut Reader::new(Bytes::from_static(wire)))
    }

    #[test]
    fn every_defined_identifier_has_a_value_type() {
        let defined = [
            0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
            0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
        ];
        for pid in 0..=u8::MAX {
            // Only unknown identifiers fail with InvalidProperty; known ones read a value or
            // complain about it.
            let mut r = Reader::new(Bytes::from_static(&[0; 8]));
            let known = !matches!(
                read_value(pid, &mut r),
                Err(DecodeError::InvalidProperty(_))
            );
            assert_eq!(known, defined.contains(&pid), "0x{pid:02X}");
        }
    }

    #[test]
    fn user_properties_may_repeat_and_keep_their_order() {
        let p = read_ack(&[
            0x0E, // property length 14
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'1', // user property k=1
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'2', // user property k=2
        ])
        .unwrap();
        assert_eq!(
            p.user_properties,
            vec![("k".into(), "1".into()), ("k".into(), "2".into())]
        );
    }

    #[test]
    fn duplicate_reason_string_is_rejected() {
        let err = read_ack(&[
            0x08, // property length 8
            0x1F, 0x00, 0x01, b'a', // reason string "a"
            0x1F, 0x00, 0x01, b'b', // reason string "b" again
        ]);
        assert_eq!(err, Err(DecodeError::DuplicateProperty(0x1F)));
    }

    #[test]
    fn property_not_allowed_on_the_packet_is_rejected() {
        let err = read_ack(&[
            0x05, // property length 5
            0x11, 0x00, 0x00, 0x00, 0x0A, // session expiry interval: not an ack property
        ]);
        assert_eq!(err, Err(DecodeError::InvalidProperty(0x11)));
    }

    #[test]
    fn property_length_beyond_the_packet_is_malformed() {
        let err = read_ack(&[
            0x09, // property length 9, but only 4 bytes follow
            0x1F, 0x00, 0x01, b'a',
        ]);
        assert!(matches!(err, Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x00]));
        assert!(matches!(
            read_value(id::RECEIVE_MAXIMUM, &mut r),
            Err(DecodeError::InvalidPropertyValue(0x21))
        ));
        let mut r = Reader::new(Bytes::from_static(&[0x02]));
        assert!(matches!(
            read_value(id::MAXIMUM_QOS, &mut r),
            Err(DecodeError::InvalidPropertyValue(0x24))
        ));
        let mut r = Reader::new(Bytes::from_static(&[0x02]));
        assert!(matches!(
            read_value(id::RETAIN_AVAILABLE, &mut r),
            Err(DecodeError::InvalidPropertyValue(0x25))
        ));
        let mut r = Reader::new(Bytes::from_static(&[0x00]));
        assert!(matches!(
            read_value(id::SUBSCRIPTION_IDENTIFIER, &mut r),
            Err(DecodeError::InvalidPropertyValue(0x0B))
        ));
    }
}
