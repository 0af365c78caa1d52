//! The session state machine without sockets or a clock: packets in, packets out.

use super::*;
use crate::options::Reconnect;
use bytes::Bytes;
use thingmq_codec::{
    ConnAckProperties, PublishProperties, SubscribeProperties, SubscriptionOptions,
    UnsubscribeProperties,
};

type State = ClientState<u32>;

fn opts(version: ProtocolVersion) -> MqttOptions {
    let mut o = MqttOptions::new("c1");
    o.version = version;
    o.keep_alive = Duration::from_secs(10);
    o.ping_timeout = Duration::from_secs(3);
    o.max_inflight = 2;
    o.reconnect = Some(Reconnect::default());
    o
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn connack(session_present: bool) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    })
}

fn publish(topic: &str, qos: QoS) -> Request {
    Request::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: None,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

fn incoming(topic: &str, qos: QoS, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id.map(pid),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"in"),
    })
}

/// Drains the outputs into (sent packets, events, finished tokens with results).
#[allow(clippy::type_complexity)]
fn drain(
    s: &mut State,
) -> (
    Vec<Packet>,
    Vec<Event>,
    Vec<(u32, Result<Response, ClientError>)>,
) {
    let (mut sent, mut events, mut done) = (vec![], vec![], vec![]);
    while let Some(o) = s.poll_output() {
        match o {
            Output::Send(p) => sent.push(p),
            Output::Event(e) => events.push(e),
            Output::Done { token, result } => done.push((token, result)),
            Output::Close => sent.push(Packet::PingResp), // marker never sent by a client
        }
    }
    (sent, events, done)
}

/// A state connected at `t0` with the given CONNACK.
fn connected(version: ProtocolVersion, t0: Instant) -> State {
    let mut s = State::new(opts(version));
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    drain(&mut s);
    s
}

fn ids(sent: &[Packet]) -> Vec<(u8, Option<u16>, bool)> {
    sent.iter()
        .map(|p| match p {
            Packet::Publish(p) => (3, p.packet_id.map(|i| i.get()), p.dup),
            Packet::PubRel(r) => (6, Some(r.packet_id.get()), false),
            other => (other.kind(), None, false),
        })
        .collect()
}

#[test]
fn connect_carries_the_options_and_v5_properties() {
    let mut o = opts(ProtocolVersion::V5);
    o.session_expiry_interval = Some(60);
    o.user_properties = vec![("k".into(), "v".into())];
    let mut s = State::new(o);
    let Packet::Connect(c) = s.start_connection(Instant::now()) else {
        panic!("not CONNECT")
    };
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.properties.session_expiry_interval, Some(60));
    assert_eq!(c.properties.topic_alias_maximum, Some(16));
    assert_eq!(c.properties.user_properties, vec![("k".into(), "v".into())]);
}

#[test]
fn v3_connect_has_no_properties() {
    let mut s = State::new(opts(ProtocolVersion::V3_1_1));
    let Packet::Connect(c) = s.start_connection(Instant::now()) else {
        panic!("not CONNECT")
    };
    assert_eq!(c.properties, ConnectProperties::default());
}

#[test]
fn refused_connack_is_an_error_with_its_reason_in_words() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.start_connection(t0);
    let err = s
        .handle_packet(
            t0,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::NotAuthorized,
                properties: ConnAckProperties::default(),
            }),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "connection refused: not authorized (0x87)");
    assert!(err.is_permanent());
    assert!(!s.is_connected());
}

#[test]
fn requests_before_connack_wait_and_go_out_after_it() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 1);
    assert!(drain(&mut s).0.is_empty());
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    let (sent, events, _) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(3, Some(1), false)]);
    assert!(matches!(
        events[0],
        Event::Connected {
            session_present: false,
            ..
        }
    ));
}

#[test]
fn qos0_publish_completes_when_written() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_request(t0, publish("a", QoS::AtMostOnce), 7);
    let (sent, _, done) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(3, None, false)]);
    assert_eq!(done, vec![(7, Ok(Response::Published(None)))]);
}

#[test]
fn qos1_publish_completes_on_puback() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 1);
    let (sent, _, done) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(3, Some(1), false)]);
    assert!(done.is_empty());
    s.handle_packet(t0, Packet::PubAck(PubAck::new(pid(1))))
        .unwrap();
    let (_, _, done) = drain(&mut s);
    assert_eq!(
        done,
        vec![(1, Ok(Response::Published(Some(ReasonCode::Success))))]
    );
    assert!(s.inflight_ids().is_empty());
}

#[test]
fn qos1_publish_rejected_by_puback_reason_is_an_error() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 1);
    drain(&mut s);
    let mut ack = PubAck::new(pid(1));
    ack.reason = ReasonCode::NotAuthorized;
    s.handle_packet(t0, Packet::PubAck(ack)).unwrap();
    let (_, _, done) = drain(&mut s);
    assert_eq!(
        done,
        vec![(1, Err(ClientError::Rejected(ReasonCode::NotAuthorized)))]
    );
}

#[test]
fn qos2_publish_goes_pubrec_pubrel_pubcomp() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V3_1_1, t0);
    s.handle_request(t0, publish("a", QoS::ExactlyOnce), 1);
    drain(&mut s);
    s.handle_packet(t0, Packet::PubRec(PubRec::new(pid(1))))
        .unwrap();
    let (sent, _, done) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(6, Some(1), false)]);
    assert!(done.is_empty());
    s.handle_packet(t0, Packet::PubComp(PubComp::new(pid(1))))
        .unwrap();
    let (_, _, done) = drain(&mut s);
    assert_eq!(done.len(), 1);
    assert!(done[0].1.is_ok());
}

#[test]
fn the_window_holds_publishes_beyond_max_inflight_until_an_ack() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    for t in 1..=3 {
        s.handle_request(t0, publish("a", QoS::AtLeastOnce), t);
    }
    let (sent, _, _) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(3, Some(1), false), (3, Some(2), false)]);
    assert_eq!(s.backlog(), 3);
    s.handle_packet(t0, Packet::PubAck(PubAck::new(pid(1))))
        .unwrap();
    let (sent, _, _) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(3, Some(3), false)]);
}

#[test]
fn the_servers_receive_maximum_lowers_the_window() {
    let t0 = Instant::now();
    let mut o = opts(ProtocolVersion::V5);
    o.max_inflight = 10;
    let mut s = State::new(o);
    s.start_connection(t0);
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                receive_maximum: NonZeroU16::new(1),
                ..ConnAckProperties::default()
            },
        }),
    )
    .unwrap();
    s.handle_request(t0, publish("a", QoS::ExactlyOnce), 1);
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 2);
    s.handle_request(t0, publish("a", QoS::AtMostOnce), 3);
    let (sent, _, _) = drain(&mut s);
    // QoS 0 waits behind the held QoS 1 too: order is kept.
    assert_eq!(ids(&sent), vec![(3, Some(1), false)]);
}

#[test]
fn packet_ids_skip_ids_still_in_flight() {
    let t0 = Instant::now();
    let mut o = opts(ProtocolVersion::V5);
    o.max_inflight = 100;
    let mut s = State::new(o);
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    s.next_id = u16::MAX - 1;
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 1); // 65535
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 2); // wraps, skips 0 → 1
    s.next_id = 0;
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 3); // 1 is taken → 2
    let (sent, _, _) = drain(&mut s);
    assert_eq!(
        ids(&sent),
        [
            (3, Some(65535), false),
            (3, Some(1), false),
            (3, Some(2), false)
        ]
    );
}

#[test]
fn session_present_resends_publish_with_dup_and_pubrel_in_order() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_request(t0, publish("a", QoS::ExactlyOnce), 1);
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 2);
    s.handle_packet(t0, Packet::PubRec(PubRec::new(pid(1))))
        .unwrap();
    drain(&mut s);
    s.connection_lost();
    s.start_connection(t0);
    s.handle_packet(t0, connack(true)).unwrap();
    let (sent, _, done) = drain(&mut s);
    assert_eq!(ids(&sent), vec![(6, Some(1), false), (3, Some(2), true)]);
    assert!(done.is_empty());
}

#[test]
fn reconnect_resumes_the_session_when_the_server_can_hold_it() {
    let t0 = Instant::now();
    let mut o = opts(ProtocolVersion::V5);
    o.session_expiry_interval = Some(300);
    let mut s = State::new(o);
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    s.connection_lost();
    let Packet::Connect(c) = s.start_connection(t0) else {
        panic!()
    };
    assert!(!c.clean_start, "reconnect must resume");

    // v5 without session expiry: the server dropped the session, so start clean.
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    s.connection_lost();
    let Packet::Connect(c) = s.start_connection(t0) else {
        panic!()
    };
    assert!(c.clean_start);
}

#[test]
fn without_a_session_unacked_messages_are_sent_again_as_new() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V3_1_1, t0);
    s.handle_request(t0, publish("a", QoS::AtLeastOnce), 1);
    s.handle_request(t0, publish("b", QoS::ExactlyOnce), 2);
    drain(&mut s);
    s.handle_packet(t0, Packet::PubRec(PubRec::new(pid(2))))
        .unwrap();
    drain(&mut s);
    s.connection_lost();
    s.start_connection(t0);
    s.handle_packet(t0, connack(false)).unwrap();
    let (sent, _, done) = drain(&mut s);
    // QoS 2 past PUBREC: the server has it; the request is done.
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 2);
    // QoS 1 never acked: sent again, not as DUP.
    assert_eq!(ids(&sent).len(), 1);
    assert!(matches!(&sent[0], Packet::Publish(p) if p.topic == "a" && !p.dup));
}

#[test]
fn incoming_qos1_is_delivered_and_acked() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_packet(t0, incoming("t", QoS::AtLeastOnce, Some(9)))
        .unwrap();
    let (sent, events, _) = drain(&mut s);
    assert_eq!(sent, vec![Packet::PubAck(PubAck::new(pid(9)))]);
    assert!(matches!(&events[0], Event::Publish(p) if p.topic == "t"));
}

#[test]
fn incoming_qos2_is_delivered_once_even_when_resent() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_packet(t0, incoming("t", QoS::ExactlyOnce, Some(4)))
        .unwrap();
    let (sent, events, _) = drain(&mut s);
    assert_eq!(sent, vec![Packet::PubRec(PubRec::new(pid(4)))]);
    assert_eq!(events.len(), 1);
    // The PUBREC was lost; the server resends with DUP.
    s.handle_packet(t0, incoming("t", QoS::ExactlyOnce, Some(4)))
        .unwrap();
    let (sent, events, _) = drain(&mut s);
    assert_eq!(sent, vec![Packet::PubRec(PubRec::new(pid(4)))]);
    assert!(events.is_empty(), "delivered twice");
    s.handle_packet(t0, Packet::PubRel(PubRel::new(pid(4))))
        .unwrap();
    let (sent, _, _) = drain(&mut s);
    assert_eq!(sent, vec![Packet::PubComp(PubComp::new(pid(4)))]);
    // Released: the id may carry a new message now.
    s.handle_packet(t0, incoming("t", QoS::ExactlyOnce, Some(4)))
        .unwrap();
    assert_eq!(drain(&mut s).1.len(), 1);
}

#[test]
fn topic_alias_from_the_server_is_resolved() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let mut first = incoming("long/topic", QoS::AtMostOnce, None);
    let mut second = incoming("", QoS::AtMostOnce, None);
    for p in [&mut first, &mut second] {
        if let Packet::Publish(p) = p {
            p.properties.topic_alias = NonZeroU16::new(3);
        }
    }
    s.handle_packet(t0, first).unwrap();
    s.handle_packet(t0, second).unwrap();
    let (_, events, _) = drain(&mut s);
    assert!(matches!(&events[1], Event::Publish(p) if p.topic == "long/topic"));
}

#[test]
fn unknown_topic_alias_is_a_protocol_error_with_disconnect() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let mut p = incoming("", QoS::AtMostOnce, None);
    if let Packet::Publish(p) = &mut p {
        p.properties.topic_alias = NonZeroU16::new(2);
    }
    assert!(matches!(
        s.handle_packet(t0, p),
        Err(ConnectionError::Protocol(_))
    ));
    let (sent, _, _) = drain(&mut s);
    assert!(matches!(&sent[0], Packet::Disconnect(d) if d.reason == ReasonCode::ProtocolError));
}

#[test]
fn keep_alive_sends_pingreq_when_idle_and_fails_without_pingresp() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(9)).unwrap();
    assert!(drain(&mut s).0.is_empty());
    let t1 = t0 + Duration::from_secs(10);
    s.handle_timeout(t1).unwrap();
    assert_eq!(drain(&mut s).0, vec![Packet::PingReq]);
    assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(3)));
    assert_eq!(
        s.handle_timeout(t1 + Duration::from_secs(3)),
        Err(ConnectionError::PingTimeout)
    );
}

#[test]
fn pingresp_clears_the_ping_deadline() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let t1 = t0 + Duration::from_secs(10);
    s.handle_timeout(t1).unwrap();
    drain(&mut s);
    s.handle_packet(t1, Packet::PingResp).unwrap();
    assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(10)));
}

#[test]
fn sending_anything_postpones_the_ping() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let t1 = t0 + Duration::from_secs(6);
    s.handle_request(t1, publish("a", QoS::AtMostOnce), 1);
    assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(10)));
}

#[test]
fn server_keep_alive_overrides_ours() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.start_connection(t0);
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                server_keep_alive: Some(4),
                ..ConnAckProperties::default()
            },
        }),
    )
    .unwrap();
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(4)));
}

#[test]
fn connack_must_arrive_within_the_connect_timeout() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.start_connection(t0);
    let deadline = s.next_deadline().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(10));
    assert_eq!(
        s.handle_timeout(deadline),
        Err(ConnectionError::ConnAckTimeout)
    );
}

#[test]
fn publish_larger_than_the_servers_maximum_packet_size_is_refused() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    s.start_connection(t0);
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                maximum_packet_size: std::num::NonZeroU32::new(20),
                maximum_qos: Some(QoS::AtLeastOnce),
                ..ConnAckProperties::default()
            },
        }),
    )
    .unwrap();
    drain(&mut s);
    let mut big = publish("a", QoS::AtMostOnce);
    if let Request::Publish(p) = &mut big {
        p.payload = Bytes::from(vec![0u8; 50]);
    }
    s.handle_request(t0, big, 1);
    s.handle_request(t0, publish("a", QoS::ExactlyOnce), 2);
    let (sent, _, done) = drain(&mut s);
    assert!(sent.is_empty());
    assert!(matches!(
        done[0],
        (1, Err(ClientError::PacketTooLarge { max: 20, .. }))
    ));
    assert_eq!(
        done[1],
        (2, Err(ClientError::QoSNotSupported(QoS::AtLeastOnce)))
    );
}

#[test]
fn subscribe_and_unsubscribe_complete_on_their_acks() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let sub = Subscribe {
        packet_id: pid(99),
        properties: SubscribeProperties::default(),
        filters: vec![("a/#".into(), SubscriptionOptions::default())],
    };
    s.handle_request(t0, Request::Subscribe(sub), 1);
    let (sent, _, _) = drain(&mut s);
    let Packet::Subscribe(sent_sub) = &sent[0] else {
        panic!()
    };
    let id = sent_sub.packet_id;
    let suback = SubAck {
        packet_id: id,
        properties: Default::default(),
        reasons: vec![ReasonCode::Success],
    };
    s.handle_packet(t0, Packet::SubAck(suback.clone())).unwrap();
    assert_eq!(drain(&mut s).2, vec![(1, Ok(Response::SubAck(suback)))]);

    let unsub = Unsubscribe {
        packet_id: pid(99),
        properties: UnsubscribeProperties::default(),
        filters: vec!["a/#".into()],
    };
    s.handle_request(t0, Request::Unsubscribe(unsub), 2);
    let (sent, _, _) = drain(&mut s);
    let Packet::Unsubscribe(u) = &sent[0] else {
        panic!()
    };
    let unsuback = UnsubAck {
        packet_id: u.packet_id,
        properties: Default::default(),
        reasons: vec![ReasonCode::Success],
    };
    s.handle_packet(t0, Packet::UnsubAck(unsuback.clone()))
        .unwrap();
    assert_eq!(drain(&mut s).2, vec![(2, Ok(Response::UnsubAck(unsuback)))]);
}

#[test]
fn disconnect_sends_disconnect_and_closes() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    s.handle_request(
        t0,
        Request::Disconnect(Disconnect::new(ReasonCode::Success)),
        5,
    );
    let (sent, _, done) = drain(&mut s);
    assert!(matches!(sent[0], Packet::Disconnect(_)));
    assert_eq!(sent[1], Packet::PingResp, "Close marker");
    assert_eq!(done, vec![(5, Ok(Response::Disconnected))]);
}

#[test]
fn server_disconnect_is_reported_with_its_reason() {
    let t0 = Instant::now();
    let mut s = connected(ProtocolVersion::V5, t0);
    let err = s
        .handle_packet(
            t0,
            Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "disconnected by the server: session taken over (0x8e)"
    );
}

#[test]
fn reconnect_back_off_doubles_up_to_the_maximum() {
    let r = Reconnect {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    assert_eq!(r.delay(0), Duration::from_millis(100));
    assert_eq!(r.delay(1), Duration::from_millis(200));
    assert_eq!(r.delay(3), Duration::from_millis(800));
    assert_eq!(r.delay(4), Duration::from_secs(1));
    assert_eq!(r.delay(1000), Duration::from_secs(1));
}

#[test]
fn a_request_queued_offline_is_checked_against_the_server_it_meets() {
    let t0 = Instant::now();
    let mut s = State::new(opts(ProtocolVersion::V5));
    let mut retained = publish("a", QoS::AtMostOnce);
    if let Request::Publish(p) = &mut retained {
        p.retain = true;
    }
    s.handle_request(t0, retained, 1);
    s.start_connection(t0);
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: ConnAckProperties {
                retain_available: Some(false),
                ..ConnAckProperties::default()
            },
        }),
    )
    .unwrap();
    let (sent, _, done) = drain(&mut s);
    assert!(sent.is_empty());
    assert_eq!(done, vec![(1, Err(ClientError::RetainNotSupported))]);
}
