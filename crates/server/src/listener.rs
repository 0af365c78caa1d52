//! Accept loops: one per listener, with connection caps and back-off on accept errors.

use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::connection::{handshake, refused};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

pub(crate) struct ListenerTask {
    pub(crate) listener: TcpListener,
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
            for sem in [&self.global, &local].into_iter().flatten() {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let wanted = usize::from(self.global.is_some()) + usize::from(local.is_some());
            if permits.len() < wanted {
                refused(&self.broker, peer);
                continue;
            }
            let _ = socket.set_nodelay(true);
            tokio::spawn(handshake(
                self.broker.clone(),
                Box::new(socket),
                peer,
                permits,
                self.connect_timeout,
                self.shutdown.clone(),
                self.alive.clone(),
            ));
        }
    }
}
