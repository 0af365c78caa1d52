//! Accept loops: one per listener, with connection caps and back-off on accept errors.

use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::connection::{connect_timed_out, handshake, refused, Origin};
use crate::metrics::Metrics;
use crate::rate::should_log;
use crate::transport::{proxy, Acceptor};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub(crate) struct ListenerTask {
    pub(crate) listener: TcpListener,
    /// Position in the config's listeners.
    pub(crate) index: usize,
    pub(crate) config: ListenerConfig,
    pub(crate) broker: Arc<Broker>,
    /// Global connection cap shared by all listeners.
    pub(crate) global: Option<Arc<Semaphore>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) alive: mpsc::Sender<()>,
}

impl ListenerTask {
    pub(crate) async fn run(mut self) {
        let local = (self.config.max_connections > 0)
            .then(|| Arc::new(Semaphore::new(self.config.max_connections)));
        let acceptor = Acceptor::new(&self.config.transport);
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.changed() => return,
                r = self.listener.accept() => r,
            };
            let (socket, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some to be freed.
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let mut permits = Vec::new();
            let mut full = None;
            for (sem, key) in [
                (&self.global, "limits.max_connections"),
                (&local, "listeners.max_connections"),
            ] {
                let Some(sem) = sem else { continue };
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => {
                        full = Some(key);
                        break;
                    }
                }
            }
            if let Some(key) = full {
                refused(&self.broker, peer, key);
                continue;
            }
            tokio::spawn(connect(
                acceptor.clone(),
                socket,
                self.config.proxy_protocol,
                Origin {
                    peer,
                    listener: self.index,
                    loopback_listener: self.config.bind.ip().is_loopback(),
                    internal: false,
                },
                permits,
                self.connect_timeout,
                self.broker.clone(),
                self.shutdown.clone(),
                self.alive.clone(),
            ));
        }
    }
}

/// One connection's start, in its own task: the transport's handshakes (TLS, WebSocket
/// upgrade), then the MQTT CONNECT, all within one connect timeout.
#[allow(clippy::too_many_arguments)] // each is a distinct piece of the connection's context
async fn connect(
    acceptor: Acceptor,
    mut socket: TcpStream,
    proxy_protocol: bool,
    mut origin: Origin,
    permits: Vec<OwnedSemaphorePermit>,
    connect_timeout: Duration,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let deadline = Instant::now() + connect_timeout;
    if proxy_protocol {
        let header = tokio::select! {
            r = tokio::time::timeout_at(deadline, proxy::read_header(&mut socket)) => r,
            _ = shutdown.changed() => return,
        };
        match header {
            Ok(Ok(Ok(header))) => origin = origin.behind_proxy(header.source),
            Ok(Ok(Err(e))) => {
                Metrics::add(&broker.metrics.protocol_errors, 1);
                if let Some(more) = should_log(&broker.limit_logs.handshake_failed) {
                    tracing::info!(peer = %origin.peer, also_failed_since_last_line = more, "closing connection: {e} (listener has proxy_protocol = true)");
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %origin.peer, "connection lost in the PROXY header: {e}");
                return;
            }
            Err(_) => {
                connect_timed_out(&broker, origin.peer, "no complete PROXY header");
                return;
            }
        }
    }
    let peer = origin.peer;
    let upgraded = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.upgrade(socket)) => r,
        _ = shutdown.changed() => return,
    };
    let conn = match upgraded {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            Metrics::add(&broker.metrics.handshake_failures, 1);
            if let Some(more) = should_log(&broker.limit_logs.handshake_failed) {
                tracing::info!(%peer, also_failed_since_last_line = more, "transport handshake failed: {e}");
            }
            return;
        }
        Err(_) => {
            connect_timed_out(&broker, peer, "no complete TLS/WebSocket handshake");
            return;
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    handshake(broker, conn, origin, permits, remaining, shutdown, alive).await;
}
