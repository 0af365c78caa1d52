//! Unit tests of what a persistent session reports to the store and how it is restored.

use super::*;
use crate::Message;
use bytes::Bytes;
use std::num::NonZeroU16;
use std::time::Duration;
use thingmq_codec::{
    Connect, ConnectProperties, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties,
    Subscribe, SubscribeProperties, SubscriptionOptions, WillProperties,
};

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn durable() -> Arc<BrokerSettings> {
    Arc::new(BrokerSettings {
        durable: true,
        ..BrokerSettings::default()
    })
}

fn v3_persistent() -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: false,
        keep_alive: 10,
        client_id: "c1".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn persists(out: &[Output]) -> Vec<&PersistOp> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn stored(qos: QoS, id: u64) -> Routed {
    Routed {
        message: Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::from_static(b"m"),
            qos,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
        }),
        qos,
        retain: false,
        subscription_ids: vec![],
        share: None,
        store_id: Some(id),
    }
}

fn attached(settings: Arc<BrokerSettings>, c: &Connect) -> (Session, Instant, Vec<Output>) {
    let mut s = Session::new(settings);
    let now = Instant::now();
    let mut out = vec![];
    s.attach(now, c, false, false, &mut out);
    (s, now, out)
}

#[test]
fn a_persistent_session_reports_its_state_at_connect_and_subscribe() {
    let (mut s, now, mut out) = attached(durable(), &v3_persistent());
    assert!(matches!(persists(&out)[..], [PersistOp::Session(st)] if st.connected));
    out.clear();
    let sub = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![(
            "a/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..Default::default()
            },
        )],
    });
    s.handle_packet(now, sub, &mut out).unwrap();
    let ops = persists(&out);
    let [PersistOp::Session(st)] = &ops[..] else {
        panic!("{ops:?}")
    };
    assert_eq!(st.subscriptions.len(), 1);
    assert_eq!(st.subscriptions[0].filter, "a/#");
}

#[test]
fn a_clean_session_reports_nothing() {
    let mut c = v3_persistent();
    c.clean_start = true;
    let (mut s, now, out) = attached(durable(), &c);
    assert!(persists(&out).is_empty());
    let mut out = vec![];
    s.deliver(now, stored(QoS::AtLeastOnce, 1), &mut out);
    s.connection_lost(now, &mut out);
    // Deliveries carry no store id for non-persistent sessions in practice; the session
    // itself never reports a state.
    assert!(!persists(&out)
        .iter()
        .any(|p| matches!(p, PersistOp::Session(_) | PersistOp::Ended)));
}

#[test]
fn without_a_durable_server_nothing_is_reported() {
    let (mut s, now, out) = attached(Arc::new(BrokerSettings::default()), &v3_persistent());
    assert!(persists(&out).is_empty());
    let mut out = vec![];
    s.deliver(now, stored(QoS::AtLeastOnce, 1), &mut out);
    assert!(persists(&out).is_empty());
}

#[test]
fn qos1_delivery_is_reported_sent_then_done_on_puback() {
    let (mut s, now, _) = attached(durable(), &v3_persistent());
    let mut out = vec![];
    s.deliver(now, stored(QoS::AtLeastOnce, 7), &mut out);
    assert_eq!(
        persists(&out),
        vec![&PersistOp::Sent {
            message_id: 7,
            packet_id: pid(1),
            awaiting: Awaiting::Ack
        }]
    );
    out.clear();
    s.handle_packet(now, Packet::PubAck(PubAck::new(pid(1))), &mut out)
        .unwrap();
    assert_eq!(persists(&out), vec![&PersistOp::Done { message_id: 7 }]);
}

#[test]
fn qos2_delivery_is_reported_at_each_step() {
    let (mut s, now, _) = attached(durable(), &v3_persistent());
    let mut out = vec![];
    s.deliver(now, stored(QoS::ExactlyOnce, 3), &mut out);
    s.handle_packet(now, Packet::PubRec(PubRec::new(pid(1))), &mut out)
        .unwrap();
    s.handle_packet(now, Packet::PubComp(PubComp::new(pid(1))), &mut out)
        .unwrap();
    assert_eq!(
        persists(&out),
        vec![
            &PersistOp::Sent {
                message_id: 3,
                packet_id: pid(1),
                awaiting: Awaiting::Rec
            },
            &PersistOp::Sent {
                message_id: 3,
                packet_id: pid(1),
                awaiting: Awaiting::Comp
            },
            &PersistOp::Done { message_id: 3 },
        ]
    );
}

#[test]
fn offline_queue_overflow_and_expiry_are_reported_done() {
    let settings = Arc::new(BrokerSettings {
        durable: true,
        max_queued_messages: 1,
        ..BrokerSettings::default()
    });
    let (mut s, now, _) = attached(settings, &v3_persistent());
    let mut out = vec![];
    s.connection_lost(now, &mut out);
    out.clear();
    s.deliver(now, stored(QoS::AtLeastOnce, 1), &mut out);
    s.deliver(now, stored(QoS::AtLeastOnce, 2), &mut out);
    assert_eq!(persists(&out), vec![&PersistOp::Done { message_id: 2 }]);
    let mut expired = stored(QoS::AtLeastOnce, 3);
    Arc::make_mut(&mut expired.message).expires_at = Some(now);
    out.clear();
    s.deliver(now, expired, &mut out);
    assert_eq!(persists(&out), vec![&PersistOp::Done { message_id: 3 }]);
}

#[test]
fn pubrel_of_a_received_qos2_id_is_reported_released() {
    let (mut s, now, _) = attached(durable(), &v3_persistent());
    let mut out = vec![];
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "x".into(),
        packet_id: Some(pid(9)),
        properties: PublishProperties::default(),
        payload: Bytes::new(),
    });
    s.handle_packet(now, p, &mut out).unwrap();
    let ack = out
        .iter()
        .find_map(|o| match o {
            Output::Publish { ack, .. } => *ack,
            _ => None,
        })
        .unwrap();
    s.publish_done(ack, thingmq_codec::ReasonCode::Success, &mut out);
    out.clear();
    s.handle_packet(now, Packet::PubRel(PubRel::new(pid(9))), &mut out)
        .unwrap();
    assert_eq!(
        persists(&out),
        vec![&PersistOp::Released { packet_id: pid(9) }]
    );
}

#[test]
fn a_lost_connection_reports_the_will_deadline_and_expiry() {
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(100);
    c.will = Some(thingmq_codec::LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(10),
            ..Default::default()
        },
    });
    let (mut s, now, _) = attached(durable(), &c);
    let mut out = vec![];
    s.connection_lost(now, &mut out);
    let ops = persists(&out);
    let [PersistOp::Session(st)] = &ops[..] else {
        panic!("{ops:?}")
    };
    assert!(!st.connected);
    assert_eq!(st.will_at, Some(now + Duration::from_secs(10)));
    assert_eq!(st.expires_at, Some(now + Duration::from_secs(100)));
    assert!(st.will.is_some());
}

#[test]
fn session_end_is_reported_once_stored() {
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(5);
    let (mut s, now, _) = attached(durable(), &c);
    let mut out = vec![];
    s.connection_lost(now, &mut out);
    out.clear();
    s.tick(now + Duration::from_secs(5), &mut out);
    assert_eq!(persists(&out), vec![&PersistOp::Ended]);
    assert!(s.is_ended());
}

#[test]
fn restored_session_resends_inflight_and_queue_and_keeps_qos2_ids() {
    let (s, now, _) = attached(durable(), &v3_persistent());
    let mut state = s.state();
    state.connected = false;
    let deliveries = vec![
        RestoredDelivery {
            routed: stored(QoS::ExactlyOnce, 1),
            sent: Some((pid(4), Awaiting::Comp)),
        },
        RestoredDelivery {
            routed: stored(QoS::AtLeastOnce, 2),
            sent: Some((pid(5), Awaiting::Ack)),
        },
        RestoredDelivery {
            routed: stored(QoS::AtLeastOnce, 3),
            sent: None,
        },
    ];
    let mut r = Session::restore(durable(), now, state, deliveries, vec![pid(8)]);
    assert_eq!(r.inflight_len(), 2);
    assert_eq!(r.queued_len(), 1);
    let mut out = vec![];
    r.attach(now, &v3_persistent(), false, true, &mut out);
    let packets: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect();
    // CONNACK, PUBREL 4 (not the PUBLISH again), PUBLISH 5 with DUP, then the queued one.
    assert!(matches!(packets[1], Packet::PubRel(r) if r.packet_id == pid(4)));
    assert!(matches!(packets[2], Packet::Publish(p) if p.dup && p.packet_id == Some(pid(5))));
    assert!(
        matches!(packets[3], Packet::Publish(p) if !p.dup && p.packet_id != Some(pid(4)) && p.packet_id != Some(pid(5)))
    );
    // A resent QoS 2 PUBLISH the store had recorded is answered, not routed again.
    out.clear();
    let p = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "x".into(),
        packet_id: Some(pid(8)),
        properties: PublishProperties::default(),
        payload: Bytes::new(),
    });
    r.handle_packet(now, p, &mut out).unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::Publish { .. })));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send(Packet::PubRec(r)) if r.packet_id == pid(8))));
}

#[test]
fn a_session_connected_when_the_server_died_loses_its_connection_at_restore() {
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(60);
    c.will = Some(thingmq_codec::LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (s, _, _) = attached(durable(), &c);
    let state = s.state();
    assert!(state.connected);
    let later = Instant::now() + Duration::from_secs(1000);
    let mut r = Session::restore(durable(), later, state, vec![], vec![]);
    let mut out = vec![];
    r.tick(later, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Will(_))));
    assert!(!r.is_ended());
    r.tick(later + Duration::from_secs(60), &mut out);
    assert!(r.is_ended());
}

#[test]
fn suspend_keeps_a_persistent_session_and_schedules_its_delayed_will() {
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(600);
    c.will = Some(thingmq_codec::LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(30),
            ..Default::default()
        },
    });
    let (mut s, now, _) = attached(durable(), &c);
    let mut out = vec![];
    s.suspend(now, &mut out);
    assert!(!s.is_ended());
    assert!(!out.iter().any(|o| matches!(o, Output::Will(_))));
    let ops = persists(&out);
    assert!(matches!(ops[..], [PersistOp::Session(st)] if st.will_at.is_some()));
}

fn shared(routed: Routed) -> Routed {
    Routed {
        share: Some((Arc::from("g"), Arc::from("t"))),
        ..routed
    }
}

fn restored_with(deliveries: Vec<RestoredDelivery>, expiry: u32) -> (Session, Instant) {
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(expiry);
    let (s, now, _) = attached(durable(), &c);
    let mut state = s.state();
    state.connected = false;
    state.expires_at = Some(now + Duration::from_secs(u64::from(expiry)));
    let r = Session::restore(durable(), now, state, deliveries, vec![]);
    (r, now)
}

#[test]
fn a_restored_shared_subscription_delivery_is_sent_and_reported_by_its_store_id() {
    let (mut r, now) = restored_with(
        vec![RestoredDelivery {
            routed: shared(stored(QoS::AtLeastOnce, 7)),
            sent: None,
        }],
        60,
    );
    let mut c = v3_persistent();
    c.protocol = ProtocolVersion::V5;
    c.properties.session_expiry_interval = Some(60);
    let mut out = vec![];
    r.attach(now, &c, false, true, &mut out);
    let sent = persists(&out)
        .into_iter()
        .find_map(|p| match p {
            PersistOp::Sent {
                message_id: 7,
                packet_id,
                awaiting: Awaiting::Ack,
            } => Some(*packet_id),
            _ => None,
        })
        .expect("the delivery is reported sent");
    out.clear();
    r.handle_packet(now, Packet::PubAck(PubAck::new(sent)), &mut out)
        .unwrap();
    assert_eq!(persists(&out), vec![&PersistOp::Done { message_id: 7 }]);
}

#[test]
fn a_restored_shared_subscription_delivery_goes_back_to_its_group_when_the_session_ends() {
    let (mut r, now) = restored_with(
        vec![
            RestoredDelivery {
                routed: shared(stored(QoS::ExactlyOnce, 3)),
                sent: Some((pid(2), Awaiting::Rec)),
            },
            RestoredDelivery {
                routed: shared(stored(QoS::AtLeastOnce, 4)),
                sent: None,
            },
            RestoredDelivery {
                routed: stored(QoS::AtLeastOnce, 5),
                sent: None,
            },
        ],
        5,
    );
    let mut out = vec![];
    r.tick(now + Duration::from_secs(5), &mut out);
    assert!(r.is_ended());
    assert!(persists(&out).contains(&&PersistOp::Ended));
    let orphans = out
        .iter()
        .find_map(|o| match o {
            Output::Ended { orphans } => Some(orphans),
            _ => None,
        })
        .unwrap();
    // Only the shared ones, with their group and store id, so the member they are handed
    // to can get a queue entry for the same stored message.
    let handed: Vec<_> = orphans
        .iter()
        .map(|o| (o.store_id, o.share.as_ref().map(|(g, f)| (&**g, &**f))))
        .collect();
    assert_eq!(
        handed,
        vec![(Some(3), Some(("g", "t"))), (Some(4), Some(("g", "t")))]
    );
}
