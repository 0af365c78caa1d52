//! Unit tests of the session state machine: no sockets, time passed in.

use super::*;
use crate::Message;
use bytes::Bytes;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;
use thingmq_codec::{
    ConnectProperties, Disconnect, DisconnectProperties, PubAck, PubComp, PubRec, PubRel, Publish,
    PublishProperties, ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
    Unsubscribe, UnsubscribeProperties, WillProperties,
};

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn connect(version: ProtocolVersion, clean: bool) -> thingmq_codec::Connect {
    thingmq_codec::Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 10,
        client_id: "c1".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn session(version: ProtocolVersion) -> (Session, Instant, Vec<Output>) {
    session_with(version, BrokerSettings::default())
}

fn session_with(version: ProtocolVersion, s: BrokerSettings) -> (Session, Instant, Vec<Output>) {
    let mut sess = Session::new(Arc::new(s));
    let now = Instant::now();
    let mut out = Vec::new();
    sess.attach(now, &connect(version, true), false, false, &mut out);
    out.clear();
    (sess, now, out)
}

fn message(topic: &str, qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"hi"),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
    })
}

fn routed(topic: &str, qos: QoS) -> Routed {
    Routed {
        message: message(topic, qos),
        qos,
        retain: false,
        subscription_ids: vec![],
        share: None,
        store_id: None,
    }
}

fn publish(topic: &str, qos: QoS, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id.map(pid),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

fn sent(out: &[Output]) -> Vec<&Packet> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn sent_publishes(out: &[Output]) -> Vec<&Publish> {
    sent(out)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn connack_v5_announces_limits_and_assigned_id() {
    let mut s = Session::new(Arc::new(BrokerSettings::default()));
    let mut out = vec![];
    let mut c = connect(ProtocolVersion::V5, true);
    // The client sent none; the server put the one it made in the CONNECT.
    c.client_id = "thingmq-1".into();
    s.attach(Instant::now(), &c, true, false, &mut out);
    let Packet::ConnAck(ack) = sent(&out)[0] else {
        panic!("expected CONNACK")
    };
    assert!(!ack.session_present);
    assert_eq!(ack.code, ReasonCode::Success);
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("thingmq-1")
    );
    assert_eq!(ack.properties.receive_maximum.map(|r| r.get()), Some(1024));
    assert!(ack.properties.server_keep_alive.is_none());
}

#[test]
fn keep_alive_above_the_maximum_is_replaced_and_announced() {
    let settings = BrokerSettings {
        max_keep_alive: 30,
        ..Default::default()
    };
    let mut s = Session::new(Arc::new(settings.clone()));
    let mut out = vec![];
    let mut c = connect(ProtocolVersion::V5, true);
    c.keep_alive = 0;
    s.attach(Instant::now(), &c, false, false, &mut out);
    let Packet::ConnAck(ack) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    // A v3 client can't be told, so it is refused.
    let mut c3 = connect(ProtocolVersion::V3_1_1, true);
    c3.keep_alive = 60;
    assert_eq!(
        validate_connect(&c3, &settings),
        Err(ReasonCode::ClientIdentifierNotValid)
    );
}

#[test]
fn empty_client_id_needs_clean_session_on_v311_and_is_refused_on_v31() {
    let s = BrokerSettings::default();
    let mut c = connect(ProtocolVersion::V3_1_1, false);
    c.client_id = "".into();
    assert_eq!(
        validate_connect(&c, &s),
        Err(ReasonCode::ClientIdentifierNotValid)
    );
    c.clean_start = true;
    assert_eq!(validate_connect(&c, &s), Ok(()));
    c.protocol = ProtocolVersion::V3_1;
    assert_eq!(
        validate_connect(&c, &s),
        Err(ReasonCode::ClientIdentifierNotValid)
    );
}

#[test]
fn qos1_publish_is_routed_then_acknowledged() {
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    s.handle_packet(now, publish("a/b", QoS::AtLeastOnce, Some(7)), &mut out)
        .unwrap();
    let Output::Publish { message, ack } = &out[0] else {
        panic!("expected Publish output")
    };
    assert_eq!(&*message.topic, "a/b");
    let ack = ack.unwrap();
    assert!(sent(&out).is_empty(), "no PUBACK before routing");
    out.clear();
    s.publish_done(ack, ReasonCode::Success, &mut out);
    assert_eq!(sent(&out), vec![&Packet::PubAck(PubAck::new(pid(7)))]);
}

#[test]
fn qos2_resend_before_pubrel_is_not_routed_twice() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.handle_packet(now, publish("a", QoS::ExactlyOnce, Some(3)), &mut out)
        .unwrap();
    let Output::Publish { ack, .. } = out[0].clone() else {
        panic!()
    };
    out.clear();
    s.publish_done(ack.unwrap(), ReasonCode::Success, &mut out);
    assert_eq!(sent(&out), vec![&Packet::PubRec(PubRec::new(pid(3)))]);
    out.clear();
    // The client resends with DUP: answered with PUBREC, not routed.
    s.handle_packet(now, publish("a", QoS::ExactlyOnce, Some(3)), &mut out)
        .unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Publish { .. })));
    assert_eq!(sent(&out), vec![&Packet::PubRec(PubRec::new(pid(3)))]);
    out.clear();
    s.handle_packet(now, Packet::PubRel(PubRel::new(pid(3))), &mut out)
        .unwrap();
    assert_eq!(sent(&out), vec![&Packet::PubComp(PubComp::new(pid(3)))]);
    out.clear();
    // After PUBREL the id is free: a new message with it is routed again.
    s.handle_packet(now, publish("a", QoS::ExactlyOnce, Some(3)), &mut out)
        .unwrap();
    assert!(matches!(out[0], Output::Publish { .. }));
}

#[test]
fn pubrel_for_unknown_id_answers_packet_identifier_not_found_on_v5() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.handle_packet(now, Packet::PubRel(PubRel::new(pid(9))), &mut out)
        .unwrap();
    let Packet::PubComp(c) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(c.reason, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn exceeding_receive_maximum_disconnects_with_0x93() {
    let settings = BrokerSettings {
        receive_maximum: 2,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V5, settings);
    for id in 1..=2 {
        s.handle_packet(now, publish("a", QoS::ExactlyOnce, Some(id)), &mut out)
            .unwrap();
    }
    let err = s
        .handle_packet(now, publish("a", QoS::ExactlyOnce, Some(3)), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ReceiveMaximumExceeded);
    assert!(sent(&out).iter().any(
        |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::ReceiveMaximumExceeded)
    ));
    assert!(out.contains(&Output::Close));
}

#[test]
fn topic_alias_set_then_used_resolves_to_the_topic() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "long/topic".into(),
        packet_id: None,
        properties: PublishProperties {
            topic_alias: NonZeroU16::new(1),
            ..Default::default()
        },
        payload: Bytes::new(),
    };
    s.handle_packet(now, Packet::Publish(p.clone()), &mut out)
        .unwrap();
    p.topic = "".into();
    s.handle_packet(now, Packet::Publish(p.clone()), &mut out)
        .unwrap();
    let topics: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Publish { message, .. } => Some(message.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["long/topic", "long/topic"]);
    // An alias above our maximum is a protocol error 0x94.
    p.properties.topic_alias = NonZeroU16::new(65);
    let err = s
        .handle_packet(now, Packet::Publish(p), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::TopicAliasInvalid);
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "".into(),
        packet_id: None,
        properties: PublishProperties {
            topic_alias: NonZeroU16::new(2),
            ..Default::default()
        },
        payload: Bytes::new(),
    };
    let err = s
        .handle_packet(now, Packet::Publish(p), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn outbound_window_queues_and_drains_in_order() {
    let settings = BrokerSettings {
        max_inflight: 2,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V3_1_1, settings);
    for i in 0..4 {
        s.deliver(now, routed(&format!("t/{i}"), QoS::AtLeastOnce), &mut out);
    }
    let first: Vec<_> = sent_publishes(&out)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(first, ["t/0", "t/1"]);
    assert_eq!(s.queued_len(), 2);
    let id0 = sent_publishes(&out)[0].packet_id.unwrap();
    out.clear();
    s.handle_packet(now, Packet::PubAck(PubAck::new(id0)), &mut out)
        .unwrap();
    let next: Vec<_> = sent_publishes(&out)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(next, ["t/2"]);
}

#[test]
fn an_idle_session_lets_go_of_its_outgoing_state_and_a_busy_one_keeps_it() {
    let settings = BrokerSettings {
        max_inflight: 1,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V3_1_1, settings);
    assert!(s.outgoing.is_none(), "nothing delivered yet");
    s.deliver(now, routed("t/0", QoS::AtLeastOnce), &mut out);
    s.deliver(now, routed("t/1", QoS::AtLeastOnce), &mut out);
    s.release_idle();
    assert_eq!(
        (s.inflight_len(), s.queued_len()),
        (1, 1),
        "kept while busy"
    );
    let id0 = sent_publishes(&out)[0].packet_id.unwrap();
    out.clear();
    s.handle_packet(now, Packet::PubAck(PubAck::new(id0)), &mut out)
        .unwrap();
    let id1 = sent_publishes(&out)[0].packet_id.unwrap();
    assert_ne!(id0, id1);
    s.release_idle();
    assert_eq!((s.inflight_len(), s.queued_len()), (1, 0));
    out.clear();
    s.handle_packet(now, Packet::PubAck(PubAck::new(id1)), &mut out)
        .unwrap();
    s.release_idle();
    assert!(
        s.outgoing.is_none(),
        "released once nothing is in flight or queued"
    );
    // Packet ids go on from where they were, not from 1 again.
    s.deliver(now, routed("t/2", QoS::AtLeastOnce), &mut out);
    let id2 = sent_publishes(&out).last().unwrap().packet_id.unwrap();
    assert_eq!(id2.get(), id1.get() + 1);
}

#[test]
fn qos2_delivery_runs_pubrec_pubrel_pubcomp() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.deliver(now, routed("x", QoS::ExactlyOnce), &mut out);
    let id = sent_publishes(&out)[0].packet_id.unwrap();
    out.clear();
    s.handle_packet(now, Packet::PubRec(PubRec::new(id)), &mut out)
        .unwrap();
    assert_eq!(sent(&out), vec![&Packet::PubRel(PubRel::new(id))]);
    assert_eq!(s.inflight_len(), 1);
    out.clear();
    s.handle_packet(now, Packet::PubComp(PubComp::new(id)), &mut out)
        .unwrap();
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn unacknowledged_deliveries_are_resent_with_dup_after_reconnect() {
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    let mut c = connect(ProtocolVersion::V3_1_1, false);
    s.attach(now, &c, false, false, &mut out);
    s.deliver(now, routed("a", QoS::AtLeastOnce), &mut out);
    s.deliver(now, routed("b", QoS::ExactlyOnce), &mut out);
    let b_id = sent_publishes(&out)[1].packet_id.unwrap();
    s.handle_packet(now, Packet::PubRec(PubRec::new(b_id)), &mut out)
        .unwrap();
    s.connection_lost(now, &mut out);
    assert!(!s.is_ended());
    out.clear();
    // Offline: QoS 1 queued, QoS 0 dropped.
    s.deliver(now, routed("c", QoS::AtLeastOnce), &mut out);
    s.deliver(now, routed("d", QoS::AtMostOnce), &mut out);
    assert_eq!(out, vec![Output::Dropped(DropReason::Offline)]);
    out.clear();
    c.clean_start = false;
    s.attach(now, &c, false, true, &mut out);
    let packets = sent(&out);
    let Packet::ConnAck(ack) = packets[0] else {
        panic!()
    };
    assert!(ack.session_present);
    let Packet::Publish(a) = packets[1] else {
        panic!()
    };
    assert!(a.dup && &*a.topic == "a");
    assert_eq!(packets[2], &Packet::PubRel(PubRel::new(b_id)));
    let Packet::Publish(c2) = packets[3] else {
        panic!()
    };
    assert!(!c2.dup && &*c2.topic == "c");
}

#[test]
fn offline_queue_limit_drops_and_counts() {
    let settings = BrokerSettings {
        max_queued_messages: 2,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V3_1_1, settings);
    let mut c = connect(ProtocolVersion::V3_1_1, false);
    c.clean_start = false;
    s.attach(now, &c, false, false, &mut out);
    s.connection_lost(now, &mut out);
    out.clear();
    for _ in 0..3 {
        s.deliver(now, routed("q", QoS::AtLeastOnce), &mut out);
    }
    assert_eq!(s.queued_len(), 2);
    assert_eq!(out, vec![Output::Dropped(DropReason::QueueFull)]);
}

#[test]
fn will_is_published_on_abnormal_close_but_not_after_disconnect() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, true);
    c.will = Some(thingmq_codec::LastWill {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.connection_lost(now, &mut out);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Will(m) if &*m.topic == "will")));

    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.handle_packet(
        now,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
        &mut out,
    )
    .unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));

    // DISCONNECT 0x04 asks for the will.
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.handle_packet(
        now,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
        &mut out,
    )
    .unwrap();
    assert!(out.iter().any(|o| matches!(o, Output::Will(_))));
}

#[test]
fn delayed_will_goes_out_at_the_earlier_of_delay_and_session_end() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.session_expiry_interval = Some(5);
    c.will = Some(thingmq_codec::LastWill {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(60),
            ..Default::default()
        },
    });
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.connection_lost(now, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
    s.tick(now + Duration::from_secs(4), &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));
    s.tick(now + Duration::from_secs(5), &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Will(_))));
    assert!(out.iter().any(|o| matches!(o, Output::Ended { .. })));
    assert!(s.is_ended());
}

#[test]
fn reconnect_before_will_delay_cancels_the_will() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(100);
    c.will = Some(thingmq_codec::LastWill {
        topic: "will".into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(10),
            ..Default::default()
        },
    });
    s.attach(now, &c, false, false, &mut out);
    s.connection_lost(now, &mut out);
    c.will = None;
    s.attach(now + Duration::from_secs(3), &c, false, true, &mut out);
    s.tick(now + Duration::from_secs(20), &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));
}

#[test]
fn keep_alive_timeout_after_one_and_a_half_intervals() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(15)));
    s.tick(now + Duration::from_secs(14), &mut out);
    assert!(out.is_empty());
    s.handle_packet(now + Duration::from_secs(14), Packet::PingReq, &mut out)
        .unwrap();
    assert_eq!(sent(&out), vec![&Packet::PingResp]);
    out.clear();
    s.tick(now + Duration::from_secs(28), &mut out);
    assert!(out.is_empty());
    s.tick(now + Duration::from_secs(29), &mut out);
    assert!(sent(&out)
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::KeepAliveTimeout)));
    assert!(!s.is_connected());
}

#[test]
fn session_expiry_zero_at_connect_cannot_be_raised_at_disconnect() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let d = Disconnect {
        reason: ReasonCode::Success,
        properties: DisconnectProperties {
            session_expiry_interval: Some(30),
            ..Default::default()
        },
    };
    let err = s
        .handle_packet(now, Packet::Disconnect(d), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn session_expiry_changed_at_disconnect_is_used() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.session_expiry_interval = Some(10);
    s.attach(now, &c, false, false, &mut out);
    let d = Disconnect {
        reason: ReasonCode::Success,
        properties: DisconnectProperties {
            session_expiry_interval: Some(100),
            ..Default::default()
        },
    };
    s.handle_packet(now, Packet::Disconnect(d), &mut out)
        .unwrap();
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(100)));
}

#[test]
fn subscribe_grants_capped_qos_and_refuses_bad_filters() {
    let settings = BrokerSettings {
        max_qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V5, settings);
    let opts = |qos| SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let sub = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(5),
            ..Default::default()
        },
        filters: vec![
            ("a/+".into(), opts(QoS::ExactlyOnce)),
            ("a/#/b".into(), opts(QoS::AtMostOnce)),
            ("$share/g/x".into(), opts(QoS::AtMostOnce)),
        ],
    };
    s.handle_packet(now, Packet::Subscribe(sub), &mut out)
        .unwrap();
    let Packet::SubAck(ack) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(
        ack.reasons,
        [
            ReasonCode::GrantedQoS1,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::Success
        ]
    );
    let records: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Subscribe(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].entry.identifier, NonZeroU32::new(5));
    assert_eq!(records[1].share_group.as_deref(), Some("g"));
    assert_eq!(&*records[1].filter, "x");
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let sub = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![(
            "$share/g/x".into(),
            SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
        )],
    };
    let err = s
        .handle_packet(now, Packet::Subscribe(sub), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn unsubscribe_reports_missing_subscriptions_on_v5_only() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let u = Unsubscribe {
        packet_id: pid(2),
        properties: UnsubscribeProperties::default(),
        filters: vec!["nope".into()],
    };
    s.handle_packet(now, Packet::Unsubscribe(u.clone()), &mut out)
        .unwrap();
    let Packet::UnsubAck(a) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(a.reasons, [ReasonCode::NoSubscriptionExisted]);
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    s.handle_packet(now, Packet::Unsubscribe(u), &mut out)
        .unwrap();
    let Packet::UnsubAck(a) = sent(&out)[0] else {
        panic!()
    };
    assert!(a.reasons.is_empty());
}

#[test]
fn expired_messages_are_not_delivered_and_remaining_expiry_is_forwarded() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut m = Message::clone(&message("e", QoS::AtMostOnce));
    m.expires_at = Some(now + Duration::from_secs(10));
    let r = Routed {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: vec![NonZeroU32::new(3).unwrap()],
        share: None,
        store_id: None,
    };
    s.deliver(now + Duration::from_secs(4), r.clone(), &mut out);
    let p = sent_publishes(&out)[0];
    assert_eq!(p.properties.message_expiry_interval, Some(6));
    assert_eq!(
        p.properties.subscription_identifiers,
        [NonZeroU32::new(3).unwrap()]
    );
    out.clear();
    s.deliver(now + Duration::from_secs(10), r, &mut out);
    assert_eq!(out, vec![Output::Dropped(DropReason::Expired)]);
}

#[test]
fn messages_over_the_clients_maximum_packet_size_are_dropped() {
    let mut s = Session::new(Arc::new(BrokerSettings::default()));
    let mut out = vec![];
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.maximum_packet_size = NonZeroU32::new(20);
    let now = Instant::now();
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.deliver(
        now,
        routed("a/very/long/topic/name/here", QoS::AtLeastOnce),
        &mut out,
    );
    assert_eq!(out, vec![Output::Dropped(DropReason::TooLarge)]);
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn outgoing_topic_aliases_are_assigned_when_the_client_allows_them() {
    let mut s = Session::new(Arc::new(BrokerSettings::default()));
    let mut out = vec![];
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.topic_alias_maximum = Some(1);
    let now = Instant::now();
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.deliver(now, routed("a", QoS::AtMostOnce), &mut out);
    s.deliver(now, routed("a", QoS::AtMostOnce), &mut out);
    s.deliver(now, routed("b", QoS::AtMostOnce), &mut out);
    let p = sent_publishes(&out);
    assert_eq!(
        (&*p[0].topic, p[0].properties.topic_alias),
        ("a", NonZeroU16::new(1))
    );
    assert_eq!(
        (&*p[1].topic, p[1].properties.topic_alias),
        ("", NonZeroU16::new(1))
    );
    assert_eq!((&*p[2].topic, p[2].properties.topic_alias), ("b", None));
}

#[test]
fn client_publish_to_sys_is_refused_with_not_authorized() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.handle_packet(now, publish("$SYS/x", QoS::AtLeastOnce, Some(1)), &mut out)
        .unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Publish { .. })));
    let Packet::PubAck(a) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::NotAuthorized);
}

#[test]
fn second_connect_is_a_protocol_error() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let err = s
        .handle_packet(
            now,
            Packet::Connect(Box::new(connect(ProtocolVersion::V5, true))),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert!(!s.is_connected());
}

#[test]
fn takeover_sends_session_taken_over_to_v5_clients() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.takeover(now, &mut out);
    assert!(sent(&out)
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::SessionTakenOver)));
    // Clean session (expiry 0): the session ends with the connection.
    assert!(s.is_ended());
}

#[test]
fn kick_sends_administrative_action_publishes_the_will_and_keeps_a_persistent_session() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(60);
    c.will = Some(thingmq_codec::LastWill {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.kick(now, &mut out);
    assert!(sent(&out).iter().any(
        |p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::AdministrativeAction)
    ));
    assert!(out.iter().any(|o| matches!(o, Output::Close)));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Will(m) if &*m.topic == "will")));
    assert!(!s.is_connected());
    assert!(!s.is_ended(), "the session outlives the kicked connection");

    // Kicking an offline session does nothing.
    out.clear();
    s.kick(now, &mut out);
    assert!(out.is_empty());
}

#[test]
fn ended_session_hands_back_undelivered_shared_messages() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(60);
    s.attach(now, &c, false, false, &mut out);
    s.connection_lost(now, &mut out);
    let mut r = routed("s", QoS::AtLeastOnce);
    r.share = Some(("g".into(), "s".into()));
    s.deliver(now, r, &mut out);
    s.deliver(now, routed("plain", QoS::AtLeastOnce), &mut out);
    out.clear();
    s.tick(now + Duration::from_secs(60), &mut out);
    let Some(Output::Ended { orphans }) = out.last() else {
        panic!()
    };
    assert_eq!(orphans.len(), 1);
    assert_eq!(&*orphans[0].message.topic, "s");
}

#[test]
fn topics_deeper_than_the_level_limit_are_refused() {
    let settings = BrokerSettings {
        max_topic_levels: 3,
        ..Default::default()
    };
    let (mut s, now, mut out) = session_with(ProtocolVersion::V5, settings);
    s.handle_packet(now, publish("a/b/c", QoS::AtMostOnce, None), &mut out)
        .unwrap();
    let err = s
        .handle_packet(now, publish("a/b/c/d", QoS::AtMostOnce, None), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::TopicNameInvalid);
}

fn will_connect(delay: Option<u32>) -> thingmq_codec::Connect {
    let mut c = connect(ProtocolVersion::V5, true);
    c.will = Some(thingmq_codec::LastWill {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    });
    c
}

#[test]
fn disconnect_with_an_error_code_keeps_the_will() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.attach(now, &will_connect(None), false, false, &mut out);
    out.clear();
    let d = Disconnect::new(ReasonCode::UnspecifiedError);
    s.handle_packet(now, Packet::Disconnect(d), &mut out)
        .unwrap();
    assert!(out.iter().any(|o| matches!(o, Output::Will(_))));
}

#[test]
fn will_topic_under_sys_is_refused() {
    let mut c = will_connect(None);
    c.will.as_mut().unwrap().topic = "$SYS/broker/version".into();
    assert_eq!(
        validate_connect(&c, &BrokerSettings::default()),
        Err(ReasonCode::NotAuthorized)
    );
    // Only $SYS itself and what is under it is reserved.
    c.will.as_mut().unwrap().topic = "$SYSTEM/x".into();
    assert_eq!(validate_connect(&c, &BrokerSettings::default()), Ok(()));
}

#[test]
fn server_shutdown_ends_the_session_and_publishes_even_a_delayed_will() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.attach(now, &will_connect(Some(300)), false, false, &mut out);
    out.clear();
    s.shutdown(now, &mut out);
    assert!(sent(&out)
        .iter()
        .any(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::ServerShuttingDown)));
    assert!(out.iter().any(|o| matches!(o, Output::Will(_))));
    assert!(s.is_ended());
}

#[test]
fn pubrec_for_a_qos1_delivery_does_not_start_a_qos2_exchange() {
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    s.deliver(now, routed("a", QoS::AtLeastOnce), &mut out);
    let id = sent_publishes(&out)[0].packet_id.unwrap();
    out.clear();
    s.handle_packet(now, Packet::PubRec(PubRec::new(id)), &mut out)
        .unwrap();
    assert!(sent(&out).is_empty());
    assert_eq!(s.inflight_len(), 1);
    s.handle_packet(now, Packet::PubAck(PubAck::new(id)), &mut out)
        .unwrap();
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn subscribe_with_a_protocol_error_changes_no_subscription() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let sub = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![
            ("ok/topic".into(), SubscriptionOptions::default()),
            (
                "$share/g/x".into(),
                SubscriptionOptions {
                    no_local: true,
                    ..Default::default()
                },
            ),
        ],
    };
    assert!(s
        .handle_packet(now, Packet::Subscribe(sub), &mut out)
        .is_err());
    assert_eq!(s.subscriptions().count(), 0);
    assert!(!out.iter().any(|o| matches!(o, Output::Subscribe(_))));
}

#[test]
fn resend_after_reconnect_drops_what_the_new_connection_cannot_take() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, false);
    c.properties.session_expiry_interval = Some(60);
    s.attach(now, &c, false, false, &mut out);
    s.deliver(
        now,
        routed("a/rather/long/topic/for/a/small/client", QoS::AtLeastOnce),
        &mut out,
    );
    s.connection_lost(now, &mut out);
    out.clear();
    c.properties.maximum_packet_size = NonZeroU32::new(16);
    s.attach(now, &c, false, true, &mut out);
    assert!(out.contains(&Output::Dropped(DropReason::TooLarge)));
    assert!(sent_publishes(&out).is_empty());
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn touch_postpones_the_keep_alive_deadline() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.touch(now + Duration::from_secs(10));
    s.tick(now + Duration::from_secs(20), &mut out);
    assert!(s.is_connected());
}

#[test]
fn connect_with_an_authentication_method_is_refused_with_bad_authentication_method() {
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    assert_eq!(
        validate_connect(&c, &BrokerSettings::default()),
        Err(ReasonCode::BadAuthenticationMethod)
    );
}

#[test]
fn auth_packet_without_a_negotiated_method_is_a_protocol_error() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    let auth = thingmq_codec::Auth {
        reason: ReasonCode::ReAuthenticate,
        properties: Default::default(),
    };
    let err = s
        .handle_packet(now, Packet::Auth(auth), &mut out)
        .unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert!(!s.is_connected());
}

#[test]
fn reason_strings_are_sent_only_when_problem_information_is_requested() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.handle_packet(now, Packet::PingResp, &mut out)
        .unwrap_err();
    let Packet::Disconnect(d) = sent(&out)[0] else {
        panic!()
    };
    assert!(d.properties.reason_string.is_some());

    let mut s = Session::new(Arc::new(BrokerSettings::default()));
    let mut c = connect(ProtocolVersion::V5, true);
    c.properties.request_problem_information = Some(false);
    let mut out = vec![];
    s.attach(now, &c, false, false, &mut out);
    out.clear();
    s.handle_packet(now, Packet::PingResp, &mut out)
        .unwrap_err();
    let Packet::Disconnect(d) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(d.reason, ReasonCode::ProtocolError);
    assert!(d.properties.reason_string.is_none());
}

#[test]
fn v3_connection_gets_no_disconnect_packet_on_a_violation() {
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    s.handle_packet(now, Packet::PingResp, &mut out)
        .unwrap_err();
    assert!(sent(&out).is_empty());
    assert!(out.contains(&Output::Close));
}

/// A policy for tests: allows everything under `ok/`.
#[derive(Debug)]
struct OnlyOk;

impl crate::AccessPolicy for OnlyOk {
    fn can_publish(&self, topic: &str) -> bool {
        topic.starts_with("ok/")
    }
    fn can_subscribe(&self, filter: &str) -> bool {
        filter.starts_with("ok/")
    }
    fn can_receive(&self, topic: &str) -> bool {
        topic.starts_with("ok/")
    }
}

#[test]
fn publish_refused_by_the_policy_is_acknowledged_with_0x87_on_v5_and_not_routed() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.set_policy(Arc::new(OnlyOk));
    s.handle_packet(now, publish("no/x", QoS::AtLeastOnce, Some(1)), &mut out)
        .unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Publish { .. })));
    let Packet::PubAck(a) = sent(&out)[0] else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::NotAuthorized);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Denied {
            action: "publish",
            ..
        }
    )));
}

#[test]
fn publish_refused_by_the_policy_is_dropped_silently_on_v3() {
    let (mut s, now, mut out) = session(ProtocolVersion::V3_1_1);
    s.set_policy(Arc::new(OnlyOk));
    s.handle_packet(now, publish("no/x", QoS::AtLeastOnce, Some(1)), &mut out)
        .unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Publish { .. })));
    // The v3 client still gets its PUBACK: it has no way to learn of the refusal.
    assert_eq!(sent(&out), vec![&Packet::PubAck(PubAck::new(pid(1)))]);
}

#[test]
fn subscribe_refused_by_the_policy_gets_0x87_on_v5_and_0x80_on_v3() {
    for (version, expected) in [
        (ProtocolVersion::V5, ReasonCode::NotAuthorized),
        (ProtocolVersion::V3_1_1, ReasonCode::NotAuthorized),
    ] {
        let (mut s, now, mut out) = session(version);
        s.set_policy(Arc::new(OnlyOk));
        let sub = Subscribe {
            packet_id: pid(1),
            properties: SubscribeProperties::default(),
            filters: vec![
                ("no/#".into(), SubscriptionOptions::default()),
                ("ok/#".into(), SubscriptionOptions::default()),
            ],
        };
        s.handle_packet(now, Packet::Subscribe(sub), &mut out)
            .unwrap();
        let Packet::SubAck(ack) = sent(&out)[0] else {
            panic!()
        };
        // The codec writes every failure as 0x80 on v3.1.1.
        assert_eq!(ack.reasons, [expected, ReasonCode::Success]);
        assert_eq!(s.subscriptions().count(), 1);
    }
}

#[test]
fn messages_the_client_may_not_receive_are_dropped() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.set_policy(Arc::new(OnlyOk));
    s.deliver(now, routed("no/x", QoS::AtMostOnce), &mut out);
    assert_eq!(out, vec![Output::Dropped(DropReason::NotAuthorized)]);
    out.clear();
    s.deliver(now, routed("ok/x", QoS::AtMostOnce), &mut out);
    assert_eq!(sent_publishes(&out).len(), 1);
}

#[test]
fn will_to_a_topic_the_policy_refuses_is_not_published() {
    let (mut s, now, mut out) = session(ProtocolVersion::V5);
    s.attach(now, &will_connect(None), false, false, &mut out);
    s.set_policy(Arc::new(OnlyOk));
    out.clear();
    s.connection_lost(now, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Denied { action: "will", .. })));
}

#[test]
fn each_way_a_connection_ends_leaves_its_close_reason() {
    let closed = |f: &dyn Fn(&mut Session, Instant, &mut Vec<Output>)| {
        let (mut s, now, mut out) = session(ProtocolVersion::V5);
        assert_eq!(s.close_reason(), None);
        f(&mut s, now, &mut out);
        assert!(out.iter().any(|o| matches!(o, Output::Close)));
        s.close_reason().map(|r| r.name().into_owned())
    };
    let disconnect = |code| {
        move |s: &mut Session, now, out: &mut Vec<Output>| {
            let d = Packet::Disconnect(Disconnect {
                reason: code,
                properties: DisconnectProperties::default(),
            });
            s.handle_packet(now, d, out).unwrap();
        }
    };
    assert_eq!(
        closed(&disconnect(ReasonCode::Success)).as_deref(),
        Some("normal")
    );
    assert_eq!(
        closed(&disconnect(ReasonCode::DisconnectWithWill)).as_deref(),
        Some("disconnect_0x04")
    );
    assert_eq!(
        closed(&|s, now, out| s.tick(now + Duration::from_secs(16), out)).as_deref(),
        Some("keepalive_timeout")
    );
    assert_eq!(
        closed(&|s, now, out| {
            let _ = s.handle_packet(now, Packet::PingResp, out);
        })
        .as_deref(),
        Some("protocol_error")
    );
    assert_eq!(
        closed(&|s, now, out| s.takeover(now, out)).as_deref(),
        Some("takenover")
    );
    assert_eq!(
        closed(&|s, now, out| s.kick(now, out)).as_deref(),
        Some("kicked")
    );
    assert_eq!(
        closed(&|s, now, out| s.shutdown(now, out)).as_deref(),
        Some("server_shutdown")
    );
    assert_eq!(
        closed(&|s, now, out| s.connection_lost(now, out)).as_deref(),
        Some("connection_lost")
    );
    assert_eq!(
        closed(&|s, now, out| s.end(now, out)).as_deref(),
        Some("session_ended")
    );
}

#[test]
fn the_connection_state_box_fits_the_48_byte_size_class() {
    // Every connected session holds one, awake or hibernated.
    let size = std::mem::size_of::<Connection>();
    assert!(size <= 48, "Connection is {size} bytes");
}
