//! Hibernation (`limits.hibernate_after_ms`): an idle session stops being a task, and
//! everything that can happen to a session must still reach it — its client's packets and
//! hang-up, messages routed to it, its keep-alive deadline, a takeover, an administrator,
//! and server shutdown. Each test lets the session fall asleep first (the
//! `sessions_hibernating` gauge says so), then makes one of those happen.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thingmq_server::ServerHandle;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONFIG: &str = "[limits]\nhibernate_after_ms = 20\n[sys]\ninterval_secs = 0\n";

/// Waits until `n` sessions hibernate.
async fn hibernating(server: &ServerHandle, n: u64) {
    within(&format!("{n} sessions hibernating"), async {
        while server
            .metrics()
            .sessions_hibernating
            .load(Ordering::Relaxed)
            != n
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// CONNECT, MQTT 3.1.1, with the given clean-session flag and keep-alive.
fn connect_with(client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        if clean { 0x02 } else { 0 },
    ];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

async fn connect_raw(addr: std::net::SocketAddr, packet: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(packet).await.unwrap();
    let (first, body) = within("CONNACK", read_packet(&mut s)).await.unwrap();
    assert_eq!(first, 0x20);
    (s, body)
}

#[tokio::test]
async fn a_hibernating_subscriber_gets_what_is_published_and_a_hibernating_publisher_is_read() {
    let (server, addr) = start(CONFIG).await;
    let mut sub = raw_connect(addr, "sub").await;
    raw_subscribe(&mut sub, "t/#", 0).await;
    let mut publisher = raw_connect(addr, "pub").await;
    hibernating(&server, 2).await;
    for i in 0..3u8 {
        publisher
            .write_all(&publish_packet("t/x", &[i], None))
            .await
            .unwrap();
        let (topic, payload) = within("the publish", read_publish(&mut sub)).await;
        assert_eq!((topic.as_str(), payload.as_slice()), ("t/x", &[i][..]));
        // Both fall asleep again between messages.
        hibernating(&server, 2).await;
    }
    // PINGREQ to a sleeping session is answered.
    sub.write_all(&[0xC0, 0]).await.unwrap();
    let (first, _) = within("PINGRESP", read_packet(&mut sub)).await.unwrap();
    assert_eq!(first, 0xD0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_hibernating_goes_offline_and_its_will_is_sent() {
    let (server, addr) = start(CONFIG).await;
    let mut watcher = raw_connect(addr, "watcher").await;
    raw_subscribe(&mut watcher, "wills/#", 0).await;
    // CONNECT with a will (QoS 0) on wills/gone.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60];
    for field in [&b"gone"[..], b"wills/gone", b"bye"] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field);
    }
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    let (gone, _) = connect_raw(addr, &connect).await;
    hibernating(&server, 2).await;
    drop(gone);
    let (topic, payload) = within("the will", read_publish(&mut watcher)).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("wills/gone", &b"bye"[..])
    );
    within("the connection count to drop", async {
        while server.metrics().connections.load(Ordering::Relaxed) != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn keep_alive_is_enforced_while_hibernating() {
    let (server, addr) = start(CONFIG).await;
    let (mut silent, _) = connect_raw(addr, &connect_with("silent", true, 1)).await;
    hibernating(&server, 1).await;
    let started = std::time::Instant::now();
    within("the keep-alive close", closed_by_server(&mut silent)).await;
    // One and a half times the keep-alive, from the CONNECT.
    assert!(started.elapsed() >= Duration::from_millis(1_300));
    server.shutdown().await;
}

#[tokio::test]
async fn a_takeover_and_an_administrator_reach_a_hibernating_session() {
    let (server, addr) = start(CONFIG).await;
    let mut first = raw_connect(addr, "dev").await;
    hibernating(&server, 1).await;
    let mut second = raw_connect(addr, "dev").await;
    within(
        "the taken-over connection to close",
        closed_by_server(&mut first),
    )
    .await;
    hibernating(&server, 1).await;
    let detail = within("admin inspect", server.admin().client("dev")).await;
    assert!(detail.unwrap().is_some(), "inspect is answered");
    hibernating(&server, 1).await;
    let kicked = within("admin kick", server.admin().kick("dev")).await;
    assert!(kicked.unwrap(), "the client was connected");
    within(
        "the kicked connection to close",
        closed_by_server(&mut second),
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_offline_session_hibernates_and_its_queued_messages_are_delivered_on_reconnect() {
    let (server, addr) = start(CONFIG).await;
    let (mut s, _) = connect_raw(addr, &connect_with("keeper", false, 60)).await;
    raw_subscribe(&mut s, "q/#", 1).await;
    s.write_all(&[0xE0, 0]).await.unwrap(); // DISCONNECT
    closed_by_server(&mut s).await;
    hibernating(&server, 1).await;
    let mut publisher = raw_connect(addr, "pub").await;
    publisher
        .write_all(&publish_packet("q/1", b"kept", Some(7)))
        .await
        .unwrap();
    let (first, _) = within("PUBACK", read_packet(&mut publisher)).await.unwrap();
    assert_eq!(first, 0x40);
    hibernating(&server, 2).await;
    let (mut back, connack) = connect_raw(addr, &connect_with("keeper", false, 60)).await;
    assert_eq!(connack, [1, 0], "session present");
    let (first, body) = within("the queued message", read_packet(&mut back))
        .await
        .unwrap();
    assert_eq!(first & 0xF6, 0x32, "QoS 1 PUBLISH");
    assert!(body.ends_with(b"kept"));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_hibernating_sessions() {
    let (server, addr) = start(CONFIG).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(raw_connect(addr, &format!("c{i}")).await);
    }
    hibernating(&server, 5).await;
    let started = std::time::Instant::now();
    within("shutdown", server.shutdown()).await;
    // Every session task ended (shutdown waits up to 5 s for those that do not).
    assert!(started.elapsed() < Duration::from_secs(4));
    for c in &mut clients {
        within("the close at shutdown", closed_by_server(c)).await;
    }
}

#[tokio::test]
async fn a_session_that_ends_while_awake_finishes_instead_of_hibernating() {
    // Hibernating at once whenever it may, as soon as its connection is gone.
    let (server, addr) =
        start("[limits]\nhibernate_after_ms = 1\n[sys]\ninterval_secs = 0\n").await;
    let (mut s, _) = connect_raw(addr, &connect_with("partial", true, 1)).await;
    // Half a packet keeps the connected session awake (it cannot hibernate mid-packet) until
    // the keep-alive closes it and its clean session ends.
    s.write_all(&[0x30]).await.unwrap();
    within("the keep-alive close", closed_by_server(&mut s)).await;
    within("the session to finish", async {
        while server.metrics().sessions.load(Ordering::Relaxed) != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        server
            .metrics()
            .sessions_hibernating
            .load(Ordering::Relaxed),
        0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_while_sessions_keep_falling_asleep_and_waking() {
    // Every pause below is longer than `hibernate_after_ms`: publishers and subscribers fall
    // asleep and are woken over and over, from both sides at once.
    let (server, addr) =
        start("[limits]\nhibernate_after_ms = 1\n[sys]\ninterval_secs = 0\n").await;
    const SUBS: usize = 8;
    const PUBS: usize = 8;
    const EACH: usize = 40;
    let mut subs = Vec::new();
    for i in 0..SUBS {
        let mut s = raw_connect(addr, &format!("st-sub-{i}")).await;
        raw_subscribe(&mut s, "st/#", 0).await;
        subs.push(s);
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut next = [0u8; PUBS];
                for _ in 0..PUBS * EACH {
                    let (topic, payload) = within("a publish", read_publish(&mut s)).await;
                    let p: usize = topic.trim_start_matches("st/").parse().unwrap();
                    // In order per publisher, none missing.
                    assert_eq!(payload, [next[p]], "from publisher {p}");
                    next[p] += 1;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..PUBS)
        .map(|p| {
            tokio::spawn(async move {
                let mut s = raw_connect(addr, &format!("st-pub-{p}")).await;
                for n in 0..EACH {
                    s.write_all(&publish_packet(&format!("st/{p}"), &[n as u8], None))
                        .await
                        .unwrap();
                    let pause = (p * 7 + n * 13) % 5 + 1;
                    tokio::time::sleep(Duration::from_millis(pause as u64)).await;
                }
                s
            })
        })
        .collect();
    let mut keep = Vec::new();
    for w in writers {
        keep.push(w.await.unwrap());
    }
    for r in readers {
        r.await.unwrap();
    }
    // The pauses did put them to sleep, many times.
    let slept = server.metrics().hibernations_total.load(Ordering::Relaxed);
    assert!(
        slept >= (PUBS * EACH / 4) as u64,
        "only {slept} hibernations"
    );
    server.shutdown().await;
}
