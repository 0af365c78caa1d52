//! The layout PUBACK, PUBREC, PUBREL and PUBCOMP share (5.0 §3.4–§3.7): packet id, then on v5
//! a reason code and properties, both of which may be left out.
//!
//! Each of the four packet files wraps these functions with its own reason-code table and
//! byte-literal tests.

use super::AckProperties;
use crate::primitives::Reader;
use crate::properties::{self, id, mask, PropertySet, Sink, Value};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::{BufMut, BytesMut};

impl PropertySet for AckProperties {
    const ALLOWED: u64 = mask(&[id::REASON_STRING, id::USER_PROPERTY]);

    fn set(&mut self, pid: u8, v: Value) -> Result<(), DecodeError> {
        match (pid, v) {
            (id::REASON_STRING, Value::Str(s)) => self.reason_string = Some(s),
            (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
            _ => return Err(DecodeError::InvalidProperty(pid)),
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) {
        s.opt_str(id::REASON_STRING, self.reason_string.as_ref());
        s.users(&self.user_properties);
    }
}

/// The fields of a decoded acknowledgement.
pub(crate) type Fields = (PacketId, ReasonCode, AckProperties);

pub(crate) fn decode(
    mut r: Reader,
    version: ProtocolVersion,
    reasons: &[u8],
) -> Result<Fields, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut reason = ReasonCode::Success;
    let mut props = AckProperties::default();
    // Remaining Length 2 means Success without properties, 3 means no properties
    // (§3.4.2.1, §3.4.2.2.1); v3 has the packet id only.
    if version.is_v5() && !r.is_empty() {
        reason = super::reason_in(r.u8()?, reasons)?;
        if !r.is_empty() {
            props = properties::read(&mut r)?;
        }
    }
    r.finish()?;
    Ok((packet_id, reason, props))
}

/// What a v5 acknowledgement needs after the packet id.
enum Form {
    IdOnly,
    WithReason,
    Full,
}

fn form(reason: ReasonCode, props: &AckProperties, version: ProtocolVersion) -> Form {
    let no_props = properties::content_len(props) == 0;
    match (version.is_v5(), reason, no_props) {
        (false, _, _) | (true, ReasonCode::Success, true) => Form::IdOnly,
        (true, _, true) => Form::WithReason,
        (true, _, false) => Form::Full,
    }
}

pub(crate) fn body_len(
    reason: ReasonCode,
    props: &AckProperties,
    version: ProtocolVersion,
) -> usize {
    match form(reason, props, version) {
        Form::IdOnly => 2,
        Form::WithReason => 3,
        Form::Full => 3 + properties::encoded_len(props),
    }
}

pub(crate) fn encode(
    packet_id: PacketId,
    reason: ReasonCode,
    props: &AckProperties,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(packet_id.get());
    match form(reason, props, version) {
        Form::IdOnly => Ok(()),
        Form::WithReason => {
            buf.put_u8(reason.as_u8());
            Ok(())
        }
        Form::Full => {
            buf.put_u8(reason.as_u8());
            properties::write(props, buf)
        }
    }
}
