//! The owner of a session: [`EventLoop`] holds the [`ClientState`], the connection and the
//! receiving end of the handles' channel, and turns the state machine's outputs into I/O.

use crate::error::{ClientError, ConnectionError};
use crate::options::{MqttOptions, Request, Response, Transport};
use crate::state::{ClientState, Event, Output};
use crate::transport::{self, BoxedStream};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Instant;

/// The clock, read only here: tokio's, so tests with paused time control keep-alive.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
use thingmq_codec::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Requests queued or in flight at most, below the 65535 packet ids.
const MAX_BACKLOG: usize = 60_000;

pub(crate) type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// A request and where its answer goes.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>>;

/// How the event loop opens each connection.
pub(crate) enum Connector {
    Transport(Transport),
    Custom(Box<dyn FnMut() -> ConnectFuture + Send>),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connector::Transport(t) => t.fmt(f),
            Connector::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl Connector {
    async fn connect(&mut self) -> Result<BoxedStream, ConnectionError> {
        match self {
            Connector::Transport(t) => transport::connect(t).await,
            Connector::Custom(f) => Ok(f().await?),
        }
    }
}

#[derive(Debug)]
struct Conn {
    io: BoxedStream,
    read: BytesMut,
    write: BytesMut,
}

impl fmt::Debug for dyn transport::AsyncStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncStream")
    }
}

/// Drives one client session: connects, reconnects with back-off, keeps the connection alive
/// and hands out what arrives. Call [`poll`](Self::poll) in a loop (usually in its own task);
/// nothing happens between calls. `poll` is not cancel-safe: a future dropped mid-write can
/// lose a packet, so don't race it in `select!` against other work.
#[derive(Debug)]
pub struct EventLoop {
    state: ClientState<Reply>,
    connector: Connector,
    requests: mpsc::Receiver<Command>,
    requests_open: bool,
    conn: Option<Conn>,
    events: VecDeque<Event>,
    /// Reconnect attempts that failed since the last accepted connection.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
    stopped: bool,
}

impl EventLoop {
    pub(crate) fn new(
        options: MqttOptions,
        connector: Connector,
        requests: mpsc::Receiver<Command>,
    ) -> Self {
        EventLoop {
            state: ClientState::new(options),
            connector,
            requests,
            requests_open: true,
            conn: None,
            events: VecDeque::new(),
            failures: 0,
            retry_at: None,
            stopped: false,
        }
    }

    /// The next event. `None` once the loop has stopped: after a requested disconnect, or
    /// after a lost connection when reconnecting is off or cannot help (refused credentials).
    pub async fn poll(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.stopped {
                return None;
            }
            if self.conn.is_some() {
                self.step().await;
            } else {
                self.connect().await;
            }
        }
    }

    /// The events as a `Stream`, for callers that prefer combinators to a `poll` loop. It
    /// ends when [`poll`](Self::poll) would return `None`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Event> + Send {
        futures_util::stream::unfold(self, |mut ev| async move {
            let event = ev.poll().await?;
            Some((event, ev))
        })
    }

    fn accepting(&self) -> bool {
        // Packet ids are 16 bits: the backlog must leave free ones, whatever the options say.
        let cap = self.state.options().request_capacity.min(MAX_BACKLOG);
        self.requests_open && self.state.backlog() < cap
    }

    fn on_command(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(c) => self.state.handle_request(now(), c.request, c.reply),
            // Every handle is gone; incoming messages still flow.
            None => self.requests_open = false,
        }
    }

    async fn connect(&mut self) {
        if let Some(at) = self.retry_at {
            let accepting = self.accepting();
            tokio::select! {
                _ = tokio::time::sleep_until(at) => self.retry_at = None,
                cmd = self.requests.recv(), if accepting => self.on_command(cmd),
            }
            // A disconnect requested while waiting ends the loop here.
            self.apply_outputs_offline();
            return;
        }
        let timeout = self.state.options().connect_timeout;
        let io = match tokio::time::timeout(timeout, self.connector.connect()).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return self.lost(e),
            Err(_) => {
                return self.lost(ConnectionError::Io(std::sync::Arc::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection attempt timed out",
                ))))
            }
        };
        let connect = self.state.start_connection(now());
        let mut conn = Conn {
            io,
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
        };
        if let Err(e) = thingmq_codec::encode(&connect, self.version(), &mut conn.write) {
            return self.lost(ConnectionError::Config(format!(
                "cannot encode CONNECT: {e}"
            )));
        }
        self.conn = Some(conn);
        if let Err(e) = self.write_out().await {
            self.lost(e);
        }
    }

    fn version(&self) -> ProtocolVersion {
        self.state.options().version
    }

    /// One turn while connected: write what the state wants sent, then wait for bytes, a
    /// request or a deadline.
    async fn step(&mut self) {
        if let Err(e) = self.write_out().await {
            return self.lost(e);
        }
        // Events the outputs produced go to the caller before we wait again.
        if self.conn.is_none() || !self.events.is_empty() {
            return;
        }
        let deadline = self.state.next_deadline();
        let accepting = self.accepting();
        let conn = self.conn.as_mut().expect("connected");
        let read = tokio::select! {
            r = conn.io.read_buf(&mut conn.read) => r,
            cmd = self.requests.recv(), if accepting => {
                self.on_command(cmd);
                return;
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                if let Err(e) = self.state.handle_timeout(now()) {
                    self.lost(e);
                }
                return;
            }
        };
        match read {
            Ok(0) => self.lost(ConnectionError::Closed),
            Ok(_) => {
                if let Err(e) = self.decode_all() {
                    // Send the DISCONNECT the state queued, if the socket still takes it.
                    let _ = self.write_out().await;
                    self.lost(e);
                }
            }
            Err(e) => self.lost(e.into()),
        }
    }

    fn decode_all(&mut self) -> Result<(), ConnectionError> {
        let max = self
            .state
            .options()
            .max_packet_size
            .map_or(u32::MAX, |m| m.get());
        let version = self.version();
        loop {
            let conn = self.conn.as_mut().expect("connected");
            let Some(packet) = thingmq_codec::decode(&mut conn.read, version, max)? else {
                return Ok(());
            };
            self.state.handle_packet(now(), packet)?;
        }
    }

    /// Applies the state's outputs: packets are encoded and written, events queued, requests
    /// answered. `Close` shuts the connection down and stops the loop.
    async fn write_out(&mut self) -> Result<(), ConnectionError> {
        let version = self.version();
        let mut close = false;
        while let Some(out) = self.state.poll_output() {
            match out {
                Output::Send(p) => {
                    let conn = self.conn.as_mut().expect("sending needs a connection");
                    if let Err(e) = thingmq_codec::encode(&p, version, &mut conn.write) {
                        tracing::warn!("cannot encode {p:?}: {e}");
                    }
                }
                Output::Event(e) => {
                    if matches!(e, Event::Connected { .. }) {
                        self.failures = 0;
                    }
                    self.events.push_back(e);
                }
                Output::Done { token, result } => {
                    // The caller may have stopped waiting; nothing to do then.
                    let _ = token.send(result);
                }
                Output::Close => close = true,
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            if !conn.write.is_empty() {
                conn.io.write_all(&conn.write).await?;
                conn.write.clear();
                conn.io.flush().await?;
            }
            if close {
                // The peer may already be gone; the DISCONNECT is written or it is not.
                let _ = conn.io.shutdown().await;
            }
        }
        if close {
            self.conn = None;
            self.state.connection_lost();
            self.events.push_back(Event::Disconnected { error: None });
            self.stop();
        }
        Ok(())
    }

    /// Outputs produced while there is no connection (requests failing validation, or a
    /// disconnect request).
    fn apply_outputs_offline(&mut self) {
        let mut close = false;
        while let Some(out) = self.state.poll_output() {
            match out {
                Output::Send(_) => {}
                Output::Event(e) => self.events.push_back(e),
                Output::Done { token, result } => {
                    let _ = token.send(result);
                }
                Output::Close => close = true,
            }
        }
        if close {
            self.events.push_back(Event::Disconnected { error: None });
            self.stop();
        }
    }

    fn lost(&mut self, error: ConnectionError) {
        tracing::debug!("connection lost: {error}");
        self.conn = None;
        self.state.connection_lost();
        // Requests the state answered before the failure (e.g. a QoS 0 send) still complete.
        self.apply_outputs_offline();
        let reconnect = self.state.options().reconnect;
        match reconnect {
            Some(policy) if !error.is_permanent() => {
                let delay = policy.delay(self.failures);
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(tokio::time::Instant::now() + delay);
            }
            _ => self.stop(),
        }
        self.events
            .push_back(Event::Disconnected { error: Some(error) });
    }

    /// No more connections: pending requests are answered with `Closed` (their senders are
    /// dropped) and new ones are refused.
    fn stop(&mut self) {
        self.stopped = true;
        self.state.abandon();
        self.requests.close();
        while self.requests.try_recv().is_ok() {}
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
