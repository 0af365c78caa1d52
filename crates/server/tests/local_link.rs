//! The in-process link (`ServerHandle::connect_local`): the platform's own components speak
//! MQTT to the broker over a byte stream with no socket, past authentication and the ACL,
//! while network clients stay subject to both.

use std::future::Future;
use std::time::Duration;
use thingmq_server::{Config, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 60, no username, client id `id` (2 bytes).
fn connect(id: &[u8; 2]) -> Vec<u8> {
    let mut p = vec![
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02,
    ];
    p.extend_from_slice(id);
    p
}
/// CONNACK: no session present, accepted.
const CONNACK_OK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
/// CONNACK: refused, not authorized (3.1.1 return code 5).
const CONNACK_NOT_AUTHORIZED: &[u8] = &[0x20, 0x02, 0x00, 0x05];
/// SUBSCRIBE packet id 1 to "a/b" at QoS 0.
const SUBSCRIBE: &[u8] = &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x00];
/// SUBACK packet id 1, granted QoS 0 (an ACL refusal would be 0x80).
const SUBACK: &[u8] = &[0x90, 0x03, 0x00, 0x01, 0x00];
/// PUBLISH QoS 0 to "a/b" with payload "hi".
const PUBLISH: &[u8] = &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];

async fn expect(stream: &mut (impl AsyncRead + Unpin), want: &[u8], what: &str) {
    let mut got = vec![0; want.len()];
    within(what, stream.read_exact(&mut got))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got, want, "{what}");
}

async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    stream.write_all(bytes).await.expect("link accepts bytes");
}

#[tokio::test]
async fn local_link_bypasses_authentication_and_acl_that_network_clients_face() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Grants nothing on a/b to anyone.
    std::fs::write(&acl, "user somebody\ntopic read other/#\n").unwrap();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\nacl_file = {:?}\n[sys]\ninterval_secs = 0\n",
        acl.display().to_string()
    );
    let server = within(
        "server start",
        Server::start(Config::from_toml(&toml).unwrap()),
    )
    .await
    .expect("server starts");

    // A network client without credentials is refused.
    let mut tcp = tokio::net::TcpStream::connect(server.local_addrs()[0])
        .await
        .unwrap();
    send(&mut tcp, &connect(b"n1")).await;
    expect(
        &mut tcp,
        CONNACK_NOT_AUTHORIZED,
        "refusal of the network client",
    )
    .await;

    // Two in-process links: one subscribes, the other publishes.
    let mut sub = server.connect_local();
    send(&mut sub, &connect(b"s1")).await;
    expect(&mut sub, CONNACK_OK, "CONNACK on the subscribing link").await;
    send(&mut sub, SUBSCRIBE).await;
    expect(&mut sub, SUBACK, "SUBACK granting QoS 0 despite the ACL").await;

    let mut publisher = server.connect_local();
    send(&mut publisher, &connect(b"p1")).await;
    expect(&mut publisher, CONNACK_OK, "CONNACK on the publishing link").await;
    send(&mut publisher, PUBLISH).await;
    expect(&mut sub, PUBLISH, "the message on the subscribing link").await;

    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn local_link_reads_end_of_stream_when_the_server_shuts_down() {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .unwrap();
    let server = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let mut link = server.connect_local();
    send(&mut link, &connect(b"l1")).await;
    expect(&mut link, CONNACK_OK, "CONNACK").await;
    within("shutdown", server.shutdown()).await;
    let mut rest = Vec::new();
    within("end of stream", link.read_to_end(&mut rest))
        .await
        .expect("the link closes cleanly");
    // A 3.1.1 client gets no DISCONNECT from the server; the stream just ends.
    assert!(rest.is_empty(), "unexpected bytes after shutdown: {rest:?}");
}

/// SUBSCRIBE packet id 2 to "$SYS/brokers/clients/+" at QoS 0.
const SUBSCRIBE_EVENTS: &[u8] = &[
    0x82, 0x1b, 0x00, 0x02, 0x00, 0x16, b'$', b'S', b'Y', b'S', b'/', b'b', b'r', b'o', b'k', b'e',
    b'r', b's', b'/', b'c', b'l', b'i', b'e', b'n', b't', b's', b'/', b'+', 0x00,
];

/// Reads one QoS 0 PUBLISH and returns (topic, payload).
async fn read_publish(stream: &mut (impl AsyncRead + Unpin)) -> (String, Vec<u8>) {
    let mut byte = [0u8; 1];
    within("PUBLISH header", stream.read_exact(&mut byte))
        .await
        .unwrap();
    assert_eq!(byte[0], 0x30, "a QoS 0 PUBLISH");
    // Remaining length: a varint of 7-bit groups, least significant first.
    let (mut len, mut shift) = (0usize, 0);
    loop {
        within("remaining length", stream.read_exact(&mut byte))
            .await
            .unwrap();
        len |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    within("PUBLISH body", stream.read_exact(&mut body))
        .await
        .unwrap();
    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
    (topic, body[2 + topic_len..].to_vec())
}

#[tokio::test]
async fn client_connections_and_disconnections_are_announced_but_local_links_are_not() {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .unwrap();
    let server = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let mut events = server.connect_local();
    send(&mut events, &connect(b"ev")).await;
    expect(&mut events, CONNACK_OK, "CONNACK").await;
    send(&mut events, SUBSCRIBE_EVENTS).await;
    expect(&mut events, &[0x90, 0x03, 0x00, 0x02, 0x00], "SUBACK").await;
    // Another local link: not announced.
    let mut quiet = server.connect_local();
    send(&mut quiet, &connect(b"q1")).await;
    expect(&mut quiet, CONNACK_OK, "CONNACK").await;

    let mut tcp = tokio::net::TcpStream::connect(server.local_addrs()[0])
        .await
        .unwrap();
    send(&mut tcp, &connect(b"t1")).await;
    expect(&mut tcp, CONNACK_OK, "CONNACK of the network client").await;
    let (topic, payload) = read_publish(&mut events).await;
    assert_eq!(topic, "$SYS/brokers/clients/connected");
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["clientid"], "t1");
    assert_eq!(event["protocol"], "3.1.1");
    assert!(event["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    drop(tcp);
    let (topic, payload) = read_publish(&mut events).await;
    assert_eq!(topic, "$SYS/brokers/clients/disconnected");
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["clientid"], "t1");
    assert_eq!(event["reason"], "connection_lost", "{event}");

    // A client that says DISCONNECT leaves normally.
    let mut polite = tokio::net::TcpStream::connect(server.local_addrs()[0])
        .await
        .unwrap();
    send(&mut polite, &connect(b"t2")).await;
    expect(&mut polite, CONNACK_OK, "CONNACK of the second client").await;
    let (topic, _) = read_publish(&mut events).await;
    assert_eq!(topic, "$SYS/brokers/clients/connected");
    send(&mut polite, &[0xE0, 0x00]).await;
    let (topic, payload) = read_publish(&mut events).await;
    assert_eq!(topic, "$SYS/brokers/clients/disconnected");
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        (event["clientid"].as_str(), event["reason"].as_str()),
        (Some("t2"), Some("normal"))
    );
    within("shutdown", server.shutdown()).await;
}
