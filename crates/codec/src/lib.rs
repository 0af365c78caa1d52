//! MQTT 3.1, 3.1.1 and 5.0 packet codec.
//!
//! Bytes in, typed [`Packet`]s out, and back. Nothing else in thingmq knows the wire format.
//!
//! Decoding is two-step (see `DESIGN.md`): [`check`] looks at the fixed header only and says
//! whether a whole packet is buffered and whether it is over the size limit — before the body is
//! buffered — and [`decode`] then parses it. [`encode`] writes a packet for a given
//! [`ProtocolVersion`]; fields a version cannot carry (v5 properties on a v3.1.1 connection) are
//! left out.
//!
//! Main types: [`Packet`] and one struct per packet kind in [`packet`], [`ReasonCode`],
//! [`QoS`], [`ProtocolVersion`], [`DecodeError`] (named by the spec rule that was broken) and the
//! topic helpers in [`topic`].

mod error;
mod frame;
pub mod packet;
mod primitives;
mod properties;
mod reason;
pub mod topic;

pub use error::{DecodeError, EncodeError};
pub use frame::{check, decode, encode, encoded_len, FrameHeader};
pub use packet::*;
pub use reason::ReasonCode;

use std::num::NonZeroU16;

/// A packet identifier: never zero on the wire ([MQTT-2.2.1-3]).
pub type PacketId = NonZeroU16;

/// The protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V3_1,
    /// MQTT 3.1.1 (level 4).
    V3_1_1,
    /// MQTT 5.0 (level 5).
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version as people write it: `3.1`, `3.1.1` or `5.0`.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "3.1",
            ProtocolVersion::V3_1_1 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }
    }

    /// True for MQTT 5.0, the only version with properties and reason codes on every ack.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS level.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}
