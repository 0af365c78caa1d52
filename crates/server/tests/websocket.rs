//! MQTT over WebSocket (`ws`) and WebSocket over TLS (`wss`) listeners, driven with a
//! tokio-tungstenite client sending raw MQTT 3.1.1 bytes, so frame boundaries are ours to
//! choose. Servers run on port 0 and are shut down by each test (or dropped with a failing
//! test's runtime).

use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thingmq_server::{Config, Server, ServerHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

// MQTT 3.1.1 packets, byte by byte.
/// CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60, client id "ws1".
const CONNECT: &[u8] = &[
    0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x03, b'w', b's',
    b'1',
];
/// CONNACK: no session present, accepted.
const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
/// SUBSCRIBE packet id 1 to "a/b" at QoS 0.
const SUBSCRIBE: &[u8] = &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x00];
/// SUBACK packet id 1, granted QoS 0.
const SUBACK: &[u8] = &[0x90, 0x03, 0x00, 0x01, 0x00];
/// PUBLISH QoS 0 to "a/b" with payload "hi".
const PUBLISH: &[u8] = &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];

async fn start(listener: &str) -> (ServerHandle, u16) {
    let toml =
        format!("[[listeners]]\nbind = \"127.0.0.1:0\"\n{listener}\n[sys]\ninterval_secs = 0\n");
    let config = Config::from_toml(&toml).expect("test config is valid");
    let handle = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let port = handle.local_addrs()[0].port();
    (handle, port)
}

type Request = tokio_tungstenite::tungstenite::handshake::client::Request;

fn request(url: &str, headers: &[(&'static str, &'static str)]) -> Request {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, HeaderValue::from_static(v));
    }
    req
}

/// Reads binary frames until `n` bytes arrived.
async fn read_bytes<S>(ws: &mut WebSocketStream<S>, n: usize) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = Vec::new();
    while got.len() < n {
        match within("bytes from the server", ws.next()).await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    got
}

/// CONNECT split across two frames; then SUBSCRIBE and PUBLISH in one frame. The
/// subscription sees its own PUBLISH.
async fn mqtt_session<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::binary(CONNECT[..5].to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(CONNECT[5..].to_vec()))
        .await
        .unwrap();
    assert_eq!(read_bytes(ws, CONNACK.len()).await, CONNACK);
    ws.send(Message::binary([SUBSCRIBE, PUBLISH].concat()))
        .await
        .unwrap();
    let got = read_bytes(ws, SUBACK.len() + PUBLISH.len()).await;
    assert_eq!(got, [SUBACK, PUBLISH].concat());
}

#[tokio::test]
async fn mqtt_packets_cross_websocket_frame_boundaries() {
    let (server, port) = start("protocol = \"ws\"").await;
    let req = request(
        &format!("ws://127.0.0.1:{port}/mqtt"),
        &[("Sec-WebSocket-Protocol", "mqtt")],
    );
    let (mut ws, resp) = within("upgrade", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");
    mqtt_session(&mut ws).await;
    server.shutdown().await;
}

#[tokio::test]
async fn subprotocol_is_echoed_and_unknown_ones_are_refused() {
    let (server, port) = start("protocol = \"ws\"\npath = \"/ws\"").await;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let req = request(&url, &[("Sec-WebSocket-Protocol", "mqttv3.1")]);
    let (_ws, resp) = within("upgrade", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqttv3.1");

    let req = request(&url, &[("Sec-WebSocket-Protocol", "chat")]);
    match within("refusal", tokio_tungstenite::connect_async(req)).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::BAD_REQUEST),
        other => panic!("expected 400, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_path_is_refused() {
    let (server, port) = start("protocol = \"ws\"").await;
    let req = request(&format!("ws://127.0.0.1:{port}/other"), &[]);
    match within("refusal", tokio_tungstenite::connect_async(req)).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::NOT_FOUND),
        other => panic!("expected 404, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn origin_not_in_allowed_origins_is_refused() {
    let (server, port) =
        start("protocol = \"ws\"\nallowed_origins = [\"https://app.example\"]").await;
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    let req = request(&url, &[("Origin", "https://evil.example")]);
    match within("refusal", tokio_tungstenite::connect_async(req)).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {other:?}"),
    }
    let req = request(&url, &[("Origin", "https://app.example")]);
    let (mut ws, _) = within("upgrade", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    mqtt_session(&mut ws).await;
    server.shutdown().await;
}

#[tokio::test]
async fn text_frame_closes_the_connection() {
    let (server, port) = start("protocol = \"ws\"").await;
    let req = request(&format!("ws://127.0.0.1:{port}/mqtt"), &[]);
    let (mut ws, _) = within("upgrade", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    ws.send(Message::binary(CONNECT.to_vec())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, CONNACK.len()).await, CONNACK);
    ws.send(Message::text("not mqtt")).await.unwrap();
    loop {
        match within("the connection to close", ws.next()).await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => {}
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn mqtt_over_websocket_over_tls() {
    use rcgen::{CertifiedKey, KeyPair};
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{crypto::ring, ClientConfig, RootCertStore};

    let CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        KeyPair::serialize_pem(&key_pair),
    )
    .unwrap();
    let (server, port) = start(&format!(
        "protocol = \"wss\"\ncert_file = {:?}\nkey_file = {:?}",
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    ))
    .await;

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap())
        .unwrap();
    let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp);
    let tls = within("TLS handshake", tls).await.unwrap();
    let req = request(
        &format!("wss://localhost:{port}/mqtt"),
        &[("Sec-WebSocket-Protocol", "mqtt")],
    );
    let (mut ws, resp) = within("upgrade", tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");
    mqtt_session(&mut ws).await;
    server.shutdown().await;
}
