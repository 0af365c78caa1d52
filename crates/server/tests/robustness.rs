//! Hostile or broken clients over TCP: a slowloris CONNECT, a thousand half-open
//! connections. The broker closes them by its connect timeout and keeps serving others.

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
