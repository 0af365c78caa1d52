//! The client against thingmq's own server, started in-process on 127.0.0.1:0: QoS 0/1/2 in
//! both directions on v3.1.1 and v5, reconnect with session resumption and resend, TLS,
//! WebSocket, a refused connection, and the in-memory stream constructor.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thingmq_client::{
    Client, ClientError, ConnectionError, Event, MqttOptions, ProtocolVersion, QoS, ReasonCode,
    Reconnect, TlsOptions, Transport,
};
use thingmq_server::{Config, Server, ServerHandle};

async fn start(toml: &str) -> (ServerHandle, u16) {
    let config = Config::from_toml(toml).expect("test config is valid");
    let handle = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let port = handle.local_addrs()[0].port();
    (handle, port)
}

const TCP: &str = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n";

fn tcp(port: u16) -> Transport {
    Transport::Tcp {
        host: "127.0.0.1".into(),
        port,
    }
}

fn opts(id: &str, version: ProtocolVersion) -> MqttOptions {
    let mut o = MqttOptions::new(id);
    o.version = version;
    o.reconnect = Some(Reconnect {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    });
    o
}

async fn qos_both_ways(version: ProtocolVersion) {
    let (server, port) = start(TCP).await;
    let (sub, ev) = Client::new(opts("sub", version), tcp(port));
    let mut sub_events = spawn_events(ev);
    connected(&mut sub_events).await;
    let (publ, ev) = Client::new(opts("pub", version), tcp(port));
    let mut pub_events = spawn_events(ev);
    connected(&mut pub_events).await;

    let ack = within("suback", sub.subscribe("q/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS2]);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("q/{}", qos as u8);
        let r = within("publish", publ.publish(topic.clone(), qos, false, "hello"))
            .await
            .unwrap();
        assert_eq!(r.is_some(), qos != QoS::AtMostOnce);
        let m = message(&mut sub_events).await;
        assert_eq!(m.topic, topic.as_str());
        assert_eq!(m.qos, qos, "delivered at the publish QoS");
        assert_eq!(&m.payload[..], b"hello");
    }
    let un = within("unsuback", sub.unsubscribe(vec!["q/#".into()]))
        .await
        .unwrap();
    if version == ProtocolVersion::V5 {
        assert_eq!(un.reasons.len(), 1);
    }
    within("disconnect", sub.disconnect()).await.unwrap();
    let error = next_matching(&mut sub_events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(error, None, "a requested disconnect has no error");
    assert_eq!(
        sub.publish("q/x", QoS::AtMostOnce, false, "late").await,
        Err(ClientError::Closed)
    );
    publ.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn qos_0_1_2_both_directions_over_tcp_v5() {
    qos_both_ways(ProtocolVersion::V5).await;
}

#[tokio::test]
async fn qos_0_1_2_both_directions_over_tcp_v3_1_1() {
    qos_both_ways(ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn user_properties_and_retain_reach_a_v5_subscriber() {
    let (server, port) = start(TCP).await;
    let (publ, ev) = Client::new(opts("pub", ProtocolVersion::V5), tcp(port));
    let _pub_events = spawn_events(ev);
    let props = thingmq_client::codec::PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    within(
        "retained publish",
        publ.publish_message(thingmq_client::Message {
            topic: "r/1".into(),
            payload: "kept".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props,
        }),
    )
    .await
    .unwrap();
    let (sub, ev) = Client::new(opts("sub", ProtocolVersion::V5), tcp(port));
    let mut sub_events = spawn_events(ev);
    within("suback", sub.subscribe("r/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let m = message(&mut sub_events).await;
    assert!(m.retain);
    assert_eq!(m.properties.user_properties, vec![("k".into(), "v".into())]);
    server.shutdown().await;
}

/// The publisher loses the PUBACK (the link drops what the server sends), the link is cut, and
/// the reconnect finds the session present: the PUBLISH is resent with DUP, acked, and the
/// publish call completes. The offline subscriber gets what was sent while it was away.
#[tokio::test]
async fn reconnect_resumes_the_session_and_resends_unacked_publish() {
    let (server, port) = start(TCP).await;
    let link = Link::default();
    let mut o = opts("resumer", ProtocolVersion::V5);
    o.session_expiry_interval = Some(300);
    let l = link.clone();
    let (client, ev) = Client::with_connector(o, move || {
        let l = l.clone();
        async move { l.open(port).await }
    });
    let mut events = spawn_events(ev);
    assert!(!connected(&mut events).await);
    within("suback", client.subscribe("resume/#", QoS::AtLeastOnce))
        .await
        .unwrap();

    // Lose the PUBACK, then cut the link.
    link.blackhole_down.store(true, Ordering::SeqCst);
    let publishing = tokio::spawn({
        let c = client.clone();
        async move {
            c.publish("resume/self", QoS::AtLeastOnce, false, "again")
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!publishing.is_finished(), "PUBACK should have been lost");
    link.cut();
    link.blackhole_down.store(false, Ordering::SeqCst);
    next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;

    // Meanwhile someone publishes to our subscription.
    let (other, ev) = Client::new(opts("other", ProtocolVersion::V5), tcp(port));
    let _other_events = spawn_events(ev);
    within(
        "publish while away",
        other.publish("resume/x", QoS::AtLeastOnce, false, "queued"),
    )
    .await
    .unwrap();

    assert!(connected(&mut events).await, "session must be present");
    let r = within("resent publish acked", publishing).await.unwrap();
    assert_eq!(r, Ok(Some(ReasonCode::Success)));
    let mut topics = vec![];
    while topics.len() < 3 {
        let m = message(&mut events).await;
        topics.push(m.topic.to_string());
    }
    // Our own message arrives (first time before the cut, possibly again as resend) and the
    // queued one after resumption.
    assert!(topics.iter().any(|t| t == "resume/x"), "{topics:?}");
    assert!(topics.iter().any(|t| t == "resume/self"), "{topics:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn in_memory_stream_carries_a_session() {
    let (server, port) = start(TCP).await;
    let link = Link::default();
    let stream = link.open(port).await.unwrap();
    let (client, ev) = Client::with_stream(opts("mem", ProtocolVersion::V5), stream);
    let mut events = spawn_events(ev);
    within("suback", client.subscribe("m", QoS::AtMostOnce))
        .await
        .unwrap();
    within("publish", client.publish("m", QoS::AtMostOnce, false, "x"))
        .await
        .unwrap();
    assert_eq!(message(&mut events).await.topic, "m");
    // Nothing to reconnect to: the loop ends after the link does.
    link.cut();
    next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error: Some(_) } => Some(()),
        _ => None,
    })
    .await;
    assert!(within("end of events", events.recv()).await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn refused_connection_reports_the_reason_and_stops() {
    let toml = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n";
    let (server, port) = start(toml).await;
    let (client, ev) = Client::new(opts("anon", ProtocolVersion::V5), tcp(port));
    let mut events = spawn_events(ev);
    let err = next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await
    .expect("an error");
    assert!(
        matches!(
            err,
            ConnectionError::Refused {
                code: ReasonCode::NotAuthorized,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "connection refused: not authorized (0x87)");
    assert!(within("end of events", events.recv()).await.is_none());
    assert_eq!(
        client.publish("a", QoS::AtMostOnce, false, "x").await,
        Err(ClientError::Closed)
    );
    server.shutdown().await;
}

async fn round_trip(transport: Transport) {
    let (client, ev) = Client::new(opts("rt", ProtocolVersion::V5), transport);
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    within("suback", client.subscribe("rt/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        within(
            "publish",
            client.publish("rt/1", qos, false, "over the wire"),
        )
        .await
        .unwrap();
        let m = message(&mut events).await;
        assert_eq!((&m.payload[..], m.qos), (&b"over the wire"[..], qos));
    }
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_ca_file_and_with_insecure() {
    let pki = Pki::new();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert_file = {:?}\nkey_file = {:?}\n[sys]\ninterval_secs = 0\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let (server, port) = start(&toml).await;
    let tls = TlsOptions {
        ca_file: Some(pki.path("ca.pem")),
        ..TlsOptions::default()
    };
    round_trip(Transport::Tls {
        host: "localhost".into(),
        port,
        tls,
    })
    .await;
    round_trip(Transport::Tls {
        host: "127.0.0.1".into(),
        port,
        tls: TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        },
    })
    .await;

    // Without the CA the certificate is not trusted.
    let (_c, ev) = Client::new(
        {
            let mut o = opts("untrusting", ProtocolVersion::V5);
            o.reconnect = None;
            o
        },
        Transport::Tls {
            host: "localhost".into(),
            port,
            tls: TlsOptions {
                ca_file: Some(pki.path("server.pem")),
                ..TlsOptions::default()
            },
        },
    );
    let mut events = spawn_events(ev);
    let err = next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;
    assert!(
        matches!(err, Some(ConnectionError::Io(_))),
        "expected a TLS failure, got {err:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_and_websocket_over_tls() {
    let (server, port) = start(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n[sys]\ninterval_secs = 0\n",
    )
    .await;
    round_trip(Transport::Ws {
        url: format!("ws://127.0.0.1:{port}/mqtt"),
    })
    .await;
    server.shutdown().await;

    let pki = Pki::new();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"wss\"\ncert_file = {:?}\nkey_file = {:?}\n[sys]\ninterval_secs = 0\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let (server, port) = start(&toml).await;
    round_trip(Transport::Wss {
        url: format!("wss://localhost:{port}/mqtt"),
        tls: TlsOptions {
            ca_file: Some(pki.path("ca.pem")),
            ..TlsOptions::default()
        },
    })
    .await;
    server.shutdown().await;
}

/// The broker closes a connection silent for 1.5 × keep-alive; ours stays open for several
/// times that because the client pings.
#[tokio::test]
async fn keep_alive_pings_keep_an_idle_connection_open() {
    let (server, port) = start(TCP).await;
    let mut o = opts("idle", ProtocolVersion::V5);
    o.keep_alive = Duration::from_secs(1);
    let (client, ev) = Client::new(o, tcp(port));
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    if let Ok(e) = events.try_recv() {
        panic!("nothing should happen while idle, got {e:?}");
    }
    within(
        "publish after idling",
        client.publish("k", QoS::AtLeastOnce, false, "x"),
    )
    .await
    .unwrap();
    server.shutdown().await;
}

/// Our broker shortens repeated topics with aliases (we announce a Topic Alias Maximum); the
/// application always sees the full topic.
#[tokio::test]
async fn topic_aliases_from_the_server_are_resolved() {
    let (server, port) = start(TCP).await;
    let (client, ev) = Client::new(opts("alias", ProtocolVersion::V5), tcp(port));
    let mut events = spawn_events(ev);
    within("suback", client.subscribe("alias/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    for i in 0..3 {
        within(
            "publish",
            client.publish("alias/long/topic", QoS::AtLeastOnce, false, vec![i]),
        )
        .await
        .unwrap();
        let m = message(&mut events).await;
        assert_eq!(m.topic, "alias/long/topic", "message {i}");
        assert_eq!(&m.payload[..], &[i]);
    }
    server.shutdown().await;
}

/// The server's packets stop arriving (PINGRESP too): the client gives up after the ping
/// timeout, reports it, and reconnects once the link works again.
#[tokio::test]
async fn missing_pingresp_drops_the_connection_and_it_reconnects() {
    let (server, port) = start(TCP).await;
    let link = Link::default();
    let mut o = opts("pinger", ProtocolVersion::V5);
    o.keep_alive = Duration::from_secs(1);
    o.ping_timeout = Duration::from_millis(500);
    let l = link.clone();
    let (_client, ev) = Client::with_connector(o, move || {
        let l = l.clone();
        async move { l.open(port).await }
    });
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    link.blackhole_down.store(true, Ordering::SeqCst);
    let err = next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(err, Some(ConnectionError::PingTimeout));
    link.cut();
    link.blackhole_down.store(false, Ordering::SeqCst);
    connected(&mut events).await;
    server.shutdown().await;
}

/// The device layer's path: the broker's in-process link (`connect_local`, no socket) with
/// `Client::with_stream`, and `LocalLinker` with `Client::with_connector`, talking to a
/// network client over the same broker.
#[tokio::test]
async fn in_process_link_to_the_broker_with_with_stream_and_with_connector() {
    let (server, port) = start(TCP).await;
    let (local, ev) = Client::with_stream(
        opts("local-stream", ProtocolVersion::V5),
        server.connect_local(),
    );
    let mut local_events = spawn_events(ev);
    assert!(!connected(&mut local_events).await);
    within("suback", local.subscribe("dev/#", QoS::ExactlyOnce))
        .await
        .unwrap();

    let linker = server.local_linker();
    let (linked, ev) = Client::with_connector(opts("local-linker", ProtocolVersion::V3_1_1), {
        move || {
            let l = linker.clone();
            async move { Ok(l.connect()) }
        }
    });
    let mut linked_events = spawn_events(ev);
    connected(&mut linked_events).await;
    within(
        "publish over a linker link",
        linked.publish("dev/a", QoS::ExactlyOnce, false, "l"),
    )
    .await
    .unwrap();
    let m = message(&mut local_events).await;
    assert_eq!((m.topic.as_ref(), m.qos), ("dev/a", QoS::ExactlyOnce));

    let (net, ev) = Client::new(opts("net", ProtocolVersion::V5), tcp(port));
    let _net_events = spawn_events(ev);
    within(
        "publish over TCP",
        net.publish("dev/b", QoS::AtLeastOnce, false, "n"),
    )
    .await
    .unwrap();
    assert_eq!(message(&mut local_events).await.topic, "dev/b");
    local.disconnect().await.unwrap();
    linked.disconnect().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn events_as_a_stream() {
    use futures_util::StreamExt;
    let (server, port) = start(TCP).await;
    let (client, ev) = Client::new(opts("streamer", ProtocolVersion::V5), tcp(port));
    let mut events = Box::pin(ev.into_stream());
    let first = within("first event", events.next()).await;
    assert!(matches!(first, Some(Event::Connected { .. })), "{first:?}");
    let publishing = tokio::spawn({
        let client = client.clone();
        async move {
            client.subscribe("s", QoS::AtMostOnce).await.unwrap();
            client
                .publish("s", QoS::AtMostOnce, false, "x")
                .await
                .unwrap();
        }
    });
    let next = within("the message", events.next()).await;
    assert!(
        matches!(&next, Some(Event::Publish(p)) if p.topic == "s"),
        "{next:?}"
    );
    publishing.await.unwrap();
    let disconnecting = tokio::spawn(async move { client.disconnect().await });
    let rest: Vec<Event> = within("stream end", events.collect()).await;
    assert_eq!(rest, vec![Event::Disconnected { error: None }]);
    disconnecting.await.unwrap().unwrap();
    server.shutdown().await;
}
