//! Helpers shared by the limit and robustness tests: a bounded wait, a server on port 0, and
//! a raw MQTT 3.1.1 client that writes hand-built packets (so a test controls exactly what is
//! sent and when — a trickle, a flood, a client that never reads).

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use thingmq_server::{Config, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait: generous, for a loaded two-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` when it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Starts a server with one TCP listener on 127.0.0.1:0 and `extra` config text. The server
/// lives on the test's runtime: a failing test drops it with the runtime.
pub async fn start(extra: &str) -> (ServerHandle, SocketAddr) {
    let toml = format!("[[listeners]]\nbind = \"127.0.0.1:0\"\n{extra}\n");
    let config = Config::from_toml(&toml).expect("test config is valid");
    let handle = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let addr = handle.local_addrs()[0];
    (handle, addr)
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    string(client_id.as_bytes(), &mut body);
    packet(0x10, &body)
}

/// PUBLISH QoS 0, or QoS 1 with `id`.
pub fn publish_packet(topic: &str, payload: &[u8], qos1_id: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if let Some(id) = qos1_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(if qos1_id.is_some() { 0x32 } else { 0x30 }, &body)
}

/// SUBSCRIBE to one filter with packet id 1.
pub fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    string(filter.as_bytes(), &mut body);
    body.push(qos);
    packet(0x82, &body)
}

/// Connects a raw client, sends CONNECT and checks the CONNACK (accepted).
pub async fn raw_connect(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = within("TCP connect", TcpStream::connect(addr))
        .await
        .expect("connects");
    s.write_all(&connect_packet(client_id)).await.unwrap();
    let mut connack = [0u8; 4];
    within("CONNACK", s.read_exact(&mut connack))
        .await
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

/// Subscribes a raw client and waits for its SUBACK (granted `qos`).
pub async fn raw_subscribe(s: &mut TcpStream, filter: &str, qos: u8) {
    s.write_all(&subscribe_packet(filter, qos)).await.unwrap();
    let mut suback = [0u8; 5];
    within("SUBACK", s.read_exact(&mut suback))
        .await
        .expect("SUBACK");
    assert_eq!(suback, [0x90, 3, 0, 1, qos], "SUBACK granted");
}

/// Reads one whole packet: (first byte, body).
pub async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

/// Reads until a PUBLISH arrives; returns (topic, payload) (QoS 0 only).
pub async fn read_publish(s: &mut TcpStream) -> (String, Vec<u8>) {
    loop {
        let (first, body) = read_packet(s).await.expect("a packet");
        if first >> 4 == 3 {
            assert_eq!(first & 0x06, 0, "QoS 0 expected");
            let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8(body[2..2 + tl].to_vec()).unwrap();
            return (topic, body[2 + tl..].to_vec());
        }
    }
}

/// Waits until the server closes `s` (EOF or reset); anything it sends first is discarded.
pub async fn closed_by_server(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
