//! The binary form of stored values. Each value starts with its format version (this build
//! writes [`FORMAT_VERSION`] and reads back to [`OLDEST_FORMAT_VERSION`]); integers are
//! big-endian, strings and byte strings are length-prefixed (u32), options have a 0/1 tag.
//! Fields added by a format are appended at the end of a value and read only from values
//! of that format or later.

use crate::records::{EntryRecord, EntryState, ListenerRef, MessageRecord, SessionRecord};
use crate::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use bytes::Bytes;
use bytestring::ByteString;
use std::num::NonZeroU32;
use thingmq_broker::router::SubscriptionEntry;
use thingmq_broker::session::SubscriptionRecord;
use thingmq_codec::{
    LastWill, ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions,
    WillProperties,
};

/// Why a value could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeFailure {
    /// Written by another format version.
    Version(u8),
    /// Damaged or truncated.
    Corrupt(&'static str),
}

type R<T> = Result<T, DecodeFailure>;

#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer(vec![FORMAT_VERSION])
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
            None => self.u8(0),
        }
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    /// Format version of the value being read.
    version: u8,
}

impl<'a> Reader<'a> {
    /// Checks the version byte.
    pub(crate) fn new(buf: &'a [u8]) -> R<Reader<'a>> {
        match buf.split_first() {
            Some((&v, rest)) if (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&v) => {
                Ok(Reader {
                    buf: rest,
                    version: v,
                })
            }
            Some((&v, _)) => Err(DecodeFailure::Version(v)),
            None => Err(DecodeFailure::Corrupt("empty value")),
        }
    }
    /// True when the value has the fields format `v` added.
    fn has(&self, v: u8) -> bool {
        self.version >= v
    }
    pub(crate) fn end(&self) -> R<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeFailure::Corrupt("trailing bytes"))
        }
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.buf.len() < n {
            return Err(DecodeFailure::Corrupt("truncated value"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeFailure::Corrupt("bad boolean")),
        }
    }
    fn bytes(&mut self) -> R<Bytes> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn string(&mut self) -> R<ByteString> {
        ByteString::try_from(self.bytes()?).map_err(|_| DecodeFailure::Corrupt("bad UTF-8"))
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<Option<T>> {
        if self.bool()? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }
    fn qos(&mut self) -> R<QoS> {
        QoS::from_u8(self.u8()?).ok_or(DecodeFailure::Corrupt("bad QoS"))
    }
}

fn w_users(w: &mut Writer, users: &[thingmq_codec::UserProperty]) {
    w.u32(u32::try_from(users.len()).unwrap_or(u32::MAX));
    for (k, v) in users {
        w.bytes(k.as_bytes());
        w.bytes(v.as_bytes());
    }
}

fn r_users(r: &mut Reader<'_>) -> R<Vec<thingmq_codec::UserProperty>> {
    let n = r.u32()?;
    (0..n).map(|_| Ok((r.string()?, r.string()?))).collect()
}

/// The properties shared by messages and wills.
struct Travelling<'a> {
    payload_format_indicator: &'a Option<bool>,
    content_type: &'a Option<ByteString>,
    response_topic: &'a Option<ByteString>,
    correlation_data: &'a Option<Bytes>,
    user_properties: &'a [thingmq_codec::UserProperty],
}

fn w_travelling(w: &mut Writer, t: Travelling<'_>) {
    w.opt(t.payload_format_indicator, |w, &b| w.u8(u8::from(b)));
    w.opt(t.content_type, |w, s| w.bytes(s.as_bytes()));
    w.opt(t.response_topic, |w, s| w.bytes(s.as_bytes()));
    w.opt(t.correlation_data, |w, s| w.bytes(s));
    w_users(w, t.user_properties);
}

type TravellingOwned = (
    Option<bool>,
    Option<ByteString>,
    Option<ByteString>,
    Option<Bytes>,
    Vec<thingmq_codec::UserProperty>,
);

fn r_travelling(r: &mut Reader<'_>) -> R<TravellingOwned> {
    Ok((
        r.opt(Reader::bool)?,
        r.opt(Reader::string)?,
        r.opt(Reader::string)?,
        r.opt(Reader::bytes)?,
        r_users(r)?,
    ))
}

pub(crate) fn message(m: &MessageRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(m.topic.as_bytes());
    w.bytes(&m.payload);
    w.u8(m.qos as u8);
    w.u8(u8::from(m.retain));
    w.opt(&m.expires_at_ms, |w, &t| w.u64(t));
    let p = &m.properties;
    w_travelling(
        &mut w,
        Travelling {
            payload_format_indicator: &p.payload_format_indicator,
            content_type: &p.content_type,
            response_topic: &p.response_topic,
            correlation_data: &p.correlation_data,
            user_properties: &p.user_properties,
        },
    );
    w.finish()
}

pub(crate) fn decode_message(buf: &[u8]) -> R<MessageRecord> {
    let mut r = Reader::new(buf)?;
    let topic = r.string()?;
    let payload = r.bytes()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let expires_at_ms = r.opt(Reader::u64)?;
    let (payload_format_indicator, content_type, response_topic, correlation_data, users) =
        r_travelling(&mut r)?;
    r.end()?;
    Ok(MessageRecord {
        topic,
        payload,
        qos,
        retain,
        expires_at_ms,
        properties: PublishProperties {
            payload_format_indicator,
            content_type,
            response_topic,
            correlation_data,
            user_properties: users,
            ..PublishProperties::default()
        },
    })
}

fn w_will(w: &mut Writer, will: &LastWill) {
    w.bytes(will.topic.as_bytes());
    w.bytes(&will.payload);
    w.u8(will.qos as u8);
    w.u8(u8::from(will.retain));
    let p = &will.properties;
    w.opt(&p.will_delay_interval, |w, &v| w.u32(v));
    w.opt(&p.message_expiry_interval, |w, &v| w.u32(v));
    w_travelling(
        w,
        Travelling {
            payload_format_indicator: &p.payload_format_indicator,
            content_type: &p.content_type,
            response_topic: &p.response_topic,
            correlation_data: &p.correlation_data,
            user_properties: &p.user_properties,
        },
    );
}

fn r_will(r: &mut Reader<'_>) -> R<LastWill> {
    let topic = r.string()?;
    let payload = r.bytes()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let will_delay_interval = r.opt(Reader::u32)?;
    let message_expiry_interval = r.opt(Reader::u32)?;
    let (payload_format_indicator, content_type, response_topic, correlation_data, users) =
        r_travelling(r)?;
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain,
        properties: WillProperties {
            will_delay_interval,
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            user_properties: users,
        },
    })
}

fn protocol_byte(p: ProtocolVersion) -> u8 {
    match p {
        ProtocolVersion::V3_1 => 3,
        ProtocolVersion::V3_1_1 => 4,
        ProtocolVersion::V5 => 5,
    }
}

pub(crate) fn session(s: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(protocol_byte(s.protocol));
    w.u32(s.expiry_interval);
    w.opt(&s.expires_at_ms, |w, &t| w.u64(t));
    w.u8(u8::from(s.connected));
    w.opt(&s.will, w_will);
    w.opt(&s.will_at_ms, |w, &t| w.u64(t));
    w.u16(s.next_packet_id);
    w.opt(&s.username, |w, u| w.bytes(u.as_bytes()));
    w.u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for sub in &s.subscriptions {
        w.bytes(sub.filter.as_bytes());
        w.opt(&sub.share_group, |w, g| w.bytes(g.as_bytes()));
        let o = sub.entry.options;
        w.u8(o.qos as u8);
        w.u8(u8::from(o.no_local));
        w.u8(u8::from(o.retain_as_published));
        w.u8(o.retain_handling as u8);
        w.opt(&sub.entry.identifier, |w, id| w.u32(id.get()));
    }
    // Format 2.
    match &s.listener {
        ListenerRef::Unknown => w.u8(0),
        ListenerRef::Internal => w.u8(1),
        ListenerRef::Listener { index, address } => {
            w.u8(2);
            w.u32(*index);
            w.bytes(address.as_bytes());
        }
    }
    w.finish()
}

pub(crate) fn decode_session(buf: &[u8]) -> R<SessionRecord> {
    let mut r = Reader::new(buf)?;
    let protocol = match r.u8()? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        _ => return Err(DecodeFailure::Corrupt("bad protocol")),
    };
    let expiry_interval = r.u32()?;
    let expires_at_ms = r.opt(Reader::u64)?;
    let connected = r.bool()?;
    let will = r.opt(r_will)?;
    let will_at_ms = r.opt(Reader::u64)?;
    let next_packet_id = r.u16()?;
    let username = r.opt(Reader::string)?;
    let n = r.u32()?;
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        let filter = r.string()?;
        let share_group = r.opt(Reader::string)?;
        let qos = r.qos()?;
        let no_local = r.bool()?;
        let retain_as_published = r.bool()?;
        let retain_handling = match r.u8()? {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeFailure::Corrupt("bad retain handling")),
        };
        let identifier = r.opt(Reader::u32)?.and_then(NonZeroU32::new);
        subscriptions.push(SubscriptionRecord {
            filter,
            share_group,
            entry: SubscriptionEntry {
                options: SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
                identifier,
            },
        });
    }
    let listener = if r.has(2) {
        match r.u8()? {
            0 => ListenerRef::Unknown,
            1 => ListenerRef::Internal,
            2 => ListenerRef::Listener {
                index: r.u32()?,
                address: r.string()?,
            },
            _ => return Err(DecodeFailure::Corrupt("bad listener")),
        }
    } else {
        ListenerRef::Unknown
    };
    r.end()?;
    Ok(SessionRecord {
        protocol,
        expiry_interval,
        expires_at_ms,
        connected,
        will,
        will_at_ms,
        subscriptions,
        next_packet_id,
        username,
        listener,
    })
}

fn state_byte(s: EntryState) -> u8 {
    match s {
        EntryState::Queued => 0,
        EntryState::AwaitingAck => 1,
        EntryState::AwaitingRec => 2,
        EntryState::AwaitingComp => 3,
    }
}

pub(crate) fn entry(e: &EntryRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(e.qos as u8);
    w.u8(u8::from(e.retain));
    w.u32(u32::try_from(e.subscription_ids.len()).unwrap_or(u32::MAX));
    for id in &e.subscription_ids {
        w.u32(*id);
    }
    w.opt(&e.packet_id, |w, &p| w.u16(p));
    w.u8(state_byte(e.state));
    // Format 2.
    w.opt(&e.share, |w, (group, filter)| {
        w.bytes(group.as_bytes());
        w.bytes(filter.as_bytes());
    });
    w.finish()
}

pub(crate) fn decode_entry(buf: &[u8]) -> R<EntryRecord> {
    let mut r = Reader::new(buf)?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let n = r.u32()?;
    let subscription_ids = (0..n).map(|_| r.u32()).collect::<R<Vec<_>>>()?;
    let packet_id = r.opt(Reader::u16)?;
    if packet_id == Some(0) {
        return Err(DecodeFailure::Corrupt("packet id 0"));
    }
    let state = match r.u8()? {
        0 => EntryState::Queued,
        1 => EntryState::AwaitingAck,
        2 => EntryState::AwaitingRec,
        3 => EntryState::AwaitingComp,
        _ => return Err(DecodeFailure::Corrupt("bad entry state")),
    };
    let share = if r.has(2) {
        r.opt(|r| Ok((r.string()?, r.string()?)))?
    } else {
        None
    };
    r.end()?;
    Ok(EntryRecord {
        qos,
        retain,
        subscription_ids,
        packet_id,
        state,
        share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_another_version_is_refused() {
        let mut v = entry(&EntryRecord {
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7],
            packet_id: Some(3),
            state: EntryState::AwaitingAck,
            share: None,
        });
        assert!(decode_entry(&v).is_ok());
        v[0] = FORMAT_VERSION + 1;
        assert_eq!(
            decode_entry(&v),
            Err(DecodeFailure::Version(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn a_truncated_value_is_corrupt_not_misread() {
        let m = MessageRecord {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at_ms: Some(5),
        };
        let v = message(&m);
        assert_eq!(decode_message(&v).as_ref(), Ok(&m));
        for n in 1..v.len() {
            assert!(matches!(
                decode_message(&v[..n]),
                Err(DecodeFailure::Corrupt(_))
            ));
        }
    }

    /// Values as format 1 wrote them (byte by byte), read by this build.
    #[test]
    fn values_of_format_1_are_read_with_the_new_fields_unknown() {
        let v1_entry = [
            1, // format 1
            1, // QoS 1
            0, // retain: no
            0, 0, 0, 1, // one subscription id
            0, 0, 0, 7, //   7
            1, 0, 3, // packet id: some, 3
            1, // state: awaiting PUBACK
        ];
        assert_eq!(
            decode_entry(&v1_entry),
            Ok(EntryRecord {
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![7],
                packet_id: Some(3),
                state: EntryState::AwaitingAck,
                share: None,
            })
        );
        let v1_session = [
            1, // format 1
            4, // MQTT 3.1.1
            0, 0, 0x0e, 0x10, // expiry interval 3600
            0,    // expires at: none
            1,    // connected
            0,    // will: none
            0,    // will at: none
            0, 5, // next packet id 5
            1, 0, 0, 0, 3, b'a', b'n', b'n', // username: some, "ann"
            0, 0, 0, 1, // one subscription
            0, 0, 0, 1, b'x', //   filter "x"
            1, 0, 0, 0, 1, b'g', //   share group: some, "g"
            1, 0, 0, 0, //   QoS 1, no local no, RAP no, retain handling 0
            0, //   identifier: none
        ];
        let s = decode_session(&v1_session).unwrap();
        assert_eq!(s.username.as_deref(), Some("ann"));
        assert_eq!(s.subscriptions[0].share_group.as_deref(), Some("g"));
        assert_eq!(s.listener, ListenerRef::Unknown);
    }

    #[test]
    fn the_listener_and_share_group_round_trip() {
        let e = EntryRecord {
            qos: QoS::ExactlyOnce,
            retain: false,
            subscription_ids: vec![],
            packet_id: None,
            state: EntryState::Queued,
            share: Some(("g".into(), "a/#".into())),
        };
        assert_eq!(decode_entry(&entry(&e)), Ok(e));
        for listener in [
            ListenerRef::Unknown,
            ListenerRef::Internal,
            ListenerRef::Listener {
                index: 2,
                address: "tls 0.0.0.0:8883".into(),
            },
        ] {
            let s = SessionRecord {
                protocol: ProtocolVersion::V5,
                expiry_interval: 10,
                expires_at_ms: None,
                connected: false,
                will: None,
                will_at_ms: None,
                subscriptions: vec![],
                next_packet_id: 1,
                username: None,
                listener,
            };
            assert_eq!(decode_session(&session(&s)), Ok(s));
        }
    }
}
