//! Hostile or broken clients over TCP: a slowloris CONNECT, a thousand half-open
//! connections, random bytes before and after CONNECT. The broker closes them (by its
//! connect timeout or as protocol errors) and keeps serving others.

mod common;

use common::*;
use std::time::{Duration, Instant};
use thingmq_server::metrics::Metrics;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connect_trickling_one_byte_at_a_time_is_closed_by_the_connect_timeout() {
    let (server, addr) =
        start("[limits]\nconnect_timeout_ms = 1000\n[sys]\ninterval_secs = 0").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let connect = connect_packet("slowloris-client-with-a-long-id");
    // One byte per 100 ms: the whole CONNECT would take > 3 s. The timeout runs from accept,
    // so trickling bytes does not extend it.
    let mut closed_after = None;
    for &byte in &connect {
        if s.write_all(&[byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => panic!("the broker answered a partial CONNECT"),
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("closed before the CONNECT was complete");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}"
    );
    assert_eq!(Metrics::get(&server.metrics().connect_timeouts), 1);
    assert_eq!(server.connections(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_open_connections_do_not_keep_a_normal_client_out() {
    let (server, addr) =
        start("[limits]\nconnect_timeout_ms = 4000\n[sys]\ninterval_secs = 0").await;
    let mut half_open = Vec::with_capacity(1000);
    for _ in 0..1000 {
        half_open.push(
            within("TCP connect", TcpStream::connect(addr))
                .await
                .unwrap(),
        );
    }
    let opened = Instant::now();

    // A normal client connects, subscribes and gets its own message, all while the thousand
    // sockets are still waiting for the broker's timeout.
    let mut client = raw_connect(addr, "normal").await;
    raw_subscribe(&mut client, "normal/t", 0).await;
    client
        .write_all(&publish_packet("normal/t", b"still served", None))
        .await
        .unwrap();
    let (topic, payload) = within("own message", read_publish(&mut client)).await;
    assert_eq!(
        (topic.as_str(), &payload[..]),
        ("normal/t", &b"still served"[..])
    );
    assert!(
        opened.elapsed() < Duration::from_millis(3500),
        "served before the half-open ones timed out ({:?})",
        opened.elapsed()
    );
    assert_eq!(server.connections(), 1);

    // Then the broker closes every one of them (and only them).
    within("the half-open connections to be closed", async {
        for s in &mut half_open {
            closed_by_server(s).await;
        }
    })
    .await;
    assert_eq!(Metrics::get(&server.metrics().connect_timeouts), 1000);
    client
        .write_all(&publish_packet("normal/t", b"after", None))
        .await
        .unwrap();
    let (_, payload) = within("message after the timeouts", read_publish(&mut client)).await;
    assert_eq!(payload, b"after");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_before_and_after_connect_close_only_their_own_connection() {
    use rand::{Rng, SeedableRng};
    let (server, addr) =
        start("[limits]\nconnect_timeout_ms = 2000\n[sys]\ninterval_secs = 0").await;
    let mut client = raw_connect(addr, "bystander").await;
    raw_subscribe(&mut client, "calm/t", 0).await;
    // A fixed seed: a failure can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7417_6d71);
    for i in 0..100 {
        let mut junk = vec![0u8; rng.gen_range(1..2048)];
        rng.fill(&mut junk[..]);
        let mut s = if i % 2 == 0 {
            // Garbage instead of CONNECT.
            TcpStream::connect(addr).await.unwrap()
        } else {
            // Garbage after a good CONNECT with a 1 s keep-alive: junk that looks like the
            // start of a long packet is closed by the keep-alive (1.5 s), the rest at once.
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut connect = connect_packet(&format!("junk-{i}"));
            connect[10] = 0;
            connect[11] = 1;
            s.write_all(&connect).await.unwrap();
            let (first, _) = within("CONNACK", read_packet(&mut s)).await.unwrap();
            assert_eq!(first, 0x20);
            s
        };
        // The broker may close before reading everything: a reset is fine.
        let _ = s.write_all(&junk).await;
        within("the junk sender to be closed", closed_by_server(&mut s)).await;
        if i % 10 == 0 {
            client
                .write_all(&publish_packet("calm/t", b"still here", None))
                .await
                .unwrap();
            let (_, payload) =
                within("a message between the junk", read_publish(&mut client)).await;
            assert_eq!(payload, b"still here");
        }
    }
    assert_eq!(server.connections(), 1, "only the bystander is left");
    server.shutdown().await;
}
