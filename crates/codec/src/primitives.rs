//! Wire primitives (§1.5): Variable Byte Integer, Two Byte Integer, Four Byte Integer, UTF-8
//! Encoded String and Binary Data.
//!
//! Decoding reads from a [`Reader`] over a frozen `Bytes` frame, so strings and binary fields come
//! out as slices of the read buffer rather than copies. Writing goes straight into a `BytesMut`.

use crate::{DecodeError, EncodeError, PacketId};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

/// Largest value a Variable Byte Integer can hold (four bytes of seven bits).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Largest string or binary field: its length prefix is two bytes.
pub(crate) const MAX_FIELD: usize = u16::MAX as usize;

const ENDED_EARLY: DecodeError = DecodeError::Malformed("packet ended before a field was complete");

/// Outcome of reading a Variable Byte Integer from a slice that may be incomplete.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Varint {
    /// The value and how many bytes it took.
    Done(u32, usize),
    /// The slice ended with the continuation bit still set.
    Incomplete,
    /// More than four bytes, or a non-minimal encoding [MQTT-1.5.5-1].
    Malformed,
}

/// Reads a Variable Byte Integer from the start of `buf`.
pub(crate) fn read_varint(buf: &[u8]) -> Varint {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A trailing zero group means a shorter encoding existed; the spec demands the
            // shortest, and accepting both would give one value two wire forms.
            if i > 0 && b == 0 {
                return Varint::Malformed;
            }
            return Varint::Done(value, i + 1);
        }
    }
    if buf.len() >= 4 {
        Varint::Malformed
    } else {
        Varint::Incomplete
    }
}

/// Bytes a Variable Byte Integer of value `v` takes.
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a Variable Byte Integer; values above [`MAX_VARINT`] cannot be represented.
pub(crate) fn put_varint(buf: &mut BytesMut, v: usize) -> Result<(), EncodeError> {
    if v > MAX_VARINT as usize {
        return Err(EncodeError::InvalidField(
            "variable byte integer above 268,435,455",
        ));
    }
    let mut v = v;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Writes a UTF-8 Encoded String with its two-byte length.
pub(crate) fn put_str(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(buf, s.as_bytes())
}

/// Writes Binary Data with its two-byte length.
pub(crate) fn put_binary(buf: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    if b.len() > MAX_FIELD {
        return Err(EncodeError::FieldTooLong);
    }
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
    Ok(())
}

/// Bytes a string or binary field takes on the wire, length prefix included.
pub(crate) fn field_len(b: &[u8]) -> usize {
    2 + b.len()
}

/// Checks the rules of §1.5.4 on bytes and turns them into a string without copying.
pub(crate) fn to_string(b: Bytes) -> Result<ByteString, DecodeError> {
    // U+0000 is the only code point Rust's UTF-8 check lets through that MQTT forbids
    // [MQTT-1.5.4-2]; surrogates are already rejected as ill-formed [MQTT-1.5.4-1].
    if b.contains(&0) {
        return Err(DecodeError::Mqtt_1_5_4_1);
    }
    ByteString::try_from(b).map_err(|_| DecodeError::Mqtt_1_5_4_1)
}

/// A cursor over the body of one packet.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A reader over a packet body.
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails if bytes are left over: every field of a packet is length-delimited, so extra
    /// bytes mean the sender and we disagree on its layout.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "bytes left over after the last field",
            ))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(ENDED_EARLY);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(ENDED_EARLY);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(ENDED_EARLY);
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer inside a packet body.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(&self.buf) {
            Varint::Done(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            Varint::Incomplete => Err(ENDED_EARLY),
            Varint::Malformed => Err(DecodeError::Malformed("malformed variable byte integer")),
        }
    }

    /// A non-zero Packet Identifier [MQTT-2.2.1-3].
    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::Mqtt_2_2_1_3)
    }

    /// The next `n` bytes, shared with the read buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(ENDED_EARLY);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything not yet read (the PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: two-byte length, then the bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 Encoded String, checked per §1.5.4.
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let b = self.binary()?;
        to_string(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_match_the_spec_table() {
        // §1.5.5: 1 to 4 bytes, each boundary value.
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(v, wire) in cases {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v).unwrap();
            assert_eq!(&buf[..], wire, "{v}");
            assert_eq!(varint_len(v), wire.len());
            assert_eq!(read_varint(wire), Varint::Done(v as u32, wire.len()));
        }
    }

    #[test]
    fn varint_longer_than_four_bytes_is_malformed() {
        assert_eq!(
            read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Varint::Malformed
        );
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF]), Varint::Incomplete);
        assert_eq!(read_varint(&[]), Varint::Incomplete);
    }

    #[test]
    fn varint_with_a_redundant_zero_group_is_malformed() {
        // 0x80 0x00 would be 0 in two bytes; only 0x00 is allowed.
        assert_eq!(read_varint(&[0x80, 0x00]), Varint::Malformed);
    }

    #[test]
    fn varint_above_the_maximum_cannot_be_written() {
        let mut buf = BytesMut::new();
        assert!(put_varint(&mut buf, MAX_VARINT as usize + 1).is_err());
    }

    #[test]
    fn strings_reject_nul_and_ill_formed_utf8() {
        // length 0x0003, "a", NUL, "b"
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, b'a', 0x00, b'b']));
        assert_eq!(r.string(), Err(DecodeError::Mqtt_1_5_4_1));
        // length 0x0003, an encoded surrogate U+D800 (ED A0 80)
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert_eq!(r.string(), Err(DecodeError::Mqtt_1_5_4_1));
        // length 0x0002, "é" (C3 A9)
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xC3, 0xA9]));
        assert_eq!(r.string().unwrap(), "é");
    }

    #[test]
    fn string_shorter_than_its_length_prefix_is_malformed() {
        // length 0x0005 but only two bytes follow
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a', b'b']));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn fields_longer_than_65535_bytes_cannot_be_written() {
        let mut buf = BytesMut::new();
        assert_eq!(
            put_binary(&mut buf, &[0; 65_536]),
            Err(EncodeError::FieldTooLong)
        );
        assert!(put_binary(&mut buf, &[0; 65_535]).is_ok());
    }
}
