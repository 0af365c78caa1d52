//! PROXY protocol v1/v2 on a listener with `proxy_protocol = true`, with hand-written
//! headers: the real client address decides loopback-only anonymous access, and a connection
//! without a valid header is closed before MQTT starts.

mod common;

use common::*;
use thingmq_server::metrics::Metrics;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONFIG: &str = "proxy_protocol = true\n[sys]\ninterval_secs = 0";

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&1883u16.to_be_bytes());
    h
}

fn v2_tcp6_loopback(sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]); // v2 PROXY, TCP over IPv6, 36 bytes
    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    h.extend_from_slice(&loopback); // source ::1
    h.extend_from_slice(&loopback); // destination ::1
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&1883u16.to_be_bytes());
    h
}

/// Sends `header` then an anonymous CONNECT; returns the CONNACK return code, or None when
/// the connection was closed without one.
async fn connect_through(addr: std::net::SocketAddr, header: &[u8], id: &str) -> Option<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Header and CONNECT in one write, as a proxy forwarding a fast client would.
    let bytes = [header, &connect_packet(id)].concat();
    s.write_all(&bytes).await.unwrap();
    match within("CONNACK or close", read_packet(&mut s)).await {
        Ok((0x20, body)) => Some(body[1]),
        Ok(other) => panic!("unexpected packet {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_gives_the_real_address_and_a_remote_one_is_not_loopback() {
    let (server, addr) = start(CONFIG).await;
    // The listener is on 127.0.0.1 (anonymous allowed for local clients), but the client
    // behind the proxy is remote: not authorized (return code 5).
    let remote = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 1883\r\n";
    assert_eq!(connect_through(addr, remote, "remote-v1").await, Some(5));
    let local = b"PROXY TCP4 127.0.0.1 127.0.0.1 51235 1883\r\n";
    assert_eq!(connect_through(addr, local, "local-v1").await, Some(0));
    let local6 = b"PROXY TCP6 ::1 ::1 51236 1883\r\n";
    assert_eq!(connect_through(addr, local6, "local6-v1").await, Some(0));
    // UNKNOWN: the proxy's own connection; the TCP peer (here loopback) counts.
    assert_eq!(
        connect_through(addr, b"PROXY UNKNOWN\r\n", "unknown-v1").await,
        Some(0)
    );
    assert_eq!(Metrics::get(&server.metrics().auth_failures), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_header_gives_the_real_address_and_a_remote_one_is_not_loopback() {
    let (server, addr) = start(CONFIG).await;
    assert_eq!(
        connect_through(addr, &v2_tcp4([198, 51, 100, 9], 40000), "remote-v2").await,
        Some(5)
    );
    assert_eq!(
        connect_through(addr, &v2_tcp4([127, 0, 0, 1], 40001), "local-v2").await,
        Some(0)
    );
    assert_eq!(
        connect_through(addr, &v2_tcp6_loopback(40002), "local6-v2").await,
        Some(0)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_without_a_valid_header_is_closed_on_a_proxy_protocol_listener() {
    let (server, addr) = start(CONFIG).await;
    // A bare CONNECT: no CONNACK, just closed.
    assert_eq!(connect_through(addr, b"", "bare").await, None);
    // A malformed v1 line and a v2 header with a bad version.
    assert_eq!(
        connect_through(addr, b"PROXY TCP4 nowhere 127.0.0.1 1 2\r\n", "bad-v1").await,
        None
    );
    let mut bad = v2_tcp4([127, 0, 0, 1], 1);
    bad[12] = 0x31;
    assert_eq!(connect_through(addr, &bad, "bad-v2").await, None);
    assert_eq!(Metrics::get(&server.metrics().protocol_errors), 3);
    assert_eq!(server.connections(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_without_proxy_protocol_takes_a_header_for_garbage() {
    let (server, addr) = start("[sys]\ninterval_secs = 0").await;
    let local = b"PROXY TCP4 127.0.0.1 127.0.0.1 51235 1883\r\n";
    assert_eq!(connect_through(addr, local, "no-proxy").await, None);
    server.shutdown().await;
}
