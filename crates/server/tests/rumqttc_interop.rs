//! Interop tests against rumqttc 0.24 — an MQTT client we did not write — with the server
//! running in-process on `127.0.0.1:0`.
//!
//! Every await is bounded by [`WAIT`], so a broker that never answers fails the test instead of
//! hanging it. Each test's server runs on the test's own runtime: when a test fails (panics),
//! `#[tokio::test]` drops that runtime, which drops every server task and closes its listener
//! and sockets, so no server outlives its test; passing tests also call
//! `ServerHandle::shutdown`.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use thingmq_server::{Config, Server, ServerHandle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound on every wait: generous, for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test with `what` when it takes longer than [`WAIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn start_server() -> (ServerHandle, SocketAddr) {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .expect("test config is valid");
    let handle = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let addr = handle.local_addrs()[0];
    (handle, addr)
}

/// MQTT 3.1.1 clients (rumqttc's top-level API).
mod v4 {
    use super::*;
    pub(super) use rumqttc::{
        AsyncClient, ConnAck, ConnectionError, Event, LastWill, MqttOptions, Packet, Publish, QoS,
        SubscribeReasonCode,
    };

    /// A connected client whose event loop runs in its own task and reports every event.
    /// The loop stops at the first error, so rumqttc never reconnects behind a test's back.
    pub(super) struct Client {
        pub(super) client: AsyncClient,
        pub(super) events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
        /// PUBLISHes that arrived while waiting for another packet (a SUBACK, a PUBACK).
        pending: VecDeque<Publish>,
        task: JoinHandle<()>,
    }

    impl Drop for Client {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(super) fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Connects and waits for a successful CONNACK.
    pub(super) async fn connect(o: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let stop = event.is_err();
                if tx.send(event).is_err() || stop {
                    break;
                }
            }
        });
        let mut c = Client {
            client,
            events,
            pending: VecDeque::new(),
            task,
        };
        let ack = c
            .next_incoming("CONNACK", |p| match p {
                Packet::ConnAck(a) => Some(a),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        (c, ack)
    }

    impl Client {
        /// The next incoming packet `pick` accepts; other events are skipped.
        pub(super) async fn next_incoming<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(Packet) -> Option<T>,
        ) -> T {
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Event::Incoming(Packet::Publish(p)))) => self.pending.push_back(p),
                        Some(Ok(Event::Incoming(p))) => {
                            if let Some(v) = pick(p) {
                                return v;
                            }
                        }
                        Some(Ok(Event::Outgoing(_))) => {}
                        Some(Err(e)) => panic!("connection failed while waiting for {what}: {e:?}"),
                        None => panic!("event loop ended while waiting for {what}"),
                    }
                }
            })
            .await
        }

        pub(super) async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
            within("subscribe", self.client.subscribe(filter, qos))
                .await
                .expect("subscribe request");
            self.next_incoming("SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a.return_codes[0]),
                _ => None,
            })
            .await
        }

        /// Publishes and waits for the end of the QoS flow (PUBACK / PUBCOMP).
        pub(super) async fn publish(
            &mut self,
            topic: &str,
            payload: &[u8],
            qos: QoS,
            retain: bool,
        ) {
            within(
                "publish",
                self.client.publish(topic, qos, retain, payload.to_vec()),
            )
            .await
            .expect("publish request");
            match qos {
                QoS::AtMostOnce => {
                    within("outgoing publish", async {
                        loop {
                            match self.events.recv().await {
                                Some(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => return,
                                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                                    self.pending.push_back(p)
                                }
                                Some(Ok(_)) => {}
                                other => panic!("connection failed while publishing: {other:?}"),
                            }
                        }
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.next_incoming("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.next_incoming("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }

        pub(super) async fn next_publish(&mut self) -> Publish {
            if let Some(p) = self.pending.pop_front() {
                return p;
            }
            within("PUBLISH", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Event::Incoming(Packet::Publish(p)))) => return p,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            panic!("connection failed while waiting for PUBLISH: {e:?}")
                        }
                        None => panic!("event loop ended while waiting for PUBLISH"),
                    }
                }
            })
            .await
        }

        /// Sends DISCONNECT and waits until the connection is closed.
        pub(super) async fn disconnect(mut self) {
            within("disconnect", self.client.disconnect())
                .await
                .expect("disconnect request");
            within("connection close after DISCONNECT", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            })
            .await;
        }

        /// Collects publishes until `n` have arrived.
        pub(super) async fn publishes(&mut self, n: usize) -> Vec<Publish> {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                out.push(self.next_publish().await);
            }
            out
        }

        /// Publishes that arrive before a marker sent to a private topic: proves nothing else
        /// was pending (everything queued earlier arrives before the marker).
        pub(super) async fn publishes_before_fence(&mut self, fence: &str) -> Vec<Publish> {
            self.subscribe(fence, QoS::AtLeastOnce).await;
            self.publish(fence, b"fence", QoS::AtLeastOnce, false).await;
            let mut before = Vec::new();
            loop {
                let p = self.next_publish().await;
                if p.topic == fence {
                    return before;
                }
                before.push(p);
            }
        }
    }
}

/// MQTT 5 clients (`rumqttc::v5`).
mod v5 {
    use super::*;
    pub(super) use rumqttc::v5::mqttbytes::v5::{
        ConnAck, DisconnectReasonCode, Packet, Publish, SubscribeReasonCode,
    };
    pub(super) use rumqttc::v5::mqttbytes::QoS;
    pub(super) use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};

    /// A connected v5 client; see [`super::v4::Client`].
    pub(super) struct Client {
        pub(super) client: AsyncClient,
        pub(super) events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
        /// PUBLISHes that arrived while waiting for another packet (a SUBACK, a PUBACK).
        pending: VecDeque<Publish>,
        task: JoinHandle<()>,
    }

    impl Drop for Client {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(super) fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub(super) async fn connect(o: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let stop = event.is_err();
                if tx.send(event).is_err() || stop {
                    break;
                }
            }
        });
        let mut c = Client {
            client,
            events,
            pending: VecDeque::new(),
            task,
        };
        let ack = c
            .next_incoming("CONNACK", |p| match p {
                Packet::ConnAck(a) => Some(a),
                _ => None,
            })
            .await;
        assert_eq!(
            ack.code,
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
        );
        (c, ack)
    }

    impl Client {
        pub(super) async fn next_incoming<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(Packet) -> Option<T>,
        ) -> T {
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Event::Incoming(Packet::Publish(p)))) => self.pending.push_back(p),
                        Some(Ok(Event::Incoming(p))) => {
                            if let Some(v) = pick(p) {
                                return v;
                            }
                        }
                        Some(Ok(Event::Outgoing(_))) => {}
                        Some(Err(e)) => panic!("connection failed while waiting for {what}: {e:?}"),
                        None => panic!("event loop ended while waiting for {what}"),
                    }
                }
            })
            .await
        }

        pub(super) async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
            within("subscribe", self.client.subscribe(filter, qos))
                .await
                .expect("subscribe request");
            self.next_incoming("SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a.return_codes[0]),
                _ => None,
            })
            .await
        }

        pub(super) async fn publish(
            &mut self,
            topic: &str,
            payload: &[u8],
            qos: QoS,
            retain: bool,
        ) {
            within(
                "publish",
                self.client.publish(topic, qos, retain, payload.to_vec()),
            )
            .await
            .expect("publish request");
            match qos {
                QoS::AtMostOnce => {
                    within("outgoing publish", async {
                        loop {
                            match self.events.recv().await {
                                Some(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => return,
                                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                                    self.pending.push_back(p)
                                }
                                Some(Ok(_)) => {}
                                other => panic!("connection failed while publishing: {other:?}"),
                            }
                        }
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.next_incoming("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.next_incoming("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }

        pub(super) async fn next_publish(&mut self) -> Publish {
            if let Some(p) = self.pending.pop_front() {
                return p;
            }
            within("PUBLISH", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Event::Incoming(Packet::Publish(p)))) => return p,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            panic!("connection failed while waiting for PUBLISH: {e:?}")
                        }
                        None => panic!("event loop ended while waiting for PUBLISH"),
                    }
                }
            })
            .await
        }

        pub(super) async fn publishes_before_fence(&mut self, fence: &str) -> Vec<Publish> {
            self.subscribe(fence, QoS::AtLeastOnce).await;
            self.publish(fence, b"fence", QoS::AtLeastOnce, false).await;
            let mut before = Vec::new();
            loop {
                let p = self.next_publish().await;
                if p.topic == fence.as_bytes() {
                    return before;
                }
                before.push(p);
            }
        }
    }
}

const QOS_LEVELS: [(v4::QoS, v5::QoS); 3] = [
    (v4::QoS::AtMostOnce, v5::QoS::AtMostOnce),
    (v4::QoS::AtLeastOnce, v5::QoS::AtLeastOnce),
    (v4::QoS::ExactlyOnce, v5::QoS::ExactlyOnce),
];

#[tokio::test(flavor = "multi_thread")]
async fn v311_publish_and_subscribe_deliver_equal_payloads_at_each_qos() {
    let (server, addr) = start_server().await;
    let (mut sub, _) = v4::connect(v4::options(addr, "v4-sub")).await;
    let (mut publ, _) = v4::connect(v4::options(addr, "v4-pub")).await;
    for (i, (qos, _)) in QOS_LEVELS.into_iter().enumerate() {
        let topic = format!("v4/qos{i}");
        assert_eq!(
            sub.subscribe(&topic, qos).await,
            v4::SubscribeReasonCode::Success(qos)
        );
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000 + i).collect();
        publ.publish(&topic, &payload, qos, false).await;
        let got = sub.next_publish().await;
        assert_eq!(got.topic, topic);
        assert_eq!(got.payload.as_ref(), payload.as_slice());
        assert_eq!(got.qos, qos);
        assert!(!got.retain);
    }
    // Each message exactly once.
    assert!(sub.publishes_before_fence("fence/v4").await.is_empty());
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v5_publish_and_subscribe_deliver_equal_payloads_at_each_qos() {
    let (server, addr) = start_server().await;
    let (mut sub, _) = v5::connect(v5::options(addr, "v5-sub")).await;
    let (mut publ, _) = v5::connect(v5::options(addr, "v5-pub")).await;
    for (i, (_, qos)) in QOS_LEVELS.into_iter().enumerate() {
        let topic = format!("v5/qos{i}");
        assert_eq!(
            sub.subscribe(&topic, qos).await,
            v5::SubscribeReasonCode::Success(qos)
        );
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000 + i).collect();
        publ.publish(&topic, &payload, qos, false).await;
        let got = sub.next_publish().await;
        assert_eq!(got.topic.as_ref(), topic.as_bytes());
        assert_eq!(got.payload.as_ref(), payload.as_slice());
        assert_eq!(got.qos, qos);
        assert!(!got.retain);
    }
    assert!(sub.publishes_before_fence("fence/v5").await.is_empty());
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v311_and_v5_clients_exchange_messages() {
    let (server, addr) = start_server().await;
    let (mut old, _) = v4::connect(v4::options(addr, "mixed-v4")).await;
    let (mut new, _) = v5::connect(v5::options(addr, "mixed-v5")).await;
    old.subscribe("mixed/to4", v4::QoS::ExactlyOnce).await;
    new.subscribe("mixed/to5", v5::QoS::ExactlyOnce).await;
    new.publish("mixed/to4", b"from five", v5::QoS::ExactlyOnce, false)
        .await;
    old.publish("mixed/to5", b"from four", v4::QoS::ExactlyOnce, false)
        .await;
    assert_eq!(old.next_publish().await.payload.as_ref(), b"from five");
    assert_eq!(new.next_publish().await.payload.as_ref(), b"from four");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_message_is_delivered_with_retain_flag_to_later_subscribers() {
    let (server, addr) = start_server().await;
    let (mut publ, _) = v4::connect(v4::options(addr, "ret-pub")).await;
    publ.publish("ret/t", b"kept", v4::QoS::AtLeastOnce, true)
        .await;

    let (mut sub4, _) = v4::connect(v4::options(addr, "ret-sub4")).await;
    sub4.subscribe("ret/#", v4::QoS::AtLeastOnce).await;
    let got = sub4.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref(), got.retain),
        ("ret/t", &b"kept"[..], true)
    );

    let (mut sub5, _) = v5::connect(v5::options(addr, "ret-sub5")).await;
    sub5.subscribe("ret/t", v5::QoS::AtLeastOnce).await;
    let got = sub5.next_publish().await;
    assert_eq!((got.payload.as_ref(), got.retain), (&b"kept"[..], true));

    // An empty retained payload deletes it.
    publ.publish("ret/t", b"", v4::QoS::AtLeastOnce, true).await;
    let (mut late, _) = v4::connect(v4::options(addr, "ret-late")).await;
    late.subscribe("ret/t", v4::QoS::AtLeastOnce).await;
    assert!(late.publishes_before_fence("fence/late").await.is_empty());
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v311_persistent_session_receives_messages_published_while_offline() {
    let (server, addr) = start_server().await;
    let mut o = v4::options(addr, "persistent");
    o.set_clean_session(false);
    let (mut sub, ack) = v4::connect(o.clone()).await;
    assert!(!ack.session_present);
    sub.subscribe("offline/t", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let (mut publ, _) = v4::connect(v4::options(addr, "offline-pub")).await;
    for i in 0..5 {
        publ.publish(
            "offline/t",
            format!("m{i}").as_bytes(),
            v4::QoS::AtLeastOnce,
            false,
        )
        .await;
    }

    let (mut back, ack) = v4::connect(o).await;
    assert!(
        ack.session_present,
        "[MQTT-3.2.2-2] session present after reconnect"
    );
    let got: Vec<_> = back
        .publishes(5)
        .await
        .into_iter()
        .map(|p| (p.payload.to_vec(), p.qos))
        .collect();
    let want: Vec<_> = (0..5)
        .map(|i| (format!("m{i}").into_bytes(), v4::QoS::AtLeastOnce))
        .collect();
    assert_eq!(got, want);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn will_is_published_when_the_client_vanishes_without_disconnect() {
    let (server, addr) = start_server().await;
    let (mut watcher, _) = v4::connect(v4::options(addr, "will-watcher")).await;
    watcher.subscribe("wills/#", v4::QoS::AtLeastOnce).await;

    let mut o = v4::options(addr, "will-v4");
    o.set_last_will(v4::LastWill::new(
        "wills/v4",
        "v4 gone",
        v4::QoS::AtLeastOnce,
        false,
    ));
    let (dying, _) = v4::connect(o).await;
    drop(dying); // aborts the event loop task: the socket closes without DISCONNECT
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), will.payload.as_ref()),
        ("wills/v4", &b"v4 gone"[..])
    );

    let mut o = v5::options(addr, "will-v5");
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "wills/v5",
        "v5 gone",
        v5::QoS::AtLeastOnce,
        false,
        None,
    ));
    let (dying, _) = v5::connect(o).await;
    drop(dying);
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), will.payload.as_ref()),
        ("wills/v5", &b"v5 gone"[..])
    );
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_will_after_a_normal_disconnect() {
    let (server, addr) = start_server().await;
    let (mut watcher, _) = v4::connect(v4::options(addr, "nowill-watcher")).await;
    watcher.subscribe("nowill/#", v4::QoS::AtLeastOnce).await;
    let mut o = v4::options(addr, "nowill");
    o.set_last_will(v4::LastWill::new(
        "nowill/t",
        "unexpected",
        v4::QoS::AtLeastOnce,
        false,
    ));
    let (leaving, _) = v4::connect(o).await;
    leaving.disconnect().await;
    // Give the broker time to act on the closed connection, then check nothing is pending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(watcher
        .publishes_before_fence("fence/nowill")
        .await
        .is_empty());
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_subscription_hands_each_message_to_one_member_in_turn() {
    let (server, addr) = start_server().await;
    let (mut a, _) = v5::connect(v5::options(addr, "share-a")).await;
    let (mut b, _) = v4::connect(v4::options(addr, "share-b")).await;
    a.subscribe("$share/workers/jobs/+", v5::QoS::AtLeastOnce)
        .await;
    b.subscribe("$share/workers/jobs/+", v4::QoS::AtLeastOnce)
        .await;
    let (mut publ, _) = v5::connect(v5::options(addr, "share-pub")).await;
    let sent: Vec<String> = (0..10).map(|i| format!("job{i}")).collect();
    for job in &sent {
        publ.publish("jobs/new", job.as_bytes(), v5::QoS::AtLeastOnce, false)
            .await;
    }
    // Every publish was acknowledged, so every message has been routed: the fences collect
    // all of them.
    let got_a: Vec<String> = a
        .publishes_before_fence("fence/a")
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect();
    let got_b: Vec<String> = b
        .publishes_before_fence("fence/b")
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect();
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "a={got_a:?} b={got_b:?}"
    );
    assert_eq!(
        got_a.len() + got_b.len(),
        sent.len(),
        "a={got_a:?} b={got_b:?}"
    );
    let all: BTreeSet<_> = got_a.iter().chain(&got_b).cloned().collect();
    assert_eq!(all, sent.iter().cloned().collect::<BTreeSet<_>>());
    within("shutdown", server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_sends_v5_clients_disconnect_server_shutting_down() {
    let (server, addr) = start_server().await;
    let (mut c5, _) = v5::connect(v5::options(addr, "shutdown-v5")).await;
    let (mut c4, _) = v4::connect(v4::options(addr, "shutdown-v4")).await;
    within("shutdown", server.shutdown()).await;

    let reason = within("DISCONNECT from the server", async {
        loop {
            match c5.events.recv().await {
                Some(Ok(_)) => {}
                Some(Err(v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect {
                    reason_code,
                    ..
                }))) => return Some(reason_code),
                Some(Err(e)) => panic!("connection ended without DISCONNECT: {e:?}"),
                None => return None,
            }
        }
    })
    .await;
    assert_eq!(reason, Some(v5::DisconnectReasonCode::ServerShuttingDown));

    // The v3.1.1 client, which has no DISCONNECT from servers, is simply closed.
    within("v3.1.1 connection close", async {
        loop {
            match c4.events.recv().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_writes_disconnect_0x8b_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (server, addr) = start_server().await;
    let mut sock = within("tcp connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    #[rustfmt::skip]
    let connect: &[u8] = &[
        0x10, 17,                                // CONNECT, remaining length 17
        0, 4, b'M', b'Q', b'T', b'T', 5,         // protocol name, level 5
        0x02, 0, 60,                             // clean start, keep alive 60 s
        0,                                       // no properties
        0, 4, b'r', b'a', b'w', b'5',            // client id "raw5"
    ];
    within("write CONNECT", sock.write_all(connect))
        .await
        .expect("write");
    let mut connack = [0u8; 2];
    within("CONNACK header", sock.read_exact(&mut connack))
        .await
        .expect("read");
    assert_eq!(connack[0], 0x20);
    let mut body = vec![0u8; usize::from(connack[1])];
    within("CONNACK body", sock.read_exact(&mut body))
        .await
        .expect("read");
    assert_eq!(body[1], 0x00, "CONNACK reason");

    within("shutdown", server.shutdown()).await;
    let mut rest = Vec::new();
    within("close after shutdown", sock.read_to_end(&mut rest))
        .await
        .expect("read until close");
    assert!(
        rest.len() >= 3,
        "expected a DISCONNECT before close, got {rest:02x?}"
    );
    assert_eq!(rest[0], 0xE0, "DISCONNECT, got {rest:02x?}");
    assert_eq!(
        rest[2], 0x8B,
        "reason Server shutting down, got {rest:02x?}"
    );
    assert_eq!(
        rest.len(),
        2 + usize::from(rest[1]),
        "nothing after DISCONNECT: {rest:02x?}"
    );
}
