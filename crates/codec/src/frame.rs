//! The fixed header and the entry points: [`check`], [`decode`], [`encode`], [`encoded_len`].
//!
//! This is the one dispatch `match` on packet kind; everything packet-specific lives in the
//! packet's own file.

use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, PubAck, PubComp, PubRec, PubRel, Publish, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use crate::primitives::{put_varint, read_varint, varint_len, Reader, Varint, MAX_VARINT};
use crate::{DecodeError, EncodeError, Packet, ProtocolVersion};
use bytes::{BufMut, Bytes, BytesMut};

/// What the fixed header says about the next packet in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// First byte: packet type in the high nibble, flags in the low nibble.
    pub first_byte: u8,
    /// Remaining Length.
    pub remaining_length: u32,
    /// Bytes taken by the fixed header (1 + varint length).
    pub header_len: usize,
}

impl FrameHeader {
    /// Total bytes of the packet, header included.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_length as usize
    }
}

/// Looks at the fixed header only, and says whether a whole packet is buffered.
///
/// Returns `Ok(Some(header))` once the whole packet (`header.frame_len()` bytes) is in `buf`,
/// and `Ok(None)` while more bytes are needed. Fails with [`DecodeError::PacketTooLarge`] as
/// soon as the fixed header says the total size (header plus Remaining Length) exceeds
/// `max_packet_size` — before the body is buffered, so a peer cannot make us hold a huge packet
/// just to reject it. Pass `u32::MAX` for no limit beyond the protocol's own. Also fails on
/// packet type 0 and on a malformed Remaining Length. Reserved flags and everything else are
/// checked by [`decode`].
pub fn check(buf: &[u8], max_packet_size: u32) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    // Everything the first byte can tell is checked before waiting for the rest, so garbage
    // (an HTTP request, say) is refused at once, not after the connect timeout.
    let (kind, flags) = (first_byte >> 4, first_byte & 0x0F);
    if kind == 0 {
        return Err(DecodeError::InvalidPacketType(0));
    }
    if kind == 3 && flags & 0b0110 == 0b0110 {
        return Err(DecodeError::Mqtt_3_3_1_4);
    }
    if kind != 3 && flags != required_flags(kind) {
        return Err(DecodeError::Mqtt_2_1_3_1 { kind, flags });
    }
    let (remaining_length, n) = match read_varint(&buf[1..]) {
        Varint::Done(v, n) => (v, n),
        Varint::Incomplete => return Ok(None),
        Varint::Malformed => return Err(DecodeError::MalformedRemainingLength),
    };
    let header = FrameHeader {
        first_byte,
        remaining_length,
        header_len: 1 + n,
    };
    let size = header.frame_len();
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    Ok(Some(header))
}

/// Decodes the packet at the front of `buf`, if it is all there.
///
/// When a whole packet is buffered it is split off `buf` and parsed; its strings and payload
/// are slices of that one allocation, not copies. `Ok(None)` means more bytes are needed and
/// leaves `buf` untouched. After an error the connection must be closed: the bytes of the bad
/// packet may or may not have been consumed.
///
/// `version` is the connection's negotiated version; CONNECT ignores it because its own
/// protocol level decides. Spec violations come back as [`DecodeError`] variants named by rule.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = check(buf, max_packet_size)? else {
        return Ok(None);
    };
    let frame = buf.split_to(header.frame_len()).freeze();
    parse(header.first_byte, frame.slice(header.header_len..), version).map(Some)
}

/// Step two of decoding: one whole packet body, its kind and flags from the first byte.
fn parse(first_byte: u8, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let kind = first_byte >> 4;
    let flags = first_byte & 0x0F;
    // Type 15 does not exist before v5, whatever its flags say.
    if kind == 15 && !version.is_v5() {
        return Err(DecodeError::InvalidPacketType(15));
    }
    let r = Reader::new(body);
    Ok(match kind {
        1 => Packet::Connect(Box::new(Connect::decode(r)?)),
        2 => Packet::ConnAck(ConnAck::decode(r, version)?),
        3 => Packet::Publish(Publish::decode(flags, r, version)?),
        4 => Packet::PubAck(PubAck::decode(r, version)?),
        5 => Packet::PubRec(PubRec::decode(r, version)?),
        6 => Packet::PubRel(PubRel::decode(r, version)?),
        7 => Packet::PubComp(PubComp::decode(r, version)?),
        8 => Packet::Subscribe(Subscribe::decode(r, version)?),
        9 => Packet::SubAck(SubAck::decode(r, version)?),
        10 => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        11 => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        12 => ping(r, Packet::PingReq)?,
        13 => ping(r, Packet::PingResp)?,
        14 => Packet::Disconnect(Disconnect::decode(r, version)?),
        15 => Packet::Auth(Auth::decode(r)?),
        _ => return Err(DecodeError::InvalidPacketType(kind)),
    })
}

/// The flag nibble every packet but PUBLISH must carry [MQTT-2.1.3-1].
fn required_flags(kind: u8) -> u8 {
    match kind {
        6 | 8 | 10 => 0b0010,
        _ => 0,
    }
}

/// PINGREQ and PINGRESP are a fixed header alone.
fn ping(r: Reader, packet: Packet) -> Result<Packet, DecodeError> {
    r.finish()?;
    Ok(packet)
}

/// The version whose wire format a packet is written in: CONNECT carries its own.
fn wire_version(packet: &Packet, version: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(c) => c.protocol,
        _ => version,
    }
}

fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => p.flags(),
        _ => required_flags(packet.kind()),
    };
    packet.kind() << 4 | flags
}

/// Remaining Length of `packet` as `encode` would write it.
fn body_len(packet: &Packet, v: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(p) => p.body_len(),
        Packet::ConnAck(p) => p.body_len(v),
        Packet::Publish(p) => p.body_len(v),
        Packet::PubAck(p) => p.body_len(v),
        Packet::PubRec(p) => p.body_len(v),
        Packet::PubRel(p) => p.body_len(v),
        Packet::PubComp(p) => p.body_len(v),
        Packet::Subscribe(p) => p.body_len(v),
        Packet::SubAck(p) => p.body_len(v),
        Packet::Unsubscribe(p) => p.body_len(v),
        Packet::UnsubAck(p) => p.body_len(v),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(p) => p.body_len(v),
        Packet::Auth(p) => p.body_len(),
    }
}

fn encode_body(packet: &Packet, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(p) => p.encode_body(buf),
        Packet::ConnAck(p) => p.encode_body(v, buf),
        Packet::Publish(p) => p.encode_body(v, buf),
        Packet::PubAck(p) => p.encode_body(v, buf),
        Packet::PubRec(p) => p.encode_body(v, buf),
        Packet::PubRel(p) => p.encode_body(v, buf),
        Packet::PubComp(p) => p.encode_body(v, buf),
        Packet::Subscribe(p) => p.encode_body(v, buf),
        Packet::SubAck(p) => p.encode_body(v, buf),
        Packet::Unsubscribe(p) => p.encode_body(v, buf),
        Packet::UnsubAck(p) => p.encode_body(v, buf),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(p) => p.encode_body(v, buf),
        Packet::Auth(p) => p.encode_body(buf),
    }
}

/// Appends the encoded packet to `buf`.
///
/// Fields a version cannot carry are left out: properties and reason codes on v3.1/v3.1.1,
/// where CONNACK's code is mapped with [`ReasonCode::to_v3_connack`](crate::ReasonCode), SUBACK
/// failures become 0x80, UNSUBACK has no reason codes and DISCONNECT is `e0 00`. AUTH on v3
/// fails with [`EncodeError::WrongVersion`]. On v5 acknowledgements use the short forms the spec
/// allows (no reason code for Success without properties, no Property Length without
/// properties). CONNECT is written in its own `protocol` version. On error nothing is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if matches!(packet, Packet::Auth(_)) && !version.is_v5() {
        return Err(EncodeError::WrongVersion);
    }
    let v = wire_version(packet, version);
    let len = body_len(packet, v);
    if len > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    let start = buf.len();
    buf.reserve(1 + varint_len(len) + len);
    buf.put_u8(first_byte(packet));
    let written = put_varint(buf, len).and_then(|()| encode_body(packet, v, buf));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

/// Exact number of bytes [`encode`] would append (used to honour a peer's Maximum Packet
/// Size). Meaningless for packets `encode` refuses.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let len = body_len(packet, wire_version(packet, version));
    1 + varint_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_bad_flags_from_the_first_byte_alone() {
        // 'G' of "GET / HTTP/1.1": PUBACK (4) with flags 0111.
        assert_eq!(
            check(b"G", u32::MAX),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 4, flags: 7 })
        );
        // PUBLISH with QoS 3.
        assert_eq!(check(&[0x36], u32::MAX), Err(DecodeError::Mqtt_3_3_1_4));
    }
    use crate::{PubAck, QoS};
    use std::num::NonZeroU16;

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

    #[test]
    fn check_rejects_a_huge_packet_from_its_header_alone() {
        let buf = [
            0x30, // PUBLISH, QoS 0
            0xFF, 0xFF, 0xFF, 0x7F, // remaining length 268,435,455; no body follows
        ];
        assert_eq!(
            check(&buf, 1024 * 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1024 * 1024
            })
        );
    }

    #[test]
    fn check_counts_the_header_towards_the_limit() {
        let buf = [
            0x30, // PUBLISH
            0x08, // remaining length 8: 10 bytes in all
        ];
        assert_eq!(check(&buf, 10), Ok(None));
        assert!(matches!(
            check(&buf, 9),
            Err(DecodeError::PacketTooLarge { size: 10, max: 9 })
        ));
    }

    #[test]
    fn check_waits_for_the_whole_header_and_body() {
        assert_eq!(check(&[], 100), Ok(None));
        // PUBLISH, remaining length with the continuation bit set and nothing after it
        assert_eq!(check(&[0x30, 0x80], 100), Ok(None));
        // PINGREQ, remaining length 0: complete
        assert_eq!(
            check(&[0xC0, 0x00], 100),
            Ok(Some(FrameHeader {
                first_byte: 0xC0,
                remaining_length: 0,
                header_len: 2
            }))
        );
    }

    #[test]
    fn check_rejects_packet_type_zero_and_five_byte_lengths() {
        assert_eq!(
            check(&[0x00, 0x00], 100),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert_eq!(
            check(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], u32::MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn decode_leaves_an_incomplete_packet_in_the_buffer() {
        let mut buf = BytesMut::from(
            &[
                0x40, // PUBACK
                0x02, // remaining length 2
                0x00, // packet id MSB; LSB not yet here
            ][..],
        );
        assert_eq!(decode(&mut buf, V4, u32::MAX), Ok(None));
        assert_eq!(buf.len(), 3);
        buf.put_u8(0x07); // packet id LSB
        let p = decode(&mut buf, V4, u32::MAX).unwrap().unwrap();
        assert_eq!(p, Packet::PubAck(PubAck::new(NonZeroU16::new(7).unwrap())));
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_takes_one_packet_at_a_time() {
        let mut buf = BytesMut::from(
            &[
                0xC0, 0x00, // PINGREQ
                0xD0, 0x00, // PINGRESP
            ][..],
        );
        assert_eq!(decode(&mut buf, V4, 100), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, V4, 100), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, V4, 100), Ok(None));
    }

    #[test]
    fn ping_encodes_as_two_bytes() {
        let mut buf = BytesMut::new();
        encode(&Packet::PingReq, V4, &mut buf).unwrap();
        encode(&Packet::PingResp, ProtocolVersion::V5, &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            [
                0xC0, 0x00, // PINGREQ, remaining length 0
                0xD0, 0x00, // PINGRESP, remaining length 0
            ]
        );
        assert_eq!(encoded_len(&Packet::PingReq, V4), 2);
    }

    #[test]
    fn ping_with_a_body_or_flags_is_rejected() {
        let mut buf = BytesMut::from(&[0xC0, 0x01, 0x00][..]); // PINGREQ with one body byte
        assert!(matches!(
            decode(&mut buf, V4, 100),
            Err(DecodeError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&[0xC1, 0x00][..]); // PINGREQ with flag bit 0 set
        assert_eq!(
            decode(&mut buf, V4, 100),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 12, flags: 1 })
        );
    }

    #[test]
    fn auth_packet_type_is_invalid_before_v5() {
        let mut buf = BytesMut::from(&[0xF1, 0x00][..]); // AUTH with a flag bit, on v3.1
        let v3 = ProtocolVersion::V3_1;
        // The flags are refused first, from the first byte alone.
        assert_eq!(
            decode(&mut buf, v3, 100),
            Err(DecodeError::Mqtt_2_1_3_1 { kind: 15, flags: 1 })
        );
        let mut buf = BytesMut::from(&[0xF0, 0x00][..]); // AUTH, remaining length 0
        assert_eq!(
            decode(&mut buf, V4, 100),
            Err(DecodeError::InvalidPacketType(15))
        );
    }

    #[test]
    fn failed_encode_appends_nothing() {
        let mut buf = BytesMut::from(&b"xy"[..]);
        let p = Packet::Publish(crate::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: String::from_utf8(vec![b'a'; 70_000]).unwrap().into(),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::new(),
        });
        assert_eq!(encode(&p, V4, &mut buf), Err(EncodeError::FieldTooLong));
        assert_eq!(&buf[..], b"xy");
    }
}
