//! A new network connection: wait (bounded) for CONNECT, check it, answer refusals, then
//! hand the connection to the task owning the client id's session ([`admit`]).

use crate::broker::{Broker, SessionHandle};
use crate::listener::Slots;
use crate::metrics::Metrics;
use crate::session_task::{Control, Running, SessionTask};
use crate::transport::Upgraded;
use bytes::BytesMut;
use bytestring::ByteString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thingmq_broker::session::validate_connect;
use thingmq_codec::{
    decode, encode, ConnAck, ConnAckProperties, Connect, DecodeError, Packet, ProtocolVersion,
    ReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Any byte stream a listener produces: TCP, TLS, WebSocket or WebSocket over TLS.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The stream as `Any`, to tell a plain TCP stream (which can hibernate) from the rest.
    /// Call it on the stream, not on a `Box<dyn Transport>` (`(*boxed).as_any()`): the box
    /// is a transport too and would answer for itself.
    fn as_any(&self) -> &dyn std::any::Any;
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// A connection's stream with the bytes read and not yet decoded and the bytes not yet
/// written. It also holds the connection-limit permits, released when the connection is
/// gone.
///
/// The stream is not split into read and write halves: its one owner (the handshake, then
/// the session task) polls both sides itself, and `tokio::io::split` would cost every
/// connection a shared allocation and a lock taken on each read and write.
pub(crate) struct Link {
    pub(crate) io: Box<dyn Transport>,
    /// Read and not yet decoded.
    pub(crate) rbuf: BytesMut,
    /// Encoded and not yet written.
    pub(crate) wbuf: BytesMut,
    /// Bytes were written since the last flush. TLS and WebSocket streams may hold written
    /// bytes in their own buffers until flushed (TCP never does).
    pub(crate) unflushed: bool,
    pub(crate) _permits: Slots,
}

/// A connection whose CONNECT was accepted, on its way to its session task.
pub(crate) struct Accepted {
    pub(crate) connect: Connect,
    pub(crate) link: Link,
    /// The client id was empty and the server assigned one.
    pub(crate) assigned_id: bool,
    pub(crate) peer: SocketAddr,
    /// The platform's own in-process link ([`crate::ServerHandle::connect_local`]): no
    /// credentials are checked and every topic is allowed.
    pub(crate) internal: bool,
    /// Index of the listener it came in on (its access rules may be its own).
    pub(crate) listener: usize,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("client_id", &self.connect.client_id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Index of the listener, in config order.
    pub(crate) listener: usize,
    /// The listener is bound to a loopback address: anonymous clients are allowed there
    /// unless `auth.allow_anonymous` says otherwise. Behind a proxy, only when the real
    /// client address is loopback too.
    pub(crate) loopback_listener: bool,
    /// An in-process link from the platform itself, not a network client.
    pub(crate) internal: bool,
}

impl Origin {
    /// The origin of a connection that came through a proxy whose PROXY header named
    /// `source` (`None`: the proxy's own connection, e.g. a health check). A proxied client
    /// is never taken for a local one unless its real address is loopback, since the proxy
    /// itself usually runs on the same machine.
    pub(crate) fn behind_proxy(self, source: Option<SocketAddr>) -> Origin {
        let peer = source.unwrap_or(self.peer);
        Origin {
            peer,
            loopback_listener: self.loopback_listener && peer.ip().is_loopback(),
            ..self
        }
    }
}

/// Runs the CONNECT phase of a new connection.
pub(crate) async fn handshake(
    broker: Arc<Broker>,
    conn: Upgraded,
    origin: Origin,
    permits: Slots,
    connect_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let Upgraded {
        stream,
        peer_identity,
    } = conn;
    let peer = origin.peer;
    let mut link = Link {
        io: stream,
        rbuf: BytesMut::with_capacity(1024),
        wbuf: BytesMut::new(),
        unflushed: false,
        _permits: permits,
    };
    let max = broker.settings.max_packet_size;
    let mut stop = shutdown.clone();
    let first = tokio::select! {
        r = tokio::time::timeout(connect_timeout, read_packet(&mut link, max)) => match r {
            Err(_) => {
                connect_timed_out(&broker, peer, "no complete CONNECT");
                return;
            }
            Ok(r) => r,
        },
        _ = stop.changed() => return,
    };
    let mut connect = match first {
        Ok(Some(Packet::Connect(c))) => *c,
        Ok(Some(p)) => {
            tracing::info!(%peer, kind = p.kind(), "first packet is not CONNECT [MQTT-3.1.0-1]; closing");
            return;
        }
        Ok(None) => return,
        Err(DecodeError::Mqtt_3_1_2_2(level)) => {
            // [MQTT-3.1.2-2]: answer with return code 1 (v3 format: the client's level is
            // unknown to us) and close.
            Metrics::add(&broker.metrics.connects_refused, 1);
            tracing::info!(%peer, level, "unsupported protocol level; refusing");
            refuse(
                &mut link,
                ProtocolVersion::V3_1_1,
                ReasonCode::UnsupportedProtocolVersion,
            )
            .await;
            return;
        }
        Err(e @ DecodeError::PacketTooLarge { .. }) => {
            Metrics::add(&broker.metrics.packets_too_large, 1);
            tracing::info!(%peer, "CONNECT larger than mqtt.max_packet_size: {e}; closing");
            return;
        }
        Err(e) => {
            Metrics::add(&broker.metrics.protocol_errors, 1);
            tracing::info!(%peer, "bad first packet: {e}; closing [MQTT-3.1.0-1]");
            return;
        }
    };
    if let Err(code) = validate_connect(&connect, &broker.settings) {
        Metrics::add(&broker.metrics.connects_refused, 1);
        tracing::info!(%peer, client_id = %connect.client_id, reason = %code, "connection refused");
        refuse(&mut link, connect.protocol, code).await;
        return;
    }
    if let Some(identity) = &peer_identity {
        // The listener takes the username from the verified client certificate.
        connect.username = Some(ByteString::from(identity.as_str()));
    }
    let trusted = origin.internal || peer_identity.is_some();
    if let Err(code) = authenticate(&broker, &connect, origin, trusted).await {
        Metrics::add(&broker.metrics.auth_failures, 1);
        tracing::info!(%peer, client_id = %connect.client_id, username = ?connect.username, reason = %code, "connection refused");
        refuse(&mut link, connect.protocol, code).await;
        return;
    }
    detach_from_read_buffer(&mut connect);
    let assigned_id = connect.client_id.is_empty();
    if assigned_id {
        connect.client_id = ByteString::from(format!("thingmq-{:016x}", rand::random::<u64>()));
    }
    if let Some(identity) = &peer_identity {
        tracing::debug!(%peer, client_id = %connect.client_id, identity, "client certificate identity");
    }
    let accepted = Accepted {
        connect,
        link,
        assigned_id,
        peer,
        internal: origin.internal,
        listener: origin.listener,
    };
    admit(broker, accepted).await;
    // Held until the session task exists: the server's shutdown waits for it from then on.
    drop(alive);
}

/// Copies the parts of CONNECT that live as long as the session (client id, user name, will)
/// out of the read buffer. Decoded fields share the buffer they were read into, so the client
/// id alone kept the whole 1 KiB handshake buffer alive for every idle connection.
fn detach_from_read_buffer(connect: &mut Connect) {
    connect.client_id = ByteString::from(&*connect.client_id);
    if let Some(u) = connect.username.as_mut() {
        *u = ByteString::from(&**u);
    }
    if let Some(w) = connect.will.as_mut() {
        w.topic = ByteString::from(&*w.topic);
        w.payload = bytes::Bytes::copy_from_slice(&w.payload);
    }
}

/// Hands an accepted connection to the task owning its client id's session, starting one
/// when there is none.
pub(crate) async fn admit(broker: Arc<Broker>, mut accepted: Accepted) {
    let client_id = thingmq_broker::ClientId::new(&accepted.connect.client_id);
    loop {
        let handle = {
            let mut registry = broker.registry.lock();
            match registry.get(&client_id) {
                Some(h) => h.clone(),
                None => {
                    let (control, inbox) = crate::control::channel();
                    let me = broker.new_session_ref(client_id.clone());
                    registry.insert(SessionHandle {
                        session: me.clone(),
                        control,
                    });
                    drop(registry);
                    let task = SessionTask::new(broker.clone(), me, inbox);
                    tokio::spawn(Running::new(task.with_connection(Box::new(accepted))));
                    return;
                }
            }
        };
        match handle
            .control
            .send(Control::Attach(Box::new(accepted)))
            .await
        {
            Ok(()) => return,
            Err(control) => {
                // The owner is gone; forget it and start over.
                let Control::Attach(a) = control else {
                    return;
                };
                accepted = *a;
                broker
                    .registry
                    .lock()
                    .remove_if_owned(&client_id, &handle.session);
            }
        }
    }
}

/// Checks the CONNECT's credentials against the rules in force. Password hashes are slow on
/// purpose, so a check that may verify one runs off the async worker threads; one that
/// cannot (no password given) runs here: handing every anonymous CONNECT to the blocking
/// pool cost two thread switches per connection, most of a connect storm's time on one core.
async fn authenticate(
    broker: &Broker,
    connect: &Connect,
    origin: Origin,
    trusted: bool,
) -> Result<(), ReasonCode> {
    if trusted {
        // The TLS layer verified the client certificate that named this user, or the
        // connection is the platform's own in-process link.
        return Ok(());
    }
    let (access, _) = broker.access();
    let client = thingmq_auth::ClientInfo {
        client_id: connect.client_id.to_string(),
        username: connect.username.as_deref().map(str::to_owned),
    };
    let loopback = origin.loopback_listener;
    let listener = origin.listener;
    let verdict = match connect.password.clone() {
        None => access.authenticate(listener, loopback, &client, None),
        Some(password) => {
            let Ok(_slot) = broker.password_checks.acquire().await else {
                return Err(ReasonCode::ServerUnavailable);
            };
            tokio::task::spawn_blocking(move || {
                access.authenticate(listener, loopback, &client, Some(&password[..]))
            })
            .await
            .map_err(|_| ReasonCode::ServerUnavailable)?
        }
    };
    match verdict {
        Ok(()) => Ok(()),
        Err(thingmq_auth::Refusal::BadCredentials) => Err(ReasonCode::BadUserNameOrPassword),
        Err(thingmq_auth::Refusal::NotAuthorized) => Err(ReasonCode::NotAuthorized),
    }
}

async fn read_packet(link: &mut Link, max: u32) -> Result<Option<Packet>, DecodeError> {
    loop {
        // [MQTT-3.1.0-1]: known from the first byte; no need to wait for the rest.
        if let Some(&first) = link.rbuf.first() {
            if first >> 4 != 1 {
                return Err(DecodeError::InvalidPacketType(first >> 4));
            }
        }
        // CONNECT carries its own protocol level; the version passed here is not used for it.
        if let Some(p) = decode(&mut link.rbuf, ProtocolVersion::V5, max)? {
            return Ok(Some(p));
        }
        match link.io.read_buf(&mut link.rbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn refuse(link: &mut Link, version: ProtocolVersion, code: ReasonCode) {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: ConnAckProperties::default(),
    });
    if encode(&connack, version, &mut link.wbuf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = link.io.write_all_buf(&mut link.wbuf).await;
            let _ = link.io.shutdown().await;
        })
        .await;
    }
}

/// Counts a refused connection (limit reached). `which` names the limit's config key.
pub(crate) fn refused(broker: &Broker, peer: SocketAddr, which: &str) {
    Metrics::add(&broker.metrics.refused_connections, 1);
    if let Some(more) = crate::rate::should_log(&broker.limit_logs.connections_refused) {
        tracing::warn!(%peer, limit = which, also_refused_since_last_line = more, "connection limit reached; connection refused");
    }
}

/// Counts and logs (rate-limited: a connection flood is exactly when this bites) a
/// connection closed by the connect timeout; `stage` says what it had not finished.
pub(crate) fn connect_timed_out(broker: &Broker, peer: SocketAddr, stage: &str) {
    Metrics::add(&broker.metrics.connect_timeouts, 1);
    if let Some(more) = crate::rate::should_log(&broker.limit_logs.connect_timeout) {
        tracing::info!(%peer, also_timed_out_since_last_line = more, "{stage} within limits.connect_timeout_ms; closing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_boxed_tcp_stream_is_recognised_as_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let boxed: Box<dyn Transport> = Box::new(client);
        // Deref first: with `Transport` in scope, `boxed.as_any()` is the blanket impl's for
        // the `Box` itself (a `Box<dyn Transport>` is a transport too), which is never TCP.
        assert!(!boxed.as_any().is::<tokio::net::TcpStream>());
        assert!((*boxed).as_any().is::<tokio::net::TcpStream>());
        let duplex: Box<dyn Transport> = Box::new(tokio::io::duplex(64).0);
        assert!(!(*duplex).as_any().is::<tokio::net::TcpStream>());
    }
}
