//! MQTT 5 reason codes (§2.4) and their v3 equivalents.

/// An MQTT 5 reason code. v3 CONNACK return codes and SUBACK failure are mapped to and from
/// these so the broker core speaks one vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    Success,
    /// 0x01 Granted QoS 1.
    GrantedQoS1,
    /// 0x02 Granted QoS 2.
    GrantedQoS2,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWill,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted,
    /// 0x18 Continue authentication.
    ContinueAuthentication,
    /// 0x19 Re-authenticate.
    ReAuthenticate,
    /// 0x80 Unspecified error.
    UnspecifiedError,
    /// 0x81 Malformed Packet.
    MalformedPacket,
    /// 0x82 Protocol Error.
    ProtocolError,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword,
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x88 Server unavailable.
    ServerUnavailable,
    /// 0x89 Server busy.
    ServerBusy,
    /// 0x8A Banned.
    Banned,
    /// 0x8B Server shutting down.
    ServerShuttingDown,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout,
    /// 0x8E Session taken over.
    SessionTakenOver,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid,
    /// 0x95 Packet too large.
    PacketTooLarge,
    /// 0x96 Message rate too high.
    MessageRateTooHigh,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x98 Administrative action.
    AdministrativeAction,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid,
    /// 0x9A Retain not supported.
    RetainNotSupported,
    /// 0x9B QoS not supported.
    QoSNotSupported,
    /// 0x9C Use another server.
    UseAnotherServer,
    /// 0x9D Server moved.
    ServerMoved,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported,
}

const TABLE: &[(ReasonCode, u8, &str)] = &[
    (ReasonCode::Success, 0x00, "success"),
    (ReasonCode::GrantedQoS1, 0x01, "granted QoS 1"),
    (ReasonCode::GrantedQoS2, 0x02, "granted QoS 2"),
    (
        ReasonCode::DisconnectWithWill,
        0x04,
        "disconnect with will message",
    ),
    (
        ReasonCode::NoMatchingSubscribers,
        0x10,
        "no matching subscribers",
    ),
    (
        ReasonCode::NoSubscriptionExisted,
        0x11,
        "no subscription existed",
    ),
    (
        ReasonCode::ContinueAuthentication,
        0x18,
        "continue authentication",
    ),
    (ReasonCode::ReAuthenticate, 0x19, "re-authenticate"),
    (ReasonCode::UnspecifiedError, 0x80, "unspecified error"),
    (ReasonCode::MalformedPacket, 0x81, "malformed packet"),
    (ReasonCode::ProtocolError, 0x82, "protocol error"),
    (
        ReasonCode::ImplementationSpecificError,
        0x83,
        "implementation specific error",
    ),
    (
        ReasonCode::UnsupportedProtocolVersion,
        0x84,
        "unsupported protocol version",
    ),
    (
        ReasonCode::ClientIdentifierNotValid,
        0x85,
        "client identifier not valid",
    ),
    (
        ReasonCode::BadUserNameOrPassword,
        0x86,
        "bad user name or password",
    ),
    (ReasonCode::NotAuthorized, 0x87, "not authorized"),
    (ReasonCode::ServerUnavailable, 0x88, "server unavailable"),
    (ReasonCode::ServerBusy, 0x89, "server busy"),
    (ReasonCode::Banned, 0x8A, "banned"),
    (ReasonCode::ServerShuttingDown, 0x8B, "server shutting down"),
    (
        ReasonCode::BadAuthenticationMethod,
        0x8C,
        "bad authentication method",
    ),
    (ReasonCode::KeepAliveTimeout, 0x8D, "keep alive timeout"),
    (ReasonCode::SessionTakenOver, 0x8E, "session taken over"),
    (ReasonCode::TopicFilterInvalid, 0x8F, "topic filter invalid"),
    (ReasonCode::TopicNameInvalid, 0x90, "topic name invalid"),
    (
        ReasonCode::PacketIdentifierInUse,
        0x91,
        "packet identifier in use",
    ),
    (
        ReasonCode::PacketIdentifierNotFound,
        0x92,
        "packet identifier not found",
    ),
    (
        ReasonCode::ReceiveMaximumExceeded,
        0x93,
        "receive maximum exceeded",
    ),
    (ReasonCode::TopicAliasInvalid, 0x94, "topic alias invalid"),
    (ReasonCode::PacketTooLarge, 0x95, "packet too large"),
    (
        ReasonCode::MessageRateTooHigh,
        0x96,
        "message rate too high",
    ),
    (ReasonCode::QuotaExceeded, 0x97, "quota exceeded"),
    (
        ReasonCode::AdministrativeAction,
        0x98,
        "administrative action",
    ),
    (
        ReasonCode::PayloadFormatInvalid,
        0x99,
        "payload format invalid",
    ),
    (ReasonCode::RetainNotSupported, 0x9A, "retain not supported"),
    (ReasonCode::QoSNotSupported, 0x9B, "QoS not supported"),
    (ReasonCode::UseAnotherServer, 0x9C, "use another server"),
    (ReasonCode::ServerMoved, 0x9D, "server moved"),
    (
        ReasonCode::SharedSubscriptionsNotSupported,
        0x9E,
        "shared subscriptions not supported",
    ),
    (
        ReasonCode::ConnectionRateExceeded,
        0x9F,
        "connection rate exceeded",
    ),
    (ReasonCode::MaximumConnectTime, 0xA0, "maximum connect time"),
    (
        ReasonCode::SubscriptionIdentifiersNotSupported,
        0xA1,
        "subscription identifiers not supported",
    ),
    (
        ReasonCode::WildcardSubscriptionsNotSupported,
        0xA2,
        "wildcard subscriptions not supported",
    ),
];

impl ReasonCode {
    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map(|(_, b, _)| *b)
            .unwrap_or(0x80)
    }

    /// Parses a reason code byte; unknown values are `None`.
    pub fn from_u8(b: u8) -> Option<ReasonCode> {
        TABLE.iter().find(|(_, v, _)| *v == b).map(|(c, _, _)| *c)
    }

    /// A short description in words, for logs and CLI messages.
    pub fn description(self) -> &'static str {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map(|(_, _, d)| *d)
            .unwrap_or("unknown")
    }

    /// True for codes below 0x80.
    pub fn is_success(self) -> bool {
        self.as_u8() < 0x80
    }

    /// The granted-QoS reason code for a QoS level.
    pub fn granted(qos: crate::QoS) -> ReasonCode {
        match qos {
            crate::QoS::AtMostOnce => ReasonCode::Success,
            crate::QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            crate::QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code closest to this reason (§3.2.2.3 of 3.1.1):
    /// 0 accepted, 1 unacceptable protocol version, 2 identifier rejected, 3 server
    /// unavailable, 4 bad user name or password, 5 not authorized.
    pub fn to_v3_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword => 4,
            ReasonCode::NotAuthorized
            | ReasonCode::Banned
            | ReasonCode::BadAuthenticationMethod => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1/3.1.1 CONNACK return code.
    pub fn from_v3_connack(b: u8) -> Option<ReasonCode> {
        Some(match b {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.description(), self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_code_round_trips_through_its_byte() {
        for (code, byte, _) in TABLE {
            assert_eq!(code.as_u8(), *byte);
            assert_eq!(ReasonCode::from_u8(*byte), Some(*code));
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
    }

    #[test]
    fn v3_connack_codes_map_both_ways() {
        for b in 0..=5u8 {
            assert_eq!(ReasonCode::from_v3_connack(b).unwrap().to_v3_connack(), b);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
    }
}
