//! One module per MQTT control packet kind. Each holds the packet struct, its v5 properties,
//! and its `decode`/`encode` functions with byte-literal tests.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use auth::{Auth, AuthProperties};
pub use connack::{ConnAck, ConnAckProperties};
pub use connect::{Connect, ConnectProperties, LastWill, WillProperties};
pub use disconnect::{Disconnect, DisconnectProperties};
pub use puback::PubAck;
pub use pubcomp::PubComp;
pub use publish::{Publish, PublishProperties};
pub use pubrec::PubRec;
pub use pubrel::PubRel;
pub use suback::{SubAck, SubAckProperties};
pub use subscribe::{RetainHandling, Subscribe, SubscribeProperties, SubscriptionOptions};
pub use unsuback::{UnsubAck, UnsubAckProperties};
pub use unsubscribe::{Unsubscribe, UnsubscribeProperties};

use crate::{DecodeError, ReasonCode};
use bytes::Bytes;
use bytestring::ByteString;

/// Parses a reason code byte and checks it is one the packet may carry (each packet's table in
/// §2.4 of MQTT 5 lists its own codes).
pub(crate) fn reason_in(b: u8, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    match ReasonCode::from_u8(b) {
        Some(code) if allowed.contains(&b) => Ok(code),
        _ => Err(DecodeError::InvalidReasonCode(b)),
    }
}

/// A UTF-8 string pair property (MQTT 5 User Property, 0x26). Order and duplicates are kept.
pub type UserProperty = (ByteString, ByteString);

/// Properties shared by PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// Reason String (0x1F): human-readable, for diagnostics only.
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Publish),
    /// PUBACK (4).
    PubAck(PubAck),
    /// PUBREC (5).
    PubRec(PubRec),
    /// PUBREL (6).
    PubRel(PubRel),
    /// PUBCOMP (7).
    PubComp(PubComp),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect),
    /// AUTH (15), MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The packet type number from the fixed header (1..=15).
    pub fn kind(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// Binary data as the codec hands it out: a cheap, reference-counted slice of the read buffer.
pub type Binary = Bytes;

/// Helpers for the byte-literal tests in each packet file.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{DecodeError, Packet, PacketId, ProtocolVersion};
    use bytes::BytesMut;

    pub(crate) const V3: ProtocolVersion = ProtocolVersion::V3_1;
    pub(crate) const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;

    pub(crate) fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// Encodes, checking `encoded_len` agrees with what was written.
    pub(crate) fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        crate::encode(p, v, &mut buf).unwrap();
        assert_eq!(buf.len(), crate::encoded_len(p, v), "encoded_len of {p:?}");
        buf.to_vec()
    }

    /// Decodes one packet that must take exactly all of `wire`.
    pub(crate) fn dec(wire: &[u8], v: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
        let mut buf = BytesMut::from(wire);
        let p = crate::decode(&mut buf, v, u32::MAX)?;
        if p.is_some() {
            assert!(buf.is_empty(), "decode left {} bytes", buf.len());
        }
        Ok(p)
    }

    /// `p` encodes to exactly `wire` and `wire` decodes to exactly `p`.
    pub(crate) fn both_ways(p: Packet, v: ProtocolVersion, wire: &[u8]) {
        assert_eq!(enc(&p, v), wire, "encoding {p:?}");
        assert_eq!(dec(wire, v), Ok(Some(p)), "decoding {wire:02x?}");
    }
}
