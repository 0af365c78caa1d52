//! Errors: [`ClientError`] for one request, [`ConnectionError`] for why a connection ended.

use std::sync::Arc;
use thingmq_codec::{QoS, ReasonCode};

/// Why a request (publish, subscribe, …) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The event loop has stopped (disconnect requested, reconnecting turned off, or dropped).
    #[error("the client's event loop has stopped")]
    Closed,
    /// The topic name or filter is not valid.
    #[error("invalid topic {topic:?}: {why}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        why: String,
    },
    /// The PUBLISH is larger than the server's Maximum Packet Size.
    #[error("packet of {size} bytes exceeds the server's maximum packet size {max}")]
    PacketTooLarge {
        /// Encoded size.
        size: usize,
        /// The server's limit.
        max: u32,
    },
    /// The server supports QoS only up to this.
    #[error("the server supports QoS up to {0:?}")]
    QoSNotSupported(QoS),
    /// The server does not support retained messages.
    #[error("the server does not support retained messages")]
    RetainNotSupported,
    /// The server answered PUBACK / PUBREC / PUBCOMP with an error reason code.
    #[error("rejected by the server: {0}")]
    Rejected(ReasonCode),
}

/// Why a connection ended or could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Socket, TLS or WebSocket error (shared so the event can be cloned).
    #[error("{0}")]
    Io(Arc<std::io::Error>),
    /// The server closed the connection without DISCONNECT.
    #[error("connection closed by the server")]
    Closed,
    /// CONNACK refused the connection.
    #[error("connection refused: {} (0x{:02x}){}", .code.description(), .code.as_u8(), suffix(.reason_string))]
    Refused {
        /// The reason code (v3 return codes are mapped to their v5 equivalents).
        code: ReasonCode,
        /// v5 Reason String.
        reason_string: Option<String>,
    },
    /// The server sent DISCONNECT.
    #[error("disconnected by the server: {} (0x{:02x}){}", .reason.description(), .reason.as_u8(), suffix(.reason_string))]
    ServerDisconnect {
        /// Its reason code.
        reason: ReasonCode,
        /// v5 Reason String.
        reason_string: Option<String>,
    },
    /// No CONNACK within the connect timeout.
    #[error("no CONNACK within the connect timeout")]
    ConnAckTimeout,
    /// No PINGRESP within the ping timeout.
    #[error("no PINGRESP within the ping timeout")]
    PingTimeout,
    /// The server's bytes were not valid MQTT.
    #[error("malformed packet from the server: {0}")]
    Decode(#[from] thingmq_codec::DecodeError),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Options that cannot work (a bad URL, unreadable certificate file).
    #[error("{0}")]
    Config(String),
}

impl ConnectionError {
    /// True when retrying cannot help: refused for credentials, authorization, version, client
    /// id or a ban, or a configuration error.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectionError::Refused { code, .. } => matches!(
                code,
                ReasonCode::UnsupportedProtocolVersion
                    | ReasonCode::ClientIdentifierNotValid
                    | ReasonCode::BadUserNameOrPassword
                    | ReasonCode::NotAuthorized
                    | ReasonCode::Banned
                    | ReasonCode::BadAuthenticationMethod
            ),
            ConnectionError::Config(_) => true,
            _ => false,
        }
    }
}

impl From<std::io::Error> for ConnectionError {
    fn from(e: std::io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

fn suffix(reason_string: &Option<String>) -> String {
    reason_string
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

impl PartialEq for ConnectionError {
    /// Compares by kind and content; I/O errors compare by kind.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ConnectionError::Io(a), ConnectionError::Io(b)) => a.kind() == b.kind(),
            _ => self.to_string() == other.to_string(),
        }
    }
}

impl Eq for ConnectionError {}
