//! Protocol violations by a client, named by the spec rule they break, mapped to the reason
//! code of the DISCONNECT (v5) that precedes closing the connection — in one place.

use thingmq_codec::{DecodeError, ReasonCode};

/// A client broke the protocol; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum Violation {
    /// The bytes did not decode.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A second CONNECT on a connection [MQTT-3.1.0-2].
    #[error("second CONNECT [MQTT-3.1.0-2]")]
    Mqtt_3_1_0_2,
    /// Topic alias 0 or above our Topic Alias Maximum [MQTT-3.3.2-8, MQTT-3.3.2-9].
    #[error("topic alias out of range [MQTT-3.3.2-9]")]
    Mqtt_3_3_2_9,
    /// Empty topic name with no alias, or an alias we do not know (a Protocol Error, §3.3.2.3.4).
    #[error("unknown topic alias")]
    UnknownTopicAlias,
    /// Topic name with wildcards or otherwise invalid [MQTT-3.3.2-2].
    #[error("invalid topic name [MQTT-3.3.2-2]")]
    Mqtt_3_3_2_2,
    /// More unacknowledged QoS 1/2 PUBLISHes than our Receive Maximum [MQTT-3.3.4-7].
    #[error("receive maximum exceeded [MQTT-3.3.4-7]")]
    Mqtt_3_3_4_7,
    /// PUBLISH with a QoS above Maximum QoS [MQTT-3.2.2-11].
    #[error("QoS not supported [MQTT-3.2.2-11]")]
    Mqtt_3_2_2_11,
    /// RETAIN set while Retain Available is 0 [MQTT-3.2.2-14].
    #[error("retain not supported [MQTT-3.2.2-14]")]
    Mqtt_3_2_2_14,
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("no local on a shared subscription [MQTT-3.8.3-4]")]
    Mqtt_3_8_3_4,
    /// Session Expiry set at DISCONNECT after connecting with 0 [MQTT-3.14.2-2].
    #[error("session expiry changed from zero at DISCONNECT [MQTT-3.14.2-2]")]
    Mqtt_3_14_2_2,
    /// A Subscription Identifier although CONNACK said they are not available.
    #[error("subscription identifiers are not supported")]
    SubscriptionIdentifiersNotSupported,
    /// Subscription Identifier in a PUBLISH from a client [MQTT-3.3.4-6].
    #[error("subscription identifier in PUBLISH from client [MQTT-3.3.4-6]")]
    Mqtt_3_3_4_6,
    /// A packet only a server sends (CONNACK, SUBACK, …) arrived from a client.
    #[error("packet type {0} is not sent by clients")]
    ServerOnlyPacket(u8),
    /// AUTH without an authentication method negotiated at CONNECT [MQTT-4.12.0-1].
    #[error("AUTH without authentication method [MQTT-4.12.0-1]")]
    Mqtt_4_12_0_1,
    /// No packet within 1.5 × keep-alive [MQTT-3.1.2-24].
    #[error("keep alive timeout [MQTT-3.1.2-24]")]
    KeepAliveTimeout,
    /// Payload Format Indicator says UTF-8 but the payload is not [MQTT-3.3.2-4].
    #[error("payload is not UTF-8 [MQTT-3.3.2-4]")]
    PayloadFormatInvalid,
}

impl Violation {
    /// The reason code sent in DISCONNECT to a v5 client before closing.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Violation::Decode(e) => e.reason_code(),
            Violation::Mqtt_3_3_2_9 => ReasonCode::TopicAliasInvalid,
            Violation::Mqtt_3_3_2_2 => ReasonCode::TopicNameInvalid,
            Violation::Mqtt_3_3_4_7 => ReasonCode::ReceiveMaximumExceeded,
            Violation::Mqtt_3_2_2_11 => ReasonCode::QoSNotSupported,
            Violation::Mqtt_3_2_2_14 => ReasonCode::RetainNotSupported,
            Violation::KeepAliveTimeout => ReasonCode::KeepAliveTimeout,
            Violation::PayloadFormatInvalid => ReasonCode::PayloadFormatInvalid,
            Violation::SubscriptionIdentifiersNotSupported => {
                ReasonCode::SubscriptionIdentifiersNotSupported
            }
            Violation::Mqtt_3_1_0_2
            | Violation::UnknownTopicAlias
            | Violation::Mqtt_3_8_3_4
            | Violation::Mqtt_3_14_2_2
            | Violation::Mqtt_3_3_4_6
            | Violation::ServerOnlyPacket(_)
            | Violation::Mqtt_4_12_0_1 => ReasonCode::ProtocolError,
        }
    }
}
