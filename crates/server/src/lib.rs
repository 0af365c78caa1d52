//! The thingmq server: where the pure broker core meets I/O.
//!
//! [`Server::start`] binds every listener of a [`Config`] and returns a [`ServerHandle`] with
//! the bound addresses (port 0 picks a free port, which tests use). Inside: one accept loop
//! per listener (`listener`), the TLS and WebSocket handshakes of each connection
//! (`transport`), a CONNECT phase per connection (`connection`), and one task per
//! session (`session_task`) that owns a `thingmq_broker::session::Session`. Shared state —
//! router, retained messages, session registry, metrics — is in `broker`.

pub mod access;
pub mod admin;
mod broker;
pub mod config;
mod connection;
mod control;
mod hibernate;
mod inbox;
mod listener;
pub mod metrics;
mod persist;
mod rate;
mod session_task;
mod sys;
mod timers;
mod transport;

pub use config::{Config, ConfigError};
pub use sys::{CLIENT_EVENTS, VERSION};

use broker::Broker;
use listener::ListenerTask;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

/// Bytes an in-process link buffers each way before its writer waits for the reader.
const LOCAL_LINK_BUFFER: usize = 64 * 1024;

/// How long shutdown waits for sessions to send their last packets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The password file or ACL could not be loaded.
    #[error("{0}")]
    Auth(#[from] thingmq_auth::AuthError),
    /// The store could not be opened or read.
    #[error("{0}")]
    Store(#[from] thingmq_store::StoreError),
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The hibernation poll thread could not be started (`limits.hibernate_after_ms`).
    #[error("cannot start the hibernation poll thread (set limits.hibernate_after_ms = 0 to do without): {0}")]
    Hibernation(std::io::Error),
}

/// A thingmq server.
#[derive(Debug)]
pub struct Server;

/// Opens in-process links to a server; see [`ServerHandle::local_linker`].
#[derive(Debug, Clone)]
pub struct LocalLinker {
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    alive: Option<mpsc::WeakSender<()>>,
    connect_timeout: Duration,
}

impl LocalLinker {
    /// A new in-process MQTT connection (send CONNECT first).
    pub fn connect(&self) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(LOCAL_LINK_BUFFER);
        let alive = self.alive.as_ref().and_then(mpsc::WeakSender::upgrade);
        let Some(alive) = alive.filter(|_| !*self.shutdown.borrow()) else {
            // Shut down: the stream reads EOF at once.
            return theirs;
        };
        let origin = connection::Origin {
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            loopback_listener: true,
            internal: true,
            // No listener; internal links are trusted past the access rules anyway.
            listener: usize::MAX,
        };
        let conn = transport::Upgraded {
            stream: Box::new(ours),
            peer_identity: None,
        };
        tokio::spawn(connection::handshake(
            self.broker.clone(),
            conn,
            origin,
            listener::Slots::default(),
            self.connect_timeout,
            self.shutdown.clone(),
            alive,
        ));
        theirs
    }
}

/// A running server: its bound addresses, and the way to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    alive: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
    broker: Arc<Broker>,
    connect_timeout: Duration,
    /// The listeners as configured, for reloading their certificates.
    listeners: Vec<config::ListenerConfig>,
}

/// A handle dropped without [`ServerHandle::shutdown`] stops the server too (without waiting):
/// its watch channel closes, which stops the listeners, and the sessions are told here.
impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.broker.stop_sessions();
        if let Some(d) = &self.broker.dormitory {
            d.close();
        }
    }
}

impl Server {
    /// Binds every listener and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<ServerHandle, ServerError> {
        let store = config.storage.as_ref().map(persist::open).transpose()?;
        Server::start_on(config, store).await
    }

    /// Like [`Server::start`], with a store the caller opened instead of the one `[storage]`
    /// names: another backend, or one that wraps a backend (the tests inject write failures
    /// this way). Sessions are persisted in it; `[storage]`'s `sync` policy applies (`always`
    /// without a `[storage]` section) and its `data_dir` is not opened.
    pub async fn start_with_store(
        mut config: Config,
        store: Box<dyn thingmq_store::Store>,
    ) -> Result<ServerHandle, ServerError> {
        config.storage.get_or_insert(config::StorageConfig {
            data_dir: None,
            sync: config::SyncPolicy::Always,
        });
        Server::start_on(config, Some(store)).await
    }

    async fn start_on(
        config: Config,
        store: Option<Box<dyn thingmq_store::Store>>,
    ) -> Result<ServerHandle, ServerError> {
        let auth: Vec<access::AuthConfig> = config
            .listeners
            .iter()
            .map(|l| config.auth.with_overrides(&l.auth))
            .collect();
        let access = access::AccessControl::load(&auth)?;
        let mut settings = config.broker.clone();
        settings.durable = config.storage.is_some();
        // Everything stored is loaded before any listener accepts a client.
        let health = Arc::new(metrics::StoreHealth::default());
        let (store, snapshot) = match (store, &config.storage) {
            (Some(mut store), Some(storage)) => {
                let snapshot = store.load()?;
                let clock = persist::WallClock::now();
                let handle = persist::StoreHandle::start(
                    store,
                    storage,
                    snapshot.next_message_id(),
                    clock,
                    health.clone(),
                );
                (Some(Arc::new(handle)), Some((snapshot, clock)))
            }
            _ => (None, None),
        };
        let mut broker = Broker::new(settings, config.limits.outbound_queue, access, store);
        if broker.store.is_some() {
            broker.metrics.store = Some(health);
        }
        broker.listeners = config
            .listeners
            .iter()
            .map(|l| format!("{} {}", l.transport.name(), l.bind).into())
            .collect();
        broker.client_events = config.sys_client_events;
        broker.publish_limits = (
            config.limits.max_publish_rate,
            config.limits.max_publish_bytes_rate,
        );
        if !config.limits.hibernate_after.is_zero() {
            let dormitory = hibernate::Dormitory::start(config.limits.hibernate_after)
                .map_err(ServerError::Hibernation)?;
            broker.dormitory = Some(dormitory);
        }
        let (alive, done) = mpsc::channel(1);
        broker.alive = Some(alive.downgrade());
        let broker = Arc::new(broker);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let global = (config.limits.max_connections > 0)
            .then(|| Arc::new(Semaphore::new(config.limits.max_connections)));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (index, l) in config.listeners.iter().enumerate() {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| ServerError::Bind {
                addr: l.bind,
                source,
            })?;
            tracing::info!(%addr, protocol = l.transport.name(), "MQTT listener ready");
            addrs.push(addr);
            tasks.push(ListenerTask {
                listener,
                index,
                config: l.clone(),
                broker: broker.clone(),
                global: global.clone(),
                connect_timeout: config.limits.connect_timeout,
                shutdown: shutdown_rx.clone(),
                alive: alive.clone(),
            });
        }
        // After every listener is bound: a bind error returns before any session task runs.
        if let Some((snapshot, clock)) = snapshot {
            restore(&broker, snapshot, clock);
        }
        for t in tasks {
            tokio::spawn(t.run());
        }
        tokio::spawn(timers::drive(broker.timers.clone(), shutdown_rx.clone()));
        tokio::spawn(sys::housekeeping(broker.clone(), shutdown_rx.clone()));
        if let Some(every) = config.sys_interval {
            tokio::spawn(sys::run(broker.clone(), every, shutdown_rx.clone()));
        }
        Ok(ServerHandle {
            addrs,
            shutdown: shutdown_tx,
            alive: Some(alive),
            done,
            broker,
            connect_timeout: config.limits.connect_timeout,
            listeners: config.listeners.clone(),
        })
    }
}

impl ServerHandle {
    /// The bound address of each listener, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Reloads the password file and ACL (SIGHUP). Connections stay up and get the new rules;
    /// on error the old rules stay in force and the error is returned (and logged).
    pub fn reload_access(&self) -> Result<(), thingmq_auth::AuthError> {
        match self.broker.reload_access() {
            Ok(()) => {
                tracing::info!("password file and ACL reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the previous rules: {e}");
                Err(e)
            }
        }
    }

    /// Opens an in-process MQTT connection to this server: a byte stream with no socket,
    /// for the platform's own components (the device layer, the web console) to speak
    /// MQTT to the broker like any client. The caller sends CONNECT first, as on a network
    /// connection; no credentials are checked and no ACL applies. The connection ends when
    /// the returned stream is dropped or the server shuts down.
    pub fn connect_local(&self) -> tokio::io::DuplexStream {
        self.local_linker().connect()
    }

    /// A cloneable opener of in-process links ([`ServerHandle::connect_local`]), for
    /// components that reconnect on their own. It does not keep the server alive: after
    /// shutdown its links read end-of-stream at once.
    pub fn local_linker(&self) -> LocalLinker {
        LocalLinker {
            broker: self.broker.clone(),
            shutdown: self.shutdown.subscribe(),
            alive: self.alive.as_ref().map(mpsc::Sender::downgrade),
            connect_timeout: self.connect_timeout,
        }
    }

    /// The operators' view of the broker (REST API, console).
    pub fn admin(&self) -> admin::Admin {
        admin::Admin::new(self.broker.clone())
    }

    /// Lets another credential source (the device registry) authenticate and authorize its
    /// own clients ahead of the password file and ACL. Connected clients get policies under
    /// the new rules.
    pub fn add_access_hook(&self, hook: Arc<dyn access::AccessHook>) {
        self.broker.add_access_hook(hook);
    }

    /// Tells connected clients' sessions to ask the hooks for their policy again, e.g. after a
    /// device was disabled or its permissions changed.
    pub fn access_changed(&self) {
        self.broker.access_changed();
    }

    /// Reloads the certificate and key files of every `tls` and `wss` listener (SIGHUP).
    /// New connections get the new certificates; existing ones stay up. A listener whose
    /// files fail to load keeps its previous certificates; the errors are returned (and
    /// logged), one per failed listener, naming it and the file.
    pub fn reload_certificates(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (i, (l, addr)) in self.listeners.iter().zip(&self.addrs).enumerate() {
            let Some(tls) = l.transport.tls() else {
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!(%addr, "TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(%addr, "TLS reload failed, keeping the previous certificates: {e}");
                    errors.push(format!("listeners[{i}] ({addr}): {e}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Number of client connections right now.
    pub fn connections(&self) -> u64 {
        metrics::Metrics::get(&self.broker.metrics.connections)
    }

    /// The broker's counters (what `$SYS/broker/...` publishes), for tests and embedders.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.broker.metrics
    }

    /// Stops accepting, sends v5 clients DISCONNECT 0x8B (server shutting down), publishes
    /// wills as for any connection the client did not close, and waits (bounded) for every
    /// session task to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.broker.stop_sessions();
        self.alive = None;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            // Listeners and handshakes first: a handshake may still start a session task.
            let _ = self.done.recv().await;
            self.broker.sessions_gone().await;
        })
        .await;
        // Give the closing writers a moment to flush their last packets.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(store) = self.broker.store.clone() {
            // Writes (and syncs) what the sessions submitted while stopping.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

/// Puts stored retained messages and sessions back: each session gets its task (offline
/// until its client reconnects), its registry entry and its subscriptions in the router.
fn restore(broker: &Arc<Broker>, snapshot: thingmq_store::Snapshot, clock: persist::WallClock) {
    let now = std::time::Instant::now();
    let (retained, sessions) = persist::restore(snapshot, clock);
    let (n_retained, n_sessions) = (retained.len(), sessions.len());
    {
        let mut store = broker.retained.write();
        for m in retained {
            if !m.is_expired(now) {
                store.insert(&m.topic.clone(), m);
            }
        }
    }
    // Every subscription is back in the router before any restored task runs, so a will
    // that fell due while the server was down reaches every restored subscriber.
    let mut tasks = Vec::with_capacity(sessions.len());
    for r in sessions {
        let session = thingmq_broker::session::Session::restore(
            broker.settings.clone(),
            now,
            r.state,
            r.deliveries,
            r.qos2_received,
        );
        let me = broker.new_session_ref(r.client_id.clone());
        {
            let mut router = broker.router.write();
            for s in session.subscriptions() {
                router.subscribe(&s.filter, s.share_group.as_deref(), me.clone(), s.entry);
            }
        }
        let (control, inbox) = control::channel();
        broker.registry.lock().insert(broker::SessionHandle {
            session: me.clone(),
            control,
        });
        let task = session_task::SessionTask::restored(
            broker.clone(),
            me,
            (session, r.username, r.listener),
            inbox,
        );
        tasks.push(task);
    }
    for task in tasks {
        tokio::spawn(session_task::Running::new(task));
    }
    tracing::info!(
        sessions = n_sessions,
        retained = n_retained,
        "restored from the store"
    );
}
