//! AUTH (5.0 §3.15).

use super::UserProperty;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, ReasonCode};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

/// AUTH: enhanced authentication exchange (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 Success, 0x18 Continue authentication, 0x19 Re-authenticate.
    pub reason: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

/// AUTH properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// Authentication Method (0x15).
    pub authentication_method: Option<ByteString>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// Reason String (0x1F).
    pub reason_string: Option<ByteString>,
    /// User Property (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Authenticate Reason Codes (5.0 §3.15.2.1).
const REASONS: &[u8] = &[0x00, 0x18, 0x19];

impl Auth {
    /// Decodes a v5 AUTH body; the caller has already refused AUTH on v3.
    pub(crate) fn decode(mut r: Reader) -> Result<Self, DecodeError> {
        let mut a = Auth {
            reason: ReasonCode::Success,
            properties: AuthProperties::default(),
        };
        // Remaining Length 0 means Success without properties (§3.15.2.1). A lone reason code
        // is not a form the spec lists, but it is unambiguous, so it is accepted.
        if !r.is_empty() {
            a.reason = super::reason_in(r.u8()?, REASONS)?;
            if !r.is_empty() {
                a.properties = properties::read(&mut r)?;
            }
        }
        r.finish()?;
        Ok(a)
    }

    fn is_short(&self) -> bool {
        self.reason == ReasonCode::Success && properties::content_len(&self.properties) == 0
    }

    pub(crate) fn body_len(&self) -> usize {
        if self.is_short() {
            0
        } else {
            1 + properties::encoded_len(&self.properties)
        }
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.is_short() {
            return Ok(());
        }
        buf.put_u8(self.reason.as_u8());
        properties::write(&self.properties, buf)
    }
}

impl PropertySet for AuthProperties {
    const ALLOWED: u64 = mask(&[
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REASON_STRING,
        id::USER_PROPERTY,
    ]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::AUTHENTICATION_METHOD, Value::Str(v)) => self.authentication_method = Some(v),
            (id::AUTHENTICATION_DATA, Value::Bin(v)) => self.authentication_data = Some(v),
            (id::REASON_STRING, Value::Str(v)) => self.reason_string = Some(v),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_str(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        s.opt_bin(id::AUTHENTICATION_DATA, self.authentication_data.as_ref());
        s.opt_str(id::REASON_STRING, self.reason_string.as_ref());
        s.users(&self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testing::*;
    use crate::Packet;

    #[test]
    fn v5_auth_success_is_two_bytes() {
        both_ways(
            Packet::Auth(Auth {
                reason: ReasonCode::Success,
                properties: AuthProperties::default(),
            }),
            V5,
            &[
                0xF0, // AUTH
                0x00, // remaining length 0: success, no properties
            ],
        );
    }

    #[test]
    fn v5_auth_continue_with_method_and_data() {
        both_ways(
            Packet::Auth(Auth {
                reason: ReasonCode::ContinueAuthentication,
                properties: AuthProperties {
                    authentication_method: Some("S".into()),
                    authentication_data: Some(Bytes::from_static(&[0xAB])),
                    ..Default::default()
                },
            }),
            V5,
            &[
                0xF0, // AUTH
                0x0A, // remaining length 10
                0x18, // continue authentication
                0x08, // property length 8
                0x15, 0x00, 0x01, b'S', // authentication method "S"
                0x16, 0x00, 0x01, 0xAB, // authentication data AB
            ],
        );
    }

    #[test]
    fn v5_auth_reason_without_properties_keeps_the_property_length() {
        both_ways(
            Packet::Auth(Auth {
                reason: ReasonCode::ReAuthenticate,
                properties: AuthProperties::default(),
            }),
            V5,
            &[
                0xF0, // AUTH
                0x02, // remaining length 2
                0x19, // re-authenticate
                0x00, // property length 0
            ],
        );
    }

    #[test]
    fn auth_cannot_be_encoded_before_v5() {
        let p = Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: AuthProperties::default(),
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            crate::encode(&p, V4, &mut buf),
            Err(EncodeError::WrongVersion)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn v5_auth_rejects_a_non_auth_reason() {
        let wire = [
            0xF0, // AUTH
            0x02, // remaining length 2
            0x87, // not authorized: not an AUTH reason
            0x00, // property length 0
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::InvalidReasonCode(0x87)));
    }

    #[test]
    fn v5_auth_duplicate_method_is_rejected() {
        let wire = [
            0xF0, // AUTH
            0x0A, // remaining length 10
            0x18, // continue authentication
            0x08, // property length 8
            0x15, 0x00, 0x01, b'A', // authentication method "A"
            0x15, 0x00, 0x01, b'B', // authentication method "B": duplicate
        ];
        assert_eq!(dec(&wire, V5), Err(DecodeError::DuplicateProperty(0x15)));
    }
}
