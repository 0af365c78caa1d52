//! MQTT over WebSocket (MQTT v5 §6): the HTTP upgrade with its checks, and [`WsStream`], which
//! turns the binary frames of a WebSocket into the byte stream the codec reads. An MQTT packet
//! may span frames and a frame may carry several packets, so frame boundaries are ignored.

// `Result<Response, ErrorResponse>` is the shape tungstenite's handshake callback demands;
// it is built once per connection, so its size does not matter.
#![allow(clippy::result_large_err)]

use crate::config::WsSettings;
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Sub-protocols we speak, as registered with IANA: `mqtt` (3.1.1 and 5.0) and `mqttv3.1`.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Answers the HTTP upgrade request on `io` and returns the WebSocket as a byte stream.
pub(crate) async fn accept<S>(io: S, settings: &WsSettings) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let check = |req: &Request, resp: Response| check_request(settings, req, resp);
    let ws = tokio_tungstenite::accept_hdr_async(io, check)
        .await
        .map_err(into_io)?;
    Ok(WsStream::new(ws))
}

/// Decides on an upgrade request: the path must match; a browser's `Origin` must be allowed
/// (when a list is configured); a request that lists sub-protocols must list one of ours,
/// and the first of ours it lists is echoed back, as RFC 6455 requires.
fn check_request(
    settings: &WsSettings,
    req: &Request,
    mut resp: Response,
) -> Result<Response, ErrorResponse> {
    if req.uri().path() != settings.path {
        return Err(refusal(StatusCode::NOT_FOUND, "no MQTT endpoint here"));
    }
    if let (Some(allowed), Some(origin)) =
        (&settings.allowed_origins, req.headers().get(header::ORIGIN))
    {
        let ok = origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == o));
        if !ok {
            return Err(refusal(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.is_empty() {
        match offered.iter().find(|p| SUBPROTOCOLS.contains(p)) {
            Some(p) => {
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(if *p == "mqtt" { "mqtt" } else { "mqttv3.1" }),
                );
            }
            None => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "Sec-WebSocket-Protocol must include mqtt or mqttv3.1",
                ))
            }
        }
    }
    Ok(resp)
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(why.to_owned()));
    *resp.status_mut() = status;
    resp
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

/// A WebSocket as a byte stream. Reads concatenate binary frames; each write is one binary
/// frame. Ping/pong are answered by tungstenite; a close frame reads as end of stream; a text
/// frame is an error, which closes the connection [MQTT-6.0.0-1].
#[derive(Debug)]
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    pending: Bytes,
    eof: bool,
}

impl<S> WsStream<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> WsStream<S> {
        WsStream {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Control frames: tungstenite answers pings and closes itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => this.eof = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on an MQTT WebSocket [MQTT-6.0.0-1]",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = &mut self.ws;
        ready!(Pin::new(&mut *ws).poll_ready(cx)).map_err(into_io)?;
        Pin::new(&mut *ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(into_io)?;
        // Start sending now; a writer that stops writing must still call flush, which
        // finishes the job.
        if let Poll::Ready(Err(e)) = Pin::new(&mut *ws).poll_flush(cx) {
            return Poll::Ready(Err(into_io(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(into_io)
    }

    /// Sends a close frame and flushes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(into_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsStream::new(server), client)
    }

    fn binary(b: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(b))
    }

    #[tokio::test]
    async fn bytes_flow_across_frame_boundaries() {
        let (mut server, mut client) = pair().await;
        client.send(binary(&[1, 2, 3])).await.unwrap();
        client.send(binary(&[4, 5, 6, 7])).await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        let mut rest = [0u8; 2];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [6, 7]);
    }

    #[tokio::test]
    async fn each_write_is_one_binary_frame_sent_without_an_explicit_flush() {
        let (mut server, mut client) = pair().await;
        server.write_all(&[0xd0, 0x00]).await.unwrap();
        let msg = client.next().await.unwrap().unwrap();
        assert_eq!(msg, binary(&[0xd0, 0x00]));
        server.write_all(&[0x20, 0x02, 0, 0]).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            binary(&[0x20, 2, 0, 0])
        );
    }

    #[tokio::test]
    async fn pings_are_skipped_and_answered() {
        let (mut server, mut client) = pair().await;
        client
            .send(Message::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        client.send(binary(&[9])).await.unwrap();
        let mut got = [0u8; 1];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [9]);
        // The pong goes out with the next write at the latest.
        server.write_all(&[1]).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(client.next().await.unwrap().unwrap());
        }
        assert!(
            seen.contains(&Message::Pong(Bytes::from_static(b"hi"))),
            "{seen:?}"
        );
        assert!(seen.contains(&binary(&[1])), "{seen:?}");
    }

    #[tokio::test]
    async fn close_frame_reads_as_end_of_stream() {
        let (mut server, mut client) = pair().await;
        client.send(binary(&[7])).await.unwrap();
        client.close(None).await.unwrap();
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, [7]);
    }

    #[tokio::test]
    async fn text_frame_is_an_error() {
        let (mut server, mut client) = pair().await;
        client.send(Message::text("hello")).await.unwrap();
        let err = server.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn shutdown_sends_a_close_frame() {
        let (mut server, mut client) = pair().await;
        server.shutdown().await.unwrap();
        assert!(matches!(client.next().await, Some(Ok(Message::Close(_)))));
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn check(settings: &WsSettings, req: &Request) -> Result<Response, ErrorResponse> {
        check_request(settings, req, Response::default())
    }

    #[test]
    fn wrong_path_is_not_found() {
        let s = WsSettings::default();
        let err = check(&s, &request("/other", &[])).unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert!(check(&s, &request("/mqtt?x=1", &[])).is_ok());
    }

    #[test]
    fn origin_outside_the_allowed_list_is_forbidden() {
        let s = WsSettings {
            allowed_origins: Some(vec!["https://app.example".into()]),
            ..WsSettings::default()
        };
        let evil = request("/mqtt", &[("Origin", "https://evil.example")]);
        assert_eq!(
            check(&s, &evil).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        let good = request("/mqtt", &[("Origin", "https://app.example")]);
        assert!(check(&s, &good).is_ok());
        // Not a browser: nothing to protect.
        assert!(check(&s, &request("/mqtt", &[])).is_ok());
    }

    #[test]
    fn first_mqtt_subprotocol_offered_is_echoed() {
        let s = WsSettings::default();
        let proto = |r: &Response| r.headers()[header::SEC_WEBSOCKET_PROTOCOL].clone();
        let r = check(&s, &request("/mqtt", &[("Sec-WebSocket-Protocol", "mqtt")])).unwrap();
        assert_eq!(proto(&r), "mqtt");
        let r = check(
            &s,
            &request(
                "/mqtt",
                &[("Sec-WebSocket-Protocol", "chat, mqttv3.1, mqtt")],
            ),
        )
        .unwrap();
        assert_eq!(proto(&r), "mqttv3.1");
        let r = check(&s, &request("/mqtt", &[])).unwrap();
        assert!(r.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
        let err = check(&s, &request("/mqtt", &[("Sec-WebSocket-Protocol", "chat")])).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
