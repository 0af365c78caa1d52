//! The client against a real Mosquitto broker (Debian package `mosquitto`, installed by
//! `scripts/test`), started per test on a free 127.0.0.1 port and stopped by PID on drop:
//! QoS 0/1/2 both ways on v3.1.1 and v5, reconnect with session resumption, and TLS.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thingmq_client::{
    Client, Event, MqttOptions, ProtocolVersion, QoS, Reconnect, TlsOptions, Transport,
};

/// A running mosquitto; killed (by its PID, via `Child`) when dropped, even if the test fails.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_bin() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(p).is_file() {
            return p.to_owned();
        }
    }
    panic!(
        "the mosquitto broker is not installed (Debian package `mosquitto`); \
         ./scripts/test installs it"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mosquitto() -> Mosquitto {
    start_mosquitto_with("")
}

/// Starts mosquitto with one listener; `listener_extra` is appended to its section (TLS
/// files). No WebSocket test here: this Debian build's libwebsockets listener does not start
/// in the test container ("Unable to start any listening sockets"); WS is covered against
/// our own broker in tests/server.rs.
fn start_mosquitto_with(listener_extra: &str) -> Mosquitto {
    let bin = mosquitto_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\nlistener {port} 127.0.0.1\n{listener_extra}\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto starts");
    let m = Mosquitto {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m
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

fn tcp(port: u16) -> Transport {
    Transport::Tcp {
        host: "127.0.0.1".into(),
        port,
    }
}

async fn qos_both_ways(version: ProtocolVersion) {
    let broker = start_mosquitto();
    let (sub, ev) = Client::new(opts("sub", version), tcp(broker.port));
    let mut sub_events = spawn_events(ev);
    connected(&mut sub_events).await;
    let (publ, ev) = Client::new(opts("pub", version), tcp(broker.port));
    let mut pub_events = spawn_events(ev);
    connected(&mut pub_events).await;
    within("suback", sub.subscribe("q/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("q/{}", qos as u8);
        within("publish", publ.publish(topic.clone(), qos, false, "m"))
            .await
            .unwrap();
        let m = message(&mut sub_events).await;
        assert_eq!((m.topic.as_ref(), m.qos), (topic.as_str(), qos));
    }
    within("disconnect", sub.disconnect()).await.unwrap();
    within("disconnect", publ.disconnect()).await.unwrap();
}

#[tokio::test]
async fn qos_0_1_2_both_directions_with_mosquitto_v5() {
    qos_both_ways(ProtocolVersion::V5).await;
}

#[tokio::test]
async fn qos_0_1_2_both_directions_with_mosquitto_v3_1_1() {
    qos_both_ways(ProtocolVersion::V3_1_1).await;
}

/// As against our broker: a lost PUBACK, a cut link, and a resumed session in which the
/// PUBLISH is resent (DUP) and completed; messages queued while away arrive.
#[tokio::test]
async fn reconnect_resumes_the_session_with_mosquitto() {
    let broker = start_mosquitto();
    let port = broker.port;
    let link = Link::default();
    let mut o = opts("resumer", ProtocolVersion::V3_1_1);
    o.clean_start = false;
    let l = link.clone();
    let (client, ev) = Client::with_connector(o, move || {
        let l = l.clone();
        async move { l.open(port).await }
    });
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    within("suback", client.subscribe("resume/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    link.blackhole_down.store(true, Ordering::SeqCst);
    let publishing = tokio::spawn({
        let c = client.clone();
        async move {
            c.publish("resume/self", QoS::ExactlyOnce, false, "again")
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!publishing.is_finished(), "PUBREC should have been lost");
    link.cut();
    link.blackhole_down.store(false, Ordering::SeqCst);
    next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;
    let (other, ev) = Client::new(opts("other", ProtocolVersion::V5), tcp(port));
    let _other_events = spawn_events(ev);
    within(
        "publish while away",
        other.publish("resume/x", QoS::AtLeastOnce, false, "queued"),
    )
    .await
    .unwrap();
    assert!(connected(&mut events).await, "session must be present");
    within("resent publish completes", publishing)
        .await
        .unwrap()
        .unwrap();
    let mut topics = vec![];
    while !(topics.iter().any(|t| t == "resume/x") && topics.iter().any(|t| t == "resume/self")) {
        topics.push(message(&mut events).await.topic.to_string());
    }
    // Exactly once: our QoS 2 message was not delivered twice despite the resend.
    assert_eq!(
        topics.iter().filter(|t| *t == "resume/self").count(),
        1,
        "{topics:?}"
    );
}

async fn round_trip(transport: Transport) {
    let (client, ev) = Client::new(opts("rt", ProtocolVersion::V5), transport);
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    within("suback", client.subscribe("rt/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        within("publish", client.publish("rt/1", qos, false, "m"))
            .await
            .unwrap();
        assert_eq!(message(&mut events).await.qos, qos);
    }
    within("disconnect", client.disconnect()).await.unwrap();
}

#[tokio::test]
async fn tls_with_mosquitto() {
    let pki = Pki::new();
    let broker = start_mosquitto_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.path("ca.pem").display(),
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    ));
    round_trip(Transport::Tls {
        host: "localhost".into(),
        port: broker.port,
        tls: TlsOptions {
            ca_file: Some(pki.path("ca.pem")),
            ..TlsOptions::default()
        },
    })
    .await;
}

/// PUBCOMP is lost, so our QoS 2 publish waits in its release stage; after a cut and a
/// resumed session the client resends PUBREL (not the PUBLISH) and the publish completes —
/// and the subscriber sees the message once.
#[tokio::test]
async fn lost_pubcomp_is_recovered_by_resending_pubrel_with_mosquitto() {
    let broker = start_mosquitto();
    let port = broker.port;
    let (watcher, ev) = Client::new(opts("watcher", ProtocolVersion::V5), tcp(port));
    let mut watched = spawn_events(ev);
    within("suback", watcher.subscribe("rel/#", QoS::ExactlyOnce))
        .await
        .unwrap();

    let link = Link::default();
    let mut o = opts("releaser", ProtocolVersion::V3_1_1);
    o.clean_start = false;
    let l = link.clone();
    let (client, ev) = Client::with_connector(o, move || {
        let l = l.clone();
        async move { l.open(port).await }
    });
    let mut events = spawn_events(ev);
    connected(&mut events).await;
    link.drop_down_kinds.store(1 << 7, Ordering::SeqCst); // PUBCOMP
    let publishing = tokio::spawn({
        let c = client.clone();
        async move { c.publish("rel/1", QoS::ExactlyOnce, false, "once").await }
    });
    // The broker has the message (PUBREC came back), so the subscriber gets it now.
    assert_eq!(message(&mut watched).await.topic, "rel/1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!publishing.is_finished(), "PUBCOMP should have been lost");
    link.cut();
    link.drop_down_kinds.store(0, Ordering::SeqCst);
    next_matching(&mut events, "Disconnected", |e| match e {
        Event::Disconnected { error } => Some(error),
        _ => None,
    })
    .await;
    assert!(connected(&mut events).await, "session must be present");
    within("publish completes after PUBREL resend", publishing)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(e) = watched.try_recv() {
        assert!(!matches!(e, Event::Publish(_)), "delivered twice: {e:?}");
    }
}
