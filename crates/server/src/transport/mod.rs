//! Transports: what a listener does with an accepted TCP socket before MQTT starts — nothing
//! (`tcp`), a TLS handshake (`tls`), a WebSocket upgrade (`ws`), or both (`wss`). Each yields
//! a byte stream ([`Transport`]) and, with client certificates, the peer's identity.
//!
//! Dependencies, and why they are worth their weight:
//! - `tokio-rustls` (rustls, with the `ring` provider: it builds with only a C compiler, where
//!   `aws-lc-rs` needs cmake): TLS 1.2/1.3 and client-certificate verification
//!   (`WebPkiClientVerifier`) in memory-safe code, without linking OpenSSL.
//! - `rustls-pki-types`: reads the PEM certificate and key files (PKCS#8, RSA, SEC1); it is
//!   already a dependency of rustls.
//! - `x509-parser`: the subject CN of a client certificate (for `use_identity_as_username`);
//!   rustls verifies certificates but does not expose their names.
//! - `tokio-tungstenite` (handshake only, no client or TLS features): the RFC 6455 upgrade
//!   and framing, including masking, fragmentation and ping/pong.
//! - `futures-util` (sink feature only): the `Stream`/`Sink` traits `WsStream` drives.
//!
//! With `proxy_protocol = true` on a listener, a PROXY protocol v1/v2 header (`proxy`, our
//! own small parser) is read before any of this.

pub(crate) mod proxy;
mod tls;
mod ws;

pub(crate) use tls::server_config;

use crate::config::{ListenerTransport, TlsSettings, WsSettings};
use crate::connection::Transport;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A connection ready for MQTT: its byte stream and who the peer proved to be.
pub(crate) struct Upgraded {
    pub(crate) stream: Box<dyn Transport>,
    /// The client certificate's subject CN, on TLS listeners with `use_identity_as_username`.
    pub(crate) peer_identity: Option<String>,
}

/// Turns accepted sockets into [`Upgraded`] connections the way one listener is configured.
/// Cheap to clone: every connection task gets one.
#[derive(Clone)]
pub(crate) struct Acceptor {
    /// The listener's TLS settings (reloadable certificates) and `use_identity_as_username`.
    tls: Option<(TlsSettings, bool)>,
    ws: Option<Arc<WsSettings>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("tls", &self.tls.is_some())
            .field("ws", &self.ws)
            .finish()
    }
}

impl Acceptor {
    pub(crate) fn new(transport: &ListenerTransport) -> Acceptor {
        let tls = |t: &TlsSettings| (t.clone(), t.use_identity_as_username());
        let (tls, ws) = match transport {
            ListenerTransport::Tcp => (None, None),
            ListenerTransport::Tls(t) => (Some(tls(t)), None),
            ListenerTransport::Ws(w) => (None, Some(Arc::new(w.clone()))),
            ListenerTransport::Wss(t, w) => (Some(tls(t)), Some(Arc::new(w.clone()))),
        };
        Acceptor { tls, ws }
    }

    /// Runs the transport's handshakes. The caller bounds it in time; it runs in the
    /// connection's own task, so a slow or silent peer holds up no one else.
    pub(crate) async fn upgrade(&self, socket: TcpStream) -> io::Result<Upgraded> {
        let _ = socket.set_nodelay(true);
        // The TLS and WebSocket handshakes are boxed: their futures are kilobytes, and inline
        // they would make every connection's handshake task (plain TCP too) that much larger,
        // allocated and copied for every connect (docs/benchmarks.md, change 26).
        let (stream, peer_identity): (Box<dyn Transport>, _) = match (&self.tls, &self.ws) {
            (None, None) => (Box::new(socket), None),
            (Some((settings, identity)), None) => {
                // A snapshot: a reload mid-handshake does not change this connection.
                let acceptor = TlsAcceptor::from(settings.current());
                let (s, id) = Box::pin(tls::accept(&acceptor, socket, *identity)).await?;
                (Box::new(s), id)
            }
            (None, Some(settings)) => (
                Box::new(Box::pin(ws::accept(socket, settings)).await?),
                None,
            ),
            (Some((tls_settings, identity)), Some(settings)) => {
                let acceptor = TlsAcceptor::from(tls_settings.current());
                let (s, id) = Box::pin(tls::accept(&acceptor, socket, *identity)).await?;
                (Box::new(Box::pin(ws::accept(s, settings)).await?), id)
            }
        };
        Ok(Upgraded {
            stream,
            peer_identity,
        })
    }
}
