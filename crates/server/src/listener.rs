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
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// The connection caps a listener's connections count against: the global one and the
/// listener's own.
#[derive(Debug, Default)]
pub(crate) struct Caps {
    global: Option<Arc<Semaphore>>,
    local: Option<Semaphore>,
}

impl Caps {
    pub(crate) fn new(global: Option<Arc<Semaphore>>, local: usize) -> Arc<Caps> {
        Arc::new(Caps {
            global,
            local: (local > 0).then(|| Semaphore::new(local)),
        })
    }
}

/// A connection's place under its listener's [`Caps`], given back when it is dropped with
/// the connection. One pointer: tokio permits in a boxed slice were a 48-byte allocation
/// of every connection, and two semaphores inline made a hibernating session a size class
/// larger.
#[derive(Debug, Default)]
pub(crate) struct Slots(Option<Arc<Caps>>);

impl Slots {
    /// A place in each cap that is set; `Err(key)` names the config key of the cap that is
    /// full (a place taken in the global cap is then given back).
    fn take(caps: &Arc<Caps>) -> Result<Slots, &'static str> {
        if let Some(global) = &caps.global {
            global
                .try_acquire()
                .map_err(|_| "limits.max_connections")?
                .forget();
        }
        if let Some(local) = &caps.local {
            match local.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => {
                    if let Some(global) = &caps.global {
                        global.add_permits(1);
                    }
                    return Err("listeners.max_connections");
                }
            }
        }
        Ok(Slots(Some(caps.clone())))
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let Some(caps) = &self.0 {
            for sem in [caps.global.as_deref(), caps.local.as_ref()]
                .into_iter()
                .flatten()
            {
                sem.add_permits(1);
            }
        }
    }
}

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
        let caps = Caps::new(self.global.clone(), self.config.max_connections);
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
            let permits = match Slots::take(&caps) {
                Ok(slots) => slots,
                Err(key) => {
                    refused(&self.broker, peer, key);
                    continue;
                }
            };
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
    permits: Slots,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's handshake runs in a task whose cell holds this future: tokio
    /// allocates it and copies the future in for every connect (and again as it completes).
    /// With the TLS and WebSocket handshakes inline it was ~10 KB (the 12 KiB size class)
    /// for a plain TCP connect as well.
    #[tokio::test]
    async fn the_handshake_task_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = TcpStream::connect(addr).await.unwrap();
        let broker = Arc::new(Broker::new(
            thingmq_broker::BrokerSettings::default(),
            1000,
            crate::access::AccessControl::load(&[]).unwrap(),
            None,
        ));
        let (_stop, shutdown) = watch::channel(false);
        let (alive, _done) = mpsc::channel(1);
        let future = connect(
            Acceptor::new(&crate::config::ListenerTransport::Tcp),
            socket,
            false,
            Origin {
                peer: addr,
                listener: 0,
                loopback_listener: true,
                internal: false,
            },
            Slots::take(&Caps::new(None, 0)).unwrap(),
            Duration::from_secs(10),
            broker,
            shutdown,
            alive,
        );
        let size = std::mem::size_of_val(&future);
        println!("handshake task future: {size} bytes");
        assert!(size <= 4096, "the handshake future is {size} bytes");
    }

    fn available(caps: &Caps) -> (usize, usize) {
        (
            caps.global.as_ref().unwrap().available_permits(),
            caps.local.as_ref().unwrap().available_permits(),
        )
    }

    #[test]
    fn a_connection_takes_a_place_in_each_cap_and_gives_it_back_when_dropped() {
        let caps = Caps::new(Some(Arc::new(Semaphore::new(2))), 1);
        let first = Slots::take(&caps).unwrap();
        assert_eq!(available(&caps), (1, 0));
        drop(first);
        assert_eq!(available(&caps), (2, 1));
    }

    #[test]
    fn a_full_cap_is_named_and_the_place_taken_in_the_other_is_given_back() {
        let global = Arc::new(Semaphore::new(5));
        let caps = Caps::new(Some(global.clone()), 1);
        let _held = Slots::take(&caps).unwrap();
        assert_eq!(Slots::take(&caps).unwrap_err(), "listeners.max_connections");
        assert_eq!(available(&caps), (4, 0));
        let other_listener = Caps::new(Some(global), 0);
        let _more: Vec<_> = (0..4)
            .map(|_| Slots::take(&other_listener).unwrap())
            .collect();
        assert_eq!(
            Slots::take(&other_listener).unwrap_err(),
            "limits.max_connections"
        );
        assert!(Slots::take(&Caps::new(None, 0)).is_ok());
    }
}
