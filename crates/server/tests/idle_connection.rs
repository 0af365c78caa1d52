//! An idle connection keeps no read or write buffer and no future per event source (see
//! `session_task.rs`). These tests pin down what that must not change: the connection stays
//! open and readable while idle, packets split across reads or larger than one read are
//! reassembled, control messages still reach the task, and a protocol error is answered with
//! its DISCONNECT before the close.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a connection is left idle: longer than any wake-up right after CONNACK.
const IDLE: Duration = Duration::from_millis(300);

/// The server has neither sent anything nor closed the connection within `d`.
async fn still_open_and_quiet(s: &mut TcpStream, d: Duration) {
    match tokio::time::timeout(d, read_packet(s)).await {
        Err(_) => {}
        Ok(Ok((first, _))) => panic!("unexpected packet 0x{first:02x} on an idle connection"),
        Ok(Err(e)) => panic!("idle connection closed by the server: {e}"),
    }
}

fn v5_connect(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

#[tokio::test]
async fn an_idle_connection_stays_open_and_answers_after_its_buffers_were_released() {
    let (server, addr) = start("").await;
    let mut s = raw_connect(addr, "idle").await;
    still_open_and_quiet(&mut s, IDLE).await;
    // Admin requests go through the session's control queue; listing clones its handle.
    let admin = server.admin();
    assert_eq!(admin.clients().len(), 1);
    let detail = within("inspect", admin.client("idle")).await.unwrap();
    assert!(detail.is_some(), "the session task answers Inspect");
    still_open_and_quiet(&mut s, IDLE).await;
    s.write_all(&[0xc0, 0]).await.unwrap(); // PINGREQ
    let (first, body) = within("PINGRESP", read_packet(&mut s)).await.unwrap();
    assert_eq!((first, body.len()), (0xd0, 0), "PINGRESP");
}

#[tokio::test]
async fn a_packet_split_across_reads_and_one_larger_than_a_read_are_delivered() {
    let (_server, addr) = start("").await;
    let mut sub = raw_connect(addr, "sub").await;
    raw_subscribe(&mut sub, "split/#", 0).await;
    let mut publisher = raw_connect(addr, "pub").await;

    let small = publish_packet("split/a", b"hello", None);
    let (head, tail) = small.split_at(4);
    publisher.write_all(head).await.unwrap();
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.write_all(tail).await.unwrap();
    let (topic, payload) = within("split publish", read_publish(&mut sub)).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("split/a", &b"hello"[..])
    );

    let big_payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    publisher
        .write_all(&publish_packet("split/b", &big_payload, None))
        .await
        .unwrap();
    let (topic, payload) = within("large publish", read_publish(&mut sub)).await;
    assert_eq!(topic, "split/b");
    assert!(payload == big_payload, "large payload intact");
}

#[tokio::test]
async fn kick_reaches_an_idle_session_through_its_control_queue() {
    let (server, addr) = start("").await;
    let mut s = raw_connect(addr, "kicked").await;
    still_open_and_quiet(&mut s, IDLE).await;
    assert!(within("kick", server.admin().kick("kicked")).await.unwrap());
    within("close after kick", closed_by_server(&mut s)).await;
}

/// The server side of the interop test `test_topic_alias_above_maximum_is_a_protocol_error`,
/// without paho: the server leaves a fresh, idle connection open, and answers the bad alias
/// with DISCONNECT 0x94 before it closes. (That test's CI failures, "publish failed locally:
/// 4", were a race inside paho's publish(), see `publish_expecting_disconnect` in
/// tests/interop/pahoclient.py; this pins down that the server is not the one at fault.)
#[tokio::test]
async fn topic_alias_above_maximum_after_an_idle_wait_gets_disconnect_0x94() {
    let (_server, addr) = start("[mqtt]\ntopic_alias_maximum = 2").await;
    let mut s = within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(&v5_connect("alias")).await.unwrap();
    let (first, body) = within("CONNACK", read_packet(&mut s)).await.unwrap();
    assert_eq!(first, 0x20);
    assert_eq!(body[1], 0, "CONNACK accepted");
    still_open_and_quiet(&mut s, IDLE).await;
    // PUBLISH QoS 0 to "ta/x" with Topic Alias (0x23) = 3, above the maximum of 2.
    let mut body = vec![0, 4, b't', b'a', b'/', b'x', 3, 0x23, 0, 3, b'x'];
    let mut publish = vec![0x30, body.len() as u8];
    publish.append(&mut body);
    s.write_all(&publish).await.unwrap();
    let (first, body) = within("DISCONNECT", read_packet(&mut s)).await.unwrap();
    assert_eq!(first, 0xe0, "DISCONNECT");
    assert_eq!(
        body.first(),
        Some(&0x94),
        "reason Topic Alias invalid [MQTT-3.3.2-9]"
    );
    within("close after DISCONNECT", closed_by_server(&mut s)).await;
}

/// A subscriber that stops reading and sending while messages keep coming: its socket fills,
/// the broker's writes to it stall and its session stops taking messages from its inbox.
/// Its keep-alive deadline must still close it (the timer wakes the session through the
/// waker its inbox holds, which is there even while the session takes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_closes_a_subscriber_whose_socket_is_full() {
    let (server, addr) = start("").await;
    let mut stuck = within("TCP connect", TcpStream::connect(addr))
        .await
        .expect("connects");
    let mut connect = connect_packet("stuck");
    // Keep-alive (bytes 8 and 9 of the body, after the 2-byte fixed header): 1 second.
    connect[10..12].copy_from_slice(&[0, 1]);
    stuck.write_all(&connect).await.unwrap();
    let connected = std::time::Instant::now();
    let (first, _) = within("CONNACK", read_packet(&mut stuck)).await.unwrap();
    assert_eq!(first, 0x20);
    raw_subscribe(&mut stuck, "flood/#", 0).await;

    let mut publisher = raw_connect(addr, "flooder").await;
    let batch = publish_packet("flood/x", &[b'x'; 16 * 1024], None).repeat(64);
    // 32 MB: far more than the sockets' buffers and the session's queue hold.
    for _ in 0..32 {
        publisher.write_all(&batch).await.unwrap();
    }
    // The flooder stays; the stuck subscriber goes at 1.5 s.
    within("the keep-alive to close the stuck subscriber", async {
        while server.connections() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        connected.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}, before one and a half keep-alives",
        connected.elapsed()
    );
    within(
        "the stuck subscriber's socket to end",
        closed_by_server(&mut stuck),
    )
    .await;
    server.shutdown().await;
}
