//! Property tests over the public API: every valid packet survives encode → decode unchanged for
//! each protocol version, `encoded_len` is exact, arbitrary bytes never panic the decoder, and a
//! stream fed one byte at a time decodes to the same packets.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use std::num::{NonZeroU16, NonZeroU32};
use thingmq_codec::*;

const MAX_VARINT: u32 = 268_435_455;

// ---------- leaf strategies ----------

fn string() -> impl Strategy<Value = ByteString> {
    vec(any::<char>().prop_filter("no U+0000", |c| *c != '\0'), 0..6)
        .prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<(ByteString, ByteString)>> {
    vec((string(), string()), 0..3)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).unwrap())
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    packet_id()
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn sub_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=MAX_VARINT).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// A reason code from a list of wire bytes.
fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(|b| ReasonCode::from_u8(b).unwrap())
}

const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const V3_SUBACK_REASONS: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

// ---------- property strategies (v5) ----------

fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            users(),
            of(string()),
            of(binary()),
        ),
    )
        .prop_map(
            |((sei, rm, mps, tam), (rri, rpi, up, am, ad))| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            },
        )
}

fn will_props() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(any::<bool>()),
        of(any::<u32>()),
        of(string()),
        of(string()),
        of(binary()),
        users(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    let max_qos = prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)];
    (
        (
            of(any::<u32>()),
            of(nz16()),
            of(max_qos),
            of(any::<bool>()),
            of(nz32()),
            of(string()),
        ),
        (
            of(any::<u16>()),
            of(string()),
            users(),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
        (
            of(any::<bool>()),
            of(any::<u16>()),
            of(string()),
            of(string()),
            of(string()),
            of(binary()),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci), (tam, rs, up, wsa, sia), (ssa, ska, ri, sr, am, ad))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
}

fn publish_props() -> impl Strategy<Value = PublishProperties> {
    (
        (
            of(any::<bool>()),
            of(any::<u32>()),
            of(nz16()),
            of(string()),
        ),
        (of(binary()), users(), vec(sub_id(), 0..3), of(string())),
    )
        .prop_map(|((pfi, mei, ta, rt), (cd, up, si, ct))| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: si,
            content_type: ct,
        })
}

fn ack_props() -> impl Strategy<Value = AckProperties> {
    (of(string()), users()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

// ---------- packet strategies ----------

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let will = (string(), binary(), qos(), any::<bool>(), will_props()).prop_map(
        move |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 { properties } else { Default::default() },
        },
    );
    (
        (any::<bool>(), any::<u16>(), string(), of(will)),
        (of(string()), of(binary()), connect_props()),
    )
        .prop_map(
            move |((clean_start, keep_alive, client_id, will), (username, password, props))| {
                // v3.1.1 forbids a password without a user name [MQTT-3.1.2-22].
                let password = if v == ProtocolVersion::V3_1_1 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 { props } else { Default::default() },
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    if v.is_v5() {
        (any::<bool>(), reason(CONNACK_REASONS), connack_props())
            .prop_map(|(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                    properties,
                })
            })
            .boxed()
    } else {
        (any::<bool>(), 0u8..=5)
            .prop_map(|(session_present, b)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code: ReasonCode::from_v3_connack(b).unwrap(),
                    properties: Default::default(),
                })
            })
            .boxed()
    }
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        string(),
        packet_id(),
        publish_props(),
        binary(),
    )
        .prop_map(move |(qos, dup, retain, topic, id, props, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { None } else { Some(id) },
                properties: if v.is_v5() { props } else { Default::default() },
                payload,
            })
        })
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP: reason and properties only on v5.
fn ack<F>(v: ProtocolVersion, codes: &'static [u8], make: F) -> impl Strategy<Value = Packet>
where
    F: Fn(PacketId, ReasonCode, AckProperties) -> Packet + Clone,
{
    (packet_id(), reason(codes), ack_props()).prop_map(move |(id, r, p)| {
        if v.is_v5() {
            make(id, r, p)
        } else {
            make(id, ReasonCode::Success, AckProperties::default())
        }
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let rh = prop_oneof![
        Just(RetainHandling::OnSubscribe),
        Just(RetainHandling::OnNewSubscribe),
        Just(RetainHandling::Never)
    ];
    let options = (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v.is_v5() {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        }
    });
    (
        packet_id(),
        of(sub_id()),
        users(),
        vec((string(), options), 1..4),
    )
        .prop_map(move |(packet_id, si, up, filters)| {
            let properties = if v.is_v5() {
                SubscribeProperties {
                    subscription_identifier: si,
                    user_properties: up,
                }
            } else {
                Default::default()
            };
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        SUBACK_REASONS
    } else {
        V3_SUBACK_REASONS
    };
    (packet_id(), of(string()), users(), vec(reason(codes), 0..4)).prop_map(
        move |(packet_id, rs, up, reasons)| {
            let properties = if v.is_v5() {
                SubAckProperties {
                    reason_string: rs,
                    user_properties: up,
                }
            } else {
                Default::default()
            };
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (packet_id(), users(), vec(string(), 1..4)).prop_map(move |(packet_id, up, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties: UnsubscribeProperties {
                user_properties: if v.is_v5() { up } else { vec![] },
            },
            filters,
        })
    })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        of(string()),
        users(),
        vec(reason(UNSUBACK_REASONS), 0..4),
    )
        .prop_map(move |(packet_id, rs, up, reasons)| {
            let (properties, reasons) = if v.is_v5() {
                let p = UnsubAckProperties {
                    reason_string: rs,
                    user_properties: up,
                };
                (p, reasons)
            } else {
                (Default::default(), vec![])
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        reason(DISCONNECT_REASONS),
        of(any::<u32>()),
        of(string()),
        users(),
        of(string()),
    )
        .prop_map(move |(reason, sei, rs, up, sr)| {
            if !v.is_v5() {
                return Packet::Disconnect(Disconnect::new(ReasonCode::Success));
            }
            Packet::Disconnect(Disconnect {
                reason,
                properties: DisconnectProperties {
                    session_expiry_interval: sei,
                    reason_string: rs,
                    user_properties: up,
                    server_reference: sr,
                },
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(AUTH_REASONS),
        of(string()),
        of(binary()),
        of(string()),
        users(),
    )
        .prop_map(|(reason, am, ad, rs, up)| {
            Packet::Auth(Auth {
                reason,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                },
            })
        })
}

/// Any valid packet for `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut kinds = vec![
        connect(v).boxed(),
        connack(v),
        publish(v).boxed(),
        ack(v, PUBACK_REASONS, |packet_id, reason, properties| {
            Packet::PubAck(PubAck {
                packet_id,
                reason,
                properties,
            })
        })
        .boxed(),
        ack(v, PUBACK_REASONS, |packet_id, reason, properties| {
            Packet::PubRec(PubRec {
                packet_id,
                reason,
                properties,
            })
        })
        .boxed(),
        ack(v, PUBREL_REASONS, |packet_id, reason, properties| {
            Packet::PubRel(PubRel {
                packet_id,
                reason,
                properties,
            })
        })
        .boxed(),
        ack(v, PUBREL_REASONS, |packet_id, reason, properties| {
            Packet::PubComp(PubComp {
                packet_id,
                reason,
                properties,
            })
        })
        .boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        kinds.push(auth().boxed());
    }
    proptest::strategy::Union::new(kinds).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V3_1),
        Just(ProtocolVersion::V3_1_1),
        Just(ProtocolVersion::V5)
    ]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

fn versioned_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(|v| vec(packet(v), 1..5).prop_map(move |ps| (v, ps)))
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_valid_packet_round_trips((v, p) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), encoded_len(&p, v));
        let decoded = decode(&mut buf, v, u32::MAX);
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_what_decodes_reencodes(
        v in version(),
        bytes in vec(any::<u8>(), 0..256),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = decode(&mut buf, v, u32::MAX) {
            let mut out = BytesMut::new();
            encode(&p, v, &mut out).unwrap();
            prop_assert_eq!(out.len(), encoded_len(&p, v));
            prop_assert_eq!(decode(&mut out, v, u32::MAX), Ok(Some(p)));
        }
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        v in version(),
        first_byte in 0x10u8..=0xFF,
        body in vec(any::<u8>(), 0..64),
    ) {
        // Random bytes mostly fail on the header; this puts random bodies behind every
        // packet type and flag combination.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[first_byte, body.len() as u8]);
        buf.extend_from_slice(&body);
        let _ = decode(&mut buf, v, u32::MAX);
    }

    #[test]
    fn a_stream_fed_byte_by_byte_decodes_each_packet_once_complete(
        (v, packets) in versioned_stream(),
    ) {
        let mut wire = BytesMut::new();
        let mut ends = Vec::new();
        for p in &packets {
            encode(p, v, &mut wire).unwrap();
            ends.push(wire.len());
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let fed = i + 1;
            match decode(&mut buf, v, u32::MAX).unwrap() {
                Some(p) => {
                    // A packet appears exactly when its last byte arrives.
                    prop_assert_eq!(ends.get(got.len()), Some(&fed));
                    got.push(p);
                    prop_assert!(buf.is_empty());
                }
                None => prop_assert!(!ends.contains(&fed)),
            }
        }
        prop_assert_eq!(got, packets);
    }
}

#[test]
fn check_refuses_an_oversized_packet_from_its_five_byte_header() {
    let header = [
        0x30, // PUBLISH
        0xFF, 0xFF, 0xFF, 0x7F, // remaining length 268,435,455, no body buffered
    ];
    assert_eq!(
        check(&header, 65_536),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 65_536
        })
    );
    let mut buf = BytesMut::from(&header[..]);
    assert!(matches!(
        decode(&mut buf, ProtocolVersion::V5, 65_536),
        Err(DecodeError::PacketTooLarge { .. })
    ));
    // Under a big enough limit the same header just waits for the body.
    assert_eq!(check(&header, u32::MAX), Ok(None));
}
