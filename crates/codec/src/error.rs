//! Decode and encode errors. Each decode error is named by the spec rule it breaks and maps
//! to the reason code the broker sends before closing ([`DecodeError::reason_code`]).

use crate::ReasonCode;

/// Why bytes could not be decoded into a packet.
// Variants are named after spec rule ids (`Mqtt_3_3_1_4` is [MQTT-3.3.1-4]) so a failing
// conformance test points straight at the paragraph; camel case would blur the numbers.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is larger than the receiver's Maximum Packet Size (decided from the fixed
    /// header, before the body is buffered) [MQTT-3.2.2-15].
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Total packet size from the fixed header.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// Remaining Length is longer than four bytes or otherwise malformed [MQTT-1.5.5-1].
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// Packet type 0 or, on v3, 15 [MQTT-2.1.2].
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// Reserved bits of the fixed header have the wrong value [MQTT-2.1.3-1].
    #[error("reserved flags 0x{flags:X} are invalid for packet type {kind}")]
    Mqtt_2_1_3_1 {
        /// Packet type.
        kind: u8,
        /// The flag nibble found.
        flags: u8,
    },
    /// PUBLISH with both QoS bits set [MQTT-3.3.1-4].
    #[error("PUBLISH with QoS 3")]
    Mqtt_3_3_1_4,
    /// A QoS 0 PUBLISH with the DUP flag set [MQTT-3.3.1-2].
    #[error("QoS 0 PUBLISH with DUP set")]
    Mqtt_3_3_1_2,
    /// Packet identifier zero [MQTT-2.2.1-3].
    #[error("packet identifier 0")]
    Mqtt_2_2_1_3,
    /// A UTF-8 string is not well-formed or contains U+0000 / surrogates [MQTT-1.5.4-1/2].
    #[error("invalid UTF-8 string")]
    Mqtt_1_5_4_1,
    /// The packet ended before a field was complete, or had bytes left over.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Protocol name is not `MQTT` / `MQIsdp` [MQTT-3.1.2-1].
    #[error("unknown protocol name")]
    Mqtt_3_1_2_1,
    /// Protocol level not 3, 4 or 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0}")]
    Mqtt_3_1_2_2(u8),
    /// CONNECT reserved flag set [MQTT-3.1.2-3].
    #[error("CONNECT reserved flag set")]
    Mqtt_3_1_2_3,
    /// Will QoS / Will Retain set without the Will Flag, or Will QoS 3 [MQTT-3.1.2-11..15].
    #[error("invalid will flags")]
    Mqtt_3_1_2_11,
    /// Password flag without user name flag on v3.1.1 [MQTT-3.1.2-22].
    #[error("password flag set without user name flag")]
    Mqtt_3_1_2_22,
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter [MQTT-3.8.3-3, MQTT-3.10.3-2].
    #[error("SUBSCRIBE/UNSUBSCRIBE without topic filters")]
    Mqtt_3_8_3_3,
    /// Reserved bits of the subscription options set [MQTT-3.8.3-5], retain handling 3, or
    /// maximum QoS 3.
    #[error("reserved subscription option bits set")]
    Mqtt_3_8_3_5,
    /// CONNACK Acknowledge Flags with a reserved bit set [MQTT-3.2.2-1].
    #[error("CONNACK reserved flag set")]
    Mqtt_3_2_2_1,
    /// A property that is not allowed on this packet, or an unknown property identifier.
    #[error("property 0x{0:02X} not allowed here")]
    InvalidProperty(u8),
    /// A property other than User Property or Subscription Identifier appears twice.
    #[error("property 0x{0:02X} appears twice")]
    DuplicateProperty(u8),
    /// A property value out of range (e.g. Receive Maximum 0, Maximum QoS 2).
    #[error("property 0x{0:02X} has an invalid value")]
    InvalidPropertyValue(u8),
    /// A reason code that is not valid for this packet.
    #[error("invalid reason code 0x{0:02X}")]
    InvalidReasonCode(u8),
}

impl DecodeError {
    /// The reason code a v5 receiver sends in DISCONNECT (or CONNACK) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::Mqtt_3_1_2_2(_) => ReasonCode::UnsupportedProtocolVersion,
            // The spec calls each of these a Protocol Error (e.g. §3.1.2.11.3 Receive Maximum 0).
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidProperty(_)
            | DecodeError::InvalidPropertyValue(_) => ReasonCode::ProtocolError,
            DecodeError::Mqtt_2_2_1_3 => ReasonCode::ProtocolError,
            _ => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet is larger than the 268,435,455-byte maximum.
    #[error("packet too large to encode")]
    PacketTooLarge,
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet cannot be sent on this protocol version (e.g. AUTH on v3).
    #[error("packet not valid for this protocol version")]
    WrongVersion,
    /// A field holds a value the wire format cannot carry or the receiver must reject (a QoS 1/2
    /// PUBLISH without packet identifier, a Subscription Identifier above 268,435,455, a
    /// SUBSCRIBE without filters).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}
