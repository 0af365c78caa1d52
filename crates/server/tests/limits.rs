//! Limits that bite, end to end over TCP: per-connection publish rate limits throttle a
//! flooding publisher by back-pressure while other clients are served, and every limit that
//! bites is counted and shown in `$SYS`.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thingmq_server::metrics::Metrics;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Writes QoS 0 PUBLISHes to `topic` as fast as the socket takes them, for `how_long`.
/// Returns how many were written (into the socket buffers; not necessarily read).
fn flood(
    mut s: TcpStream,
    topic: &'static str,
    payload: usize,
    how_long: Duration,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let packet = publish_packet(topic, &vec![b'x'; payload], None);
        let batch: Vec<u8> = packet.repeat(16);
        let mut sent = 0;
        let stop = Instant::now() + how_long;
        while Instant::now() < stop {
            match tokio::time::timeout_at(stop.into(), s.write_all(&batch)).await {
                Ok(Ok(())) => sent += 16,
                _ => break,
            }
        }
        sent
    })
}

/// Counts the PUBLISHes per topic that `s` receives during `how_long`.
async fn count_for(s: &mut TcpStream, how_long: Duration) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    let _ = tokio::time::timeout(how_long, async {
        loop {
            let (topic, _) = read_publish(s).await;
            *counts.entry(topic).or_insert(0) += 1;
        }
    })
    .await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_publisher_is_throttled_to_its_message_rate_while_others_are_served() {
    let (server, addr) = start("[limits]\nmax_publish_rate = 50\n[sys]\ninterval_secs = 0").await;
    let mut sub = raw_connect(addr, "watcher").await;
    raw_subscribe(&mut sub, "#", 0).await;
    let flooder = raw_connect(addr, "flooder").await;
    let connected = Instant::now();
    let flooding = flood(flooder, "flood/x", 16, Duration::from_secs(4));

    // A calm client publishing now and then is not held up by the flood.
    let mut calm = raw_connect(addr, "calm").await;
    let calm_task = tokio::spawn(async move {
        for i in 0..5u8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            calm.write_all(&publish_packet("calm/x", &[i], None))
                .await
                .unwrap();
        }
        calm
    });
    let counts = count_for(&mut sub, Duration::from_secs(3)).await;
    let elapsed = connected.elapsed().as_secs_f64();
    let written = within("the flood to stop", flooding).await.unwrap();
    let _calm = within("the calm client", calm_task).await.unwrap();

    let flooded = counts.get("flood/x").copied().unwrap_or(0);
    // One second's worth at once, then 50/s (+1 for the packet that goes into debt, and a
    // little slack for the timing of the count window).
    let most = 50.0 + 1.0 + 50.0 * elapsed + 5.0;
    assert!(
        (flooded as f64) <= most,
        "{flooded} flood messages in {elapsed:.2} s, at most {most:.0} expected"
    );
    assert!(
        flooded >= 100,
        "the flooder is slowed, not stopped: {flooded}"
    );
    assert!(
        written > flooded * 2,
        "the flooder wrote far more ({written}) than was routed ({flooded}): it was throttled"
    );
    assert_eq!(counts.get("calm/x"), Some(&5), "{counts:?}");
    assert!(Metrics::get(&server.metrics().publish_throttled) > 0);
    assert_eq!(
        Metrics::get(&server.metrics().dropped_queue_full),
        0,
        "throttling is not dropping"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_publisher_is_throttled_to_its_byte_rate() {
    let (server, addr) =
        start("[limits]\nmax_publish_bytes_rate = 20000\n[sys]\ninterval_secs = 0").await;
    let mut sub = raw_connect(addr, "watcher").await;
    raw_subscribe(&mut sub, "big/#", 0).await;
    let flooder = raw_connect(addr, "flooder").await;
    let connected = Instant::now();
    // 1,000-byte payloads: 1,009-byte packets.
    let flooding = flood(flooder, "big/x", 1000, Duration::from_secs(3));
    let counts = count_for(&mut sub, Duration::from_secs(2)).await;
    let elapsed = connected.elapsed().as_secs_f64();
    within("the flood to stop", flooding).await.unwrap();
    let flooded = counts.get("big/x").copied().unwrap_or(0) as f64;
    let most = (20000.0 + 20000.0 * elapsed) / 1009.0 + 3.0;
    assert!(
        flooded <= most,
        "{flooded} in {elapsed:.2} s, at most {most:.0}"
    );
    assert!(flooded >= 20.0, "slowed, not stopped: {flooded}");
    assert!(Metrics::get(&server.metrics().publish_throttled) > 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_client_is_not_timed_out_for_keep_alive_while_we_do_not_read_it() {
    // Keep-alive 1 s (timed out after 1.5 s of silence). A 2,900-byte message against 1,000
    // bytes/s leaves the client ~1.9 s in debt: we read nothing from it meanwhile, so the
    // silence is ours, and it must not be disconnected for it.
    let (server, addr) =
        start("[limits]\nmax_publish_bytes_rate = 1000\n[sys]\ninterval_secs = 0").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut connect = connect_packet("slowpoke");
    // Keep-alive bytes: type, length, 6-byte protocol name, level, flags, then MSB, LSB.
    connect[10] = 0;
    connect[11] = 1;
    s.write_all(&connect).await.unwrap();
    let (first, _) = within("CONNACK", read_packet(&mut s)).await.unwrap();
    assert_eq!(first, 0x20);
    let mut both = publish_packet("q/x", &[0; 2900], Some(1));
    both.extend(publish_packet("q/x", b"small", Some(2)));
    s.write_all(&both).await.unwrap();
    let started = Instant::now();
    for id in 1..=2u16 {
        let (first, body) = within("PUBACK", read_packet(&mut s))
            .await
            .expect("still connected");
        assert_eq!(
            (first, body),
            (0x40, id.to_be_bytes().to_vec()),
            "PUBACK {id}"
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1700), "throttled: {took:?}");
    assert!(Metrics::get(&server.metrics().publish_throttled) >= 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_links_are_not_held_to_the_client_publish_rate() {
    let (server, addr) = start("[limits]\nmax_publish_rate = 5\n[sys]\ninterval_secs = 0").await;
    let mut sub = raw_connect(addr, "watcher").await;
    raw_subscribe(&mut sub, "platform/#", 0).await;
    let mut link = server.connect_local();
    link.write_all(&connect_packet("platform")).await.unwrap();
    let mut connack = [0u8; 4];
    within(
        "CONNACK",
        tokio::io::AsyncReadExt::read_exact(&mut link, &mut connack),
    )
    .await
    .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let batch = publish_packet("platform/x", b"p", None).repeat(100);
    link.write_all(&batch).await.unwrap();
    // 100 messages at 5/s would take 19 s; unthrottled they arrive at once.
    let started = Instant::now();
    for _ in 0..100 {
        within("the link's messages", read_publish(&mut sub)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(Metrics::get(&server.metrics().publish_throttled), 0);
    server.shutdown().await;
}

/// Reads `$SYS/broker/...` messages until each topic in `want` has had its value.
async fn wait_for_sys(s: &mut TcpStream, want: &[(&str, &str)]) {
    let mut seen: HashMap<String, String> = HashMap::new();
    within("the $SYS values", async {
        while !want
            .iter()
            .all(|(t, v)| seen.get(&format!("$SYS/broker/{t}")).map(String::as_str) == Some(*v))
        {
            let (topic, payload) = read_publish(s).await;
            seen.insert(topic, String::from_utf8(payload).unwrap());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_that_bites_is_counted_and_shown_in_sys() {
    let (server, addr) = start(
        "[mqtt]\nmax_packet_size = 200\nmax_client_id_len = 23\n\
         [limits]\nconnect_timeout_ms = 300\nmax_connections = 3\n[sys]\ninterval_secs = 1",
    )
    .await;
    let m = server.metrics();
    let mut sys = raw_connect(addr, "sys-watcher").await;

    // Connect timeout: a socket that sends nothing.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    within(
        "the silent socket to be closed",
        closed_by_server(&mut silent),
    )
    .await;
    assert_eq!(Metrics::get(&m.connect_timeouts), 1);

    // Packet too large: a 300-byte PUBLISH on an accepted connection.
    let mut big = raw_connect(addr, "big").await;
    big.write_all(&publish_packet("t", &[0; 300], None))
        .await
        .unwrap();
    within(
        "the too-large sender to be closed",
        closed_by_server(&mut big),
    )
    .await;
    assert_eq!(Metrics::get(&m.packets_too_large), 1);

    // A CONNECT the broker refuses for what it asks: a client id over the limit.
    let mut long = TcpStream::connect(addr).await.unwrap();
    long.write_all(&connect_packet(&"x".repeat(30)))
        .await
        .unwrap();
    let (first, body) = within("CONNACK", read_packet(&mut long)).await.unwrap();
    assert_eq!((first, body), (0x20, vec![0, 2]), "identifier rejected");
    assert_eq!(Metrics::get(&m.connects_refused), 1);
    drop(long);

    // Max connections: the watcher and two more are the limit; a fourth is closed at once.
    // The closed connections above give their slots back when their tasks end, which may be
    // a moment after the client saw the close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _a = raw_connect(addr, "a").await;
    let _b = raw_connect(addr, "b").await;
    // A refused connection may be accepted by the kernel before the broker closes it.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    within(
        "the fourth connection to be closed",
        closed_by_server(&mut fourth),
    )
    .await;
    assert_eq!(Metrics::get(&m.refused_connections), 1);

    raw_subscribe(&mut sys, "$SYS/broker/#", 0).await;
    wait_for_sys(
        &mut sys,
        &[
            ("connections/timed_out", "1"),
            ("packets/too_large", "1"),
            ("connections/connect_refused", "1"),
            ("connections/refused", "1"),
            ("publish/throttled", "0"),
            ("messages/dropped/queue_full", "0"),
        ],
    )
    .await;
    assert_eq!(
        m.protocol_errors.load(Ordering::Relaxed),
        1,
        "the too-large packet"
    );
    server.shutdown().await;
}
