//! Opening a byte stream to the server: TCP, TLS (tokio-rustls), WebSocket and WebSocket over
//! TLS (tokio-tungstenite, sub-protocol `mqtt`). The event loop sees only [`BoxedStream`].

use crate::error::ConnectionError;
use crate::options::{TlsOptions, Transport};
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A byte stream the event loop can run MQTT over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for S {}

/// Any transport, boxed.
pub type BoxedStream = Box<dyn AsyncStream>;

/// Opens `transport`.
pub(crate) async fn connect(transport: &Transport) -> Result<BoxedStream, ConnectionError> {
    match transport {
        Transport::Tcp { host, port } => Ok(Box::new(tcp(host, *port).await?)),
        Transport::Tls { host, port, tls } => {
            let tcp = tcp(host, *port).await?;
            Ok(Box::new(tls_handshake(tcp, host, tls).await?))
        }
        Transport::Ws { url } => {
            let (host, port, req) = ws_request(url, 80)?;
            let tcp = tcp(&host, port).await?;
            Ok(Box::new(ws_handshake(tcp, req).await?))
        }
        Transport::Wss { url, tls } => {
            let (host, port, req) = ws_request(url, 443)?;
            let tcp = tcp(&host, port).await?;
            let tls = tls_handshake(tcp, &host, tls).await?;
            Ok(Box::new(ws_handshake(tls, req).await?))
        }
    }
}

async fn tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let s = TcpStream::connect((host, port)).await?;
    // MQTT packets are small and latency matters more than packing them.
    s.set_nodelay(true)?;
    Ok(s)
}

type WsRequest = tokio_tungstenite::tungstenite::handshake::client::Request;

/// The upgrade request for `url`, with `Sec-WebSocket-Protocol: mqtt` [MQTT-6.0.0-3].
fn ws_request(url: &str, default_port: u16) -> Result<(String, u16, WsRequest), ConnectionError> {
    let bad = |why: String| ConnectionError::Config(format!("bad WebSocket URL {url:?}: {why}"));
    let mut req = url.into_client_request().map_err(|e| bad(e.to_string()))?;
    let host = req
        .uri()
        .host()
        .ok_or_else(|| bad("no host".into()))?
        .to_owned();
    let port = req.uri().port_u16().unwrap_or(default_port);
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("mqtt"),
    );
    Ok((host, port, req))
}

async fn ws_handshake<S>(io: S, req: WsRequest) -> Result<WsStream<S>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, _response) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(into_io)?;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
        eof: false,
    })
}

async fn tls_handshake<S>(
    io: S,
    host: &str,
    opts: &TlsOptions,
) -> Result<tokio_rustls::client::TlsStream<S>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = client_config(opts)?;
    let name = opts.server_name.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| ConnectionError::Config(format!("bad TLS server name {name:?}: {e}")))?;
    Ok(TlsConnector::from(config).connect(name, io).await?)
}

/// rustls client settings from PEM files. Read at each connection attempt, so renewed
/// certificates are picked up by reconnects.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnectionError> {
    let provider: Arc<CryptoProvider> = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::Config(e.to_string()))?;
    let builder = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let Some(ca_file) = &opts.ca_file else {
            return Err(ConnectionError::Config(
                "TLS needs a CA file (--cafile) or --insecure".into(),
            ));
        };
        for cert in read_certs(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| ConnectionError::Config(format!("{}: {e}", ca_file.display())))?;
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ConnectionError::Config(format!("{}: no usable private key: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConnectionError::Config(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ConnectionError::Config(
                "a client certificate needs both the certificate and the key file".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ConnectionError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConnectionError::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConnectionError::Config(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// `insecure`: accepts any certificate for any name, but still checks the handshake
/// signatures so the connection is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

/// A WebSocket as a byte stream: reads concatenate binary frames (an MQTT packet may span
/// frames), each write is one binary frame.
#[derive(Debug)]
struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    pending: Bytes,
    eof: bool,
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
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(into_io(e))),
        }
    }
}
