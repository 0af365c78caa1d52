//! Configuration: a raw serde mirror of the TOML file (unknown keys are errors), then
//! validated, typed [`Config`]. Every key is documented in `docs/config.md`.

use parking_lot::RwLock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thingmq_broker::BrokerSettings;
use thingmq_codec::QoS;

/// A configuration error, naming the file, the key and (when known) the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (the message has line and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A key has a value out of its allowed range.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key path, e.g. `mqtt.max_qos`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Validated configuration of a thingmq server.
#[derive(Debug, Clone)]
pub struct Config {
    /// MQTT listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol limits for the broker core.
    pub broker: BrokerSettings,
    /// Connection-level limits.
    pub limits: Limits,
    /// `$SYS` publication interval; `None` disables it.
    pub sys_interval: Option<Duration>,
    /// Publish client connected/disconnected events under `$SYS/brokers/clients/`.
    pub sys_client_events: bool,
    /// Log filter (tracing `EnvFilter` syntax), overridden by `RUST_LOG`.
    pub log_level: String,
    /// Authentication and authorization.
    pub auth: crate::access::AuthConfig,
    /// The HTTP listener for the REST API and metrics.
    pub http: HttpConfig,
    /// Where sessions and retained messages are kept; `None` keeps them in memory only,
    /// without the store task (no `[storage]` section).
    pub storage: Option<StorageConfig>,
    /// The device layer.
    pub things: ThingsConfig,
}

/// The `[things]` section: the device layer (products, devices, thing models). The server
/// only carries these settings; the binary starts the layer with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingsConfig {
    /// Run the device layer.
    pub enabled: bool,
    /// `sqlite://…`, `postgres://…` or `mysql://…`; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Delete device history older than this many days; `None` keeps it.
    pub retention_days: Option<u32>,
    /// How long a sync call to a device (property set/get, sync service) waits.
    pub call_timeout: Duration,
    /// Messages per second one device may send the platform (Alink answers 429 beyond); 0
    /// turns the limit off.
    pub max_uplinks_per_sec: u32,
    /// How many messages a device may send at once after a quiet spell.
    pub uplink_burst: u32,
    /// How often changed device shadows are written to the database.
    pub shadow_save_interval: Duration,
}

impl Default for ThingsConfig {
    fn default() -> Self {
        ThingsConfig {
            enabled: true,
            database_url: None,
            retention_days: None,
            call_timeout: Duration::from_secs(8),
            // Alibaba's per-device quota for uplink messages.
            max_uplinks_per_sec: 30,
            uplink_burst: 60,
            shadow_save_interval: Duration::from_secs(1),
        }
    }
}

/// The `[http]` section: where the REST API and `/metrics` listen, and who may use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to bind; `None` turns HTTP off.
    pub bind: Option<SocketAddr>,
    /// API keys (`thingmq api-key` adds them); this or `users_file` is required unless
    /// `bind` is a loopback address.
    pub api_keys_file: Option<std::path::PathBuf>,
    /// Console users (`thingmq console-user` adds them), who log in with a password.
    pub users_file: Option<std::path::PathBuf>,
    /// Mark the console's session cookie `Secure`: set it when browsers reach the console
    /// over HTTPS through a proxy (this server speaks plain HTTP).
    pub secure_cookie: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            api_keys_file: None,
            users_file: None,
            secure_cookie: false,
        }
    }
}

/// The `[storage]` section: durability of sessions, queues and retained messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Directory of the on-disk store; `None` is the in-memory backend (`backend = "memory"`).
    pub data_dir: Option<PathBuf>,
    /// When writes are forced to stable storage.
    pub sync: SyncPolicy,
}

impl StorageConfig {
    /// The on-disk store in `dir`, syncing every acknowledged write (`serve --data-dir`).
    pub fn disk(dir: PathBuf) -> StorageConfig {
        StorageConfig {
            data_dir: Some(dir),
            sync: SyncPolicy::Always,
        }
    }
}

/// `storage.sync`: what an acknowledgement promises (see docs/durability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before PUBACK/PUBREC (group commit).
    Always,
    /// Written to the OS before the acknowledgement, fsync every interval.
    Interval(Duration),
    /// Written to the OS before the acknowledgement; the OS decides when it reaches the disk.
    Never,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Connections this listener accepts at once (0 = no limit besides the global one).
    pub max_connections: usize,
    /// What carries MQTT on this listener.
    pub transport: ListenerTransport,
    /// This listener's own `allow_anonymous`, `password_file`, `acl_file`; unset keys are
    /// taken from `[auth]`.
    pub auth: crate::access::AuthConfig,
    /// Connections start with a PROXY protocol v1 or v2 header (the listener is behind
    /// HAProxy, nginx, …); one without a valid header is closed.
    pub proxy_protocol: bool,
}

impl ListenerConfig {
    /// A plain TCP listener with no connection limit of its own (`serve --bind`).
    pub fn tcp(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            max_connections: 0,
            transport: ListenerTransport::Tcp,
            auth: Default::default(),
            proxy_protocol: false,
        }
    }
}

/// What carries MQTT on a listener (`protocol` in the file).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListenerTransport {
    /// MQTT directly over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls(TlsSettings),
    /// MQTT over WebSocket (binary frames).
    Ws(WsSettings),
    /// MQTT over WebSocket over TLS.
    Wss(TlsSettings, WsSettings),
}

impl ListenerTransport {
    /// The TLS settings of a `tls` or `wss` listener.
    pub fn tls(&self) -> Option<&TlsSettings> {
        match self {
            ListenerTransport::Tls(t) | ListenerTransport::Wss(t, _) => Some(t),
            ListenerTransport::Tcp | ListenerTransport::Ws(_) => None,
        }
    }

    /// The `protocol` name: `tcp`, `tls`, `ws` or `wss`.
    pub fn name(&self) -> &'static str {
        match self {
            ListenerTransport::Tcp => "tcp",
            ListenerTransport::Tls(_) => "tls",
            ListenerTransport::Ws(_) => "ws",
            ListenerTransport::Wss(..) => "wss",
        }
    }
}

/// TLS settings of a `tls` or `wss` listener, with the certificates already loaded (so a
/// broken file stops the server at start, not at the first client). Built only from a config
/// file, which is why the fields are read through methods.
#[derive(Clone)]
pub struct TlsSettings {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    require_client_cert: bool,
    use_identity_as_username: bool,
    /// The certificates in force. Shared by every clone of these settings (the listener's
    /// acceptor takes a snapshot per connection), replaced as a whole by [`Self::reload`].
    pub(crate) server_config: Arc<RwLock<Arc<tokio_rustls::rustls::ServerConfig>>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .field("require_client_cert", &self.require_client_cert)
            .field("use_identity_as_username", &self.use_identity_as_username)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The PEM certificate chain presented to clients.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }
    /// The PEM private key of the certificate.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
    /// CAs that sign client certificates; set means clients are asked for one (mutual TLS).
    pub fn client_ca_file(&self) -> Option<&Path> {
        self.client_ca_file.as_deref()
    }
    /// Whether a client without a valid certificate is refused (only with a client CA).
    pub fn require_client_cert(&self) -> bool {
        self.require_client_cert
    }
    /// Whether the client certificate's subject CN is the client's MQTT username.
    pub fn use_identity_as_username(&self) -> bool {
        self.use_identity_as_username
    }

    /// Reads the certificate, key and client CA files again and, if they load, makes new
    /// connections use them. Connections already up keep the session they negotiated. On
    /// error nothing changes and the message names the key and the file.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = crate::transport::server_config(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
            self.require_client_cert,
        )
        .map_err(|e| format!("{}: {}", e.key, e.message))?;
        *self.server_config.write() = fresh;
        Ok(())
    }

    /// The certificates in force now.
    pub(crate) fn current(&self) -> Arc<tokio_rustls::rustls::ServerConfig> {
        self.server_config.read().clone()
    }
}

/// WebSocket settings of a `ws` or `wss` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The HTTP path that upgrades to MQTT; other paths get 404.
    pub path: String,
    /// Browser origins allowed to connect; `None` allows any. A request without an `Origin`
    /// header (not from a browser) is always allowed: the check protects browser users from
    /// other sites, not the broker from clients.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            path: "/mqtt".into(),
            allowed_origins: None,
        }
    }
}

/// Limits enforced by connection tasks.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection that has not sent CONNECT within this time is closed.
    pub connect_timeout: Duration,
    /// Connections accepted at once over all listeners (0 = no limit).
    pub max_connections: usize,
    /// Messages that may wait for a busy connection before QoS 0 ones are dropped.
    pub outbound_queue: usize,
    /// PUBLISH packets per second one connection may send (0 = no limit). Enforced by not
    /// reading the socket, never by buffering.
    pub max_publish_rate: u64,
    /// PUBLISH bytes (whole packets) per second one connection may send (0 = no limit).
    pub max_publish_bytes_rate: u64,
    /// A session with nothing to do for this long hibernates: it stops being a task until a
    /// packet, a message or a deadline comes (plain TCP connections and offline sessions
    /// only). Zero: never.
    pub hibernate_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // MQTT on 1883 and, for the web console's live pages, MQTT over WebSocket on 8083.
            listeners: vec![
                ListenerConfig::tcp(SocketAddr::from(([127, 0, 0, 1], 1883))),
                ListenerConfig {
                    bind: SocketAddr::from(([127, 0, 0, 1], 8083)),
                    max_connections: 0,
                    transport: ListenerTransport::Ws(WsSettings::default()),
                    auth: Default::default(),
                    proxy_protocol: false,
                },
            ],
            broker: BrokerSettings::default(),
            limits: Limits {
                connect_timeout: Duration::from_secs(10),
                max_connections: 0,
                outbound_queue: 1000,
                max_publish_rate: 0,
                max_publish_bytes_rate: 0,
                hibernate_after: Duration::from_secs(5),
            },
            sys_interval: Some(Duration::from_secs(10)),
            sys_client_events: true,
            log_level: "info".into(),
            auth: Default::default(),
            http: HttpConfig::default(),
            storage: None,
            things: ThingsConfig::default(),
        }
    }
}

mod raw {
    //! The file as written. Every field optional; defaults come from `Config::default()`.
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File {
        pub(super) log: Option<Log>,
        pub(super) listeners: Option<Vec<Listener>>,
        pub(super) mqtt: Option<Mqtt>,
        pub(super) limits: Option<Limits>,
        pub(super) sys: Option<Sys>,
        pub(super) auth: Option<Auth>,
        pub(super) http: Option<Http>,
        pub(super) storage: Option<Storage>,
        pub(super) things: Option<Things>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Things {
        pub(super) enabled: Option<bool>,
        pub(super) database_url: Option<String>,
        pub(super) retention_days: Option<u32>,
        pub(super) call_timeout_ms: Option<u64>,
        pub(super) max_uplinks_per_sec: Option<u32>,
        pub(super) uplink_burst: Option<u32>,
        pub(super) shadow_save_interval_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Http {
        pub(super) enabled: Option<bool>,
        pub(super) bind: Option<String>,
        pub(super) api_keys_file: Option<std::path::PathBuf>,
        pub(super) users_file: Option<std::path::PathBuf>,
        pub(super) secure_cookie: Option<bool>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Storage {
        pub(super) backend: Option<String>,
        pub(super) data_dir: Option<std::path::PathBuf>,
        pub(super) sync: Option<String>,
        pub(super) sync_interval_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Auth {
        pub(super) allow_anonymous: Option<bool>,
        pub(super) password_file: Option<std::path::PathBuf>,
        pub(super) acl_file: Option<std::path::PathBuf>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Log {
        pub(super) level: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Listener {
        pub(super) bind: String,
        pub(super) protocol: Option<String>,
        pub(super) max_connections: Option<usize>,
        pub(super) cert_file: Option<std::path::PathBuf>,
        pub(super) key_file: Option<std::path::PathBuf>,
        pub(super) client_ca_file: Option<std::path::PathBuf>,
        pub(super) require_client_cert: Option<bool>,
        pub(super) use_identity_as_username: Option<bool>,
        pub(super) path: Option<String>,
        pub(super) allowed_origins: Option<Vec<String>>,
        pub(super) proxy_protocol: Option<bool>,
        pub(super) allow_anonymous: Option<bool>,
        pub(super) password_file: Option<std::path::PathBuf>,
        pub(super) acl_file: Option<std::path::PathBuf>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Mqtt {
        pub(super) max_keep_alive: Option<u16>,
        pub(super) receive_maximum: Option<u16>,
        pub(super) max_inflight: Option<u16>,
        pub(super) max_packet_size: Option<u32>,
        pub(super) max_queued_messages: Option<usize>,
        pub(super) max_queued_bytes: Option<usize>,
        pub(super) queue_qos0: Option<bool>,
        pub(super) max_qos: Option<u8>,
        pub(super) retain_available: Option<bool>,
        pub(super) wildcard_subscriptions: Option<bool>,
        pub(super) shared_subscriptions: Option<bool>,
        pub(super) subscription_identifiers: Option<bool>,
        pub(super) topic_alias_maximum: Option<u16>,
        pub(super) max_session_expiry: Option<u32>,
        pub(super) max_client_id_len: Option<usize>,
        pub(super) max_topic_levels: Option<usize>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Limits {
        pub(super) connect_timeout_ms: Option<u64>,
        pub(super) max_connections: Option<usize>,
        pub(super) outbound_queue: Option<usize>,
        pub(super) max_publish_rate: Option<u64>,
        pub(super) max_publish_bytes_rate: Option<u64>,
        pub(super) hibernate_after_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Sys {
        pub(super) interval_secs: Option<u64>,
        pub(super) client_events: Option<bool>,
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut c = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        // A relative data directory is where the config file is, not wherever the server
        // happens to be started from.
        if let Some(dir) = c.storage.as_mut().and_then(|s| s.data_dir.as_mut()) {
            if dir.is_relative() {
                if let Some(parent) = path.parent() {
                    *dir = parent.join(&*dir);
                }
            }
        }
        Ok(c)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })?;
        Config::validate(file)
    }

    fn validate(file: raw::File) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(level) = file.log.and_then(|l| l.level) {
            tracing_level_ok(&level).map_err(|m| invalid("log.level", m))?;
            c.log_level = level;
        }
        if let Some(listeners) = file.listeners {
            if listeners.is_empty() {
                return Err(invalid("listeners", "at least one listener is needed"));
            }
            c.listeners = listeners
                .into_iter()
                .enumerate()
                .map(|(i, l)| validate_listener(&format!("listeners[{i}]"), l))
                .collect::<Result<_, _>>()?;
        }
        let m = file.mqtt.unwrap_or_default();
        let b = &mut c.broker;
        set(&mut b.max_keep_alive, m.max_keep_alive);
        if let Some(r) = m.receive_maximum {
            if r == 0 {
                return Err(invalid("mqtt.receive_maximum", "must be 1..=65535"));
            }
            b.receive_maximum = r;
        }
        if let Some(r) = m.max_inflight {
            if r == 0 {
                return Err(invalid("mqtt.max_inflight", "must be 1..=65535"));
            }
            b.max_inflight = r;
        }
        if let Some(size) = m.max_packet_size {
            if !(16..=268_435_460).contains(&size) {
                return Err(invalid(
                    "mqtt.max_packet_size",
                    "must be between 16 and 268435460 bytes",
                ));
            }
            b.max_packet_size = size;
        }
        if let Some(n) = m.max_queued_messages {
            if n == 0 {
                return Err(invalid("mqtt.max_queued_messages", "must be at least 1"));
            }
            b.max_queued_messages = n;
        }
        set(&mut b.max_queued_bytes, m.max_queued_bytes);
        set(&mut b.queue_qos0, m.queue_qos0);
        if let Some(q) = m.max_qos {
            b.max_qos =
                QoS::from_u8(q).ok_or_else(|| invalid("mqtt.max_qos", "must be 0, 1 or 2"))?;
        }
        set(&mut b.retain_available, m.retain_available);
        set(&mut b.wildcard_subscriptions, m.wildcard_subscriptions);
        set(&mut b.shared_subscriptions, m.shared_subscriptions);
        set(&mut b.subscription_identifiers, m.subscription_identifiers);
        set(&mut b.topic_alias_maximum, m.topic_alias_maximum);
        set(&mut b.max_session_expiry, m.max_session_expiry);
        if let Some(len) = m.max_client_id_len {
            if !(23..=65535).contains(&len) {
                return Err(invalid("mqtt.max_client_id_len", "must be 23..=65535"));
            }
            b.max_client_id_len = len;
        }
        if let Some(levels) = m.max_topic_levels {
            if !(1..=1024).contains(&levels) {
                return Err(invalid("mqtt.max_topic_levels", "must be 1..=1024"));
            }
            b.max_topic_levels = levels;
        }
        let l = file.limits.unwrap_or_default();
        if let Some(ms) = l.connect_timeout_ms {
            if ms == 0 {
                return Err(invalid("limits.connect_timeout_ms", "must be above 0"));
            }
            c.limits.connect_timeout = Duration::from_millis(ms);
        }
        set(&mut c.limits.max_connections, l.max_connections);
        if let Some(q) = l.outbound_queue {
            if q == 0 {
                return Err(invalid("limits.outbound_queue", "must be above 0"));
            }
            c.limits.outbound_queue = q;
        }
        set(&mut c.limits.max_publish_rate, l.max_publish_rate);
        if let Some(ms) = l.hibernate_after_ms {
            c.limits.hibernate_after = Duration::from_millis(ms);
        }
        set(
            &mut c.limits.max_publish_bytes_rate,
            l.max_publish_bytes_rate,
        );
        if let Some(a) = file.auth {
            c.auth = crate::access::AuthConfig {
                allow_anonymous: a.allow_anonymous,
                password_file: a.password_file,
                acl_file: a.acl_file,
            };
        }
        if let Some(t) = file.things {
            set(&mut c.things.enabled, t.enabled);
            if let Some(url) = t.database_url {
                let known = ["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"];
                if !known.iter().any(|p| url.starts_with(p)) {
                    return Err(invalid(
                        "things.database_url",
                        "must start with sqlite:, postgres:, postgresql: or mysql:",
                    ));
                }
                c.things.database_url = Some(url);
            }
            if t.retention_days == Some(0) {
                return Err(invalid("things.retention_days", "must be at least 1"));
            }
            c.things.retention_days = t.retention_days;
            if let Some(ms) = t.call_timeout_ms {
                if !(100..=60_000).contains(&ms) {
                    return Err(invalid("things.call_timeout_ms", "must be 100..=60000"));
                }
                c.things.call_timeout = Duration::from_millis(ms);
            }
            set(&mut c.things.max_uplinks_per_sec, t.max_uplinks_per_sec);
            if t.uplink_burst == Some(0) {
                return Err(invalid("things.uplink_burst", "must be at least 1"));
            }
            set(&mut c.things.uplink_burst, t.uplink_burst);
            if let Some(ms) = t.shadow_save_interval_ms {
                if !(200..=3_600_000).contains(&ms) {
                    return Err(invalid(
                        "things.shadow_save_interval_ms",
                        "must be 200..=3600000",
                    ));
                }
                c.things.shadow_save_interval = Duration::from_millis(ms);
            }
        }
        if let Some(h) = file.http {
            if let Some(bind) = h.bind {
                c.http.bind = Some(bind.parse().map_err(|_| {
                    invalid(
                        "http.bind",
                        format!("`{bind}` is not an address like 127.0.0.1:8080"),
                    )
                })?);
            }
            if h.enabled == Some(false) {
                c.http.bind = None;
            }
            c.http.api_keys_file = h.api_keys_file;
            c.http.users_file = h.users_file;
            c.http.secure_cookie = h.secure_cookie.unwrap_or(false);
            if let Some(bind) = c.http.bind {
                if !bind.ip().is_loopback()
                    && c.http.api_keys_file.is_none()
                    && c.http.users_file.is_none()
                {
                    return Err(invalid(
                        "http.api_keys_file",
                        "http.api_keys_file or http.users_file is required when http.bind is not a loopback address (the API would be open to the network)",
                    ));
                }
            }
        }
        let sys = file.sys.unwrap_or_default();
        if let Some(secs) = sys.interval_secs {
            c.sys_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        set(&mut c.sys_client_events, sys.client_events);
        if let Some(s) = file.storage {
            c.storage = validate_storage(s)?;
        }
        c.broker.durable = c.storage.is_some();
        Ok(c)
    }
}

/// Default `storage.data_dir`, relative to the config file's directory.
pub const DEFAULT_DATA_DIR: &str = "data";

fn validate_storage(s: raw::Storage) -> Result<Option<StorageConfig>, ConfigError> {
    let interval = match s.sync_interval_ms {
        Some(0) => return Err(invalid("storage.sync_interval_ms", "must be above 0")),
        Some(ms) => Duration::from_millis(ms),
        None => Duration::from_millis(1000),
    };
    let sync = match s.sync.as_deref().unwrap_or("always") {
        "always" => SyncPolicy::Always,
        "interval" => SyncPolicy::Interval(interval),
        "never" => SyncPolicy::Never,
        other => {
            return Err(invalid(
                "storage.sync",
                format!("`{other}` is not one of always, interval, never"),
            ))
        }
    };
    let data_dir = s
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    match s.backend.as_deref().unwrap_or("disk") {
        "disk" => Ok(Some(StorageConfig {
            data_dir: Some(data_dir),
            sync,
        })),
        "memory" => Ok(Some(StorageConfig {
            data_dir: None,
            sync,
        })),
        "none" => Ok(None),
        other => Err(invalid(
            "storage.backend",
            format!("`{other}` is not one of disk, memory, none"),
        )),
    }
}

fn validate_listener(key: &str, l: raw::Listener) -> Result<ListenerConfig, ConfigError> {
    let bind = l.bind.parse().map_err(|_| {
        invalid(
            &format!("{key}.bind"),
            format!("`{}` is not an address like 127.0.0.1:1883", l.bind),
        )
    })?;
    let protocol = l.protocol.as_deref().unwrap_or("tcp");
    let (tls, ws) = match protocol {
        "tcp" => (false, false),
        "tls" => (true, false),
        "ws" => (false, true),
        "wss" => (true, true),
        other => {
            return Err(invalid(
                &format!("{key}.protocol"),
                format!("`{other}` is not one of tcp, tls, ws, wss"),
            ))
        }
    };
    // A key that would be ignored is an error: it likely means the wrong protocol.
    let misplaced = |name: &str, present: bool, wanted: &str| {
        if present {
            Err(invalid(
                &format!("{key}.{name}"),
                format!("only for {wanted} listeners, not `{protocol}`"),
            ))
        } else {
            Ok(())
        }
    };
    if !tls {
        misplaced("cert_file", l.cert_file.is_some(), "tls and wss")?;
        misplaced("key_file", l.key_file.is_some(), "tls and wss")?;
        misplaced("client_ca_file", l.client_ca_file.is_some(), "tls and wss")?;
        misplaced(
            "require_client_cert",
            l.require_client_cert.is_some(),
            "tls and wss",
        )?;
        misplaced(
            "use_identity_as_username",
            l.use_identity_as_username.is_some(),
            "tls and wss",
        )?;
    }
    if !ws {
        misplaced("path", l.path.is_some(), "ws and wss")?;
        misplaced("allowed_origins", l.allowed_origins.is_some(), "ws and wss")?;
    }
    let ws_settings = || -> Result<WsSettings, ConfigError> {
        let mut w = WsSettings::default();
        if let Some(path) = &l.path {
            if !path.starts_with('/') {
                return Err(invalid(&format!("{key}.path"), "must start with `/`"));
            }
            w.path = path.clone();
        }
        w.allowed_origins = l.allowed_origins.clone();
        Ok(w)
    };
    let transport = match (tls, ws) {
        (false, false) => ListenerTransport::Tcp,
        (false, true) => ListenerTransport::Ws(ws_settings()?),
        (true, false) => ListenerTransport::Tls(tls_settings(key, &l)?),
        (true, true) => ListenerTransport::Wss(tls_settings(key, &l)?, ws_settings()?),
    };
    Ok(ListenerConfig {
        bind,
        max_connections: l.max_connections.unwrap_or(0),
        transport,
        auth: crate::access::AuthConfig {
            allow_anonymous: l.allow_anonymous,
            password_file: l.password_file,
            acl_file: l.acl_file,
        },
        proxy_protocol: l.proxy_protocol.unwrap_or(false),
    })
}

fn tls_settings(key: &str, l: &raw::Listener) -> Result<TlsSettings, ConfigError> {
    let required = |name: &str, v: &Option<PathBuf>| {
        v.clone().ok_or_else(|| {
            invalid(
                &format!("{key}.{name}"),
                "required for tls and wss listeners",
            )
        })
    };
    let cert_file = required("cert_file", &l.cert_file)?;
    let key_file = required("key_file", &l.key_file)?;
    let has_ca = l.client_ca_file.is_some();
    let require_client_cert = l.require_client_cert.unwrap_or(has_ca);
    if require_client_cert && !has_ca {
        return Err(invalid(
            &format!("{key}.require_client_cert"),
            "needs `client_ca_file` to check client certificates against",
        ));
    }
    let use_identity_as_username = l.use_identity_as_username.unwrap_or(false);
    if use_identity_as_username && !require_client_cert {
        return Err(invalid(
            &format!("{key}.use_identity_as_username"),
            "needs `client_ca_file` and `require_client_cert = true`",
        ));
    }
    let server_config = crate::transport::server_config(
        &cert_file,
        &key_file,
        l.client_ca_file.as_deref(),
        require_client_cert,
    )
    .map_err(|e| invalid(&format!("{key}.{}", e.key), e.message))?;
    Ok(TlsSettings {
        cert_file,
        key_file,
        client_ca_file: l.client_ca_file.clone(),
        require_client_cert,
        use_identity_as_username,
        server_config: Arc::new(RwLock::new(server_config)),
    })
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn tracing_level_ok(level: &str) -> Result<(), String> {
    let known = ["trace", "debug", "info", "warn", "error", "off"];
    if known.contains(&level.to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(format!("`{level}` is not one of {}", known.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert_eq!(c.listeners[1].bind.to_string(), "127.0.0.1:8083");
        assert!(
            matches!(&c.listeners[1].transport, ListenerTransport::Ws(ws) if ws.path == "/mqtt")
        );
        assert_eq!(c.broker, BrokerSettings::default());
    }

    #[test]
    fn http_defaults_to_loopback_and_needs_keys_elsewhere() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http.bind.unwrap().to_string(), "127.0.0.1:8080");
        let c = Config::from_toml("[http]\nenabled = false\n").unwrap();
        assert_eq!(c.http.bind, None);
        let err = Config::from_toml("[http]\nbind = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(err.to_string().contains("http.api_keys_file"), "{err}");
        let c =
            Config::from_toml("[http]\nbind = \"0.0.0.0:80\"\napi_keys_file = \"/k\"\n").unwrap();
        assert!(!c.http.secure_cookie);
        let c = Config::from_toml(
            "[http]\nbind = \"0.0.0.0:80\"\nusers_file = \"/u\"\nsecure_cookie = true\n",
        )
        .unwrap();
        assert_eq!(
            c.http.users_file.as_deref(),
            Some(std::path::Path::new("/u"))
        );
        assert!(c.http.secure_cookie);
        assert_eq!(c.http.bind.unwrap().port(), 80);
        let err = Config::from_toml("[http]\nbind = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("http.bind"), "{err}");
    }

    #[test]
    fn things_uplink_limit_is_read_and_checked() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(
            (c.things.max_uplinks_per_sec, c.things.uplink_burst),
            (30, 60)
        );
        let c = Config::from_toml("[things]\nmax_uplinks_per_sec = 0\nuplink_burst = 5\n").unwrap();
        assert_eq!(
            (c.things.max_uplinks_per_sec, c.things.uplink_burst),
            (0, 5)
        );
        let err = Config::from_toml("[things]\nuplink_burst = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `things.uplink_burst`: must be at least 1"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key_and_line() {
        let err = Config::from_toml("[mqtt]\nmax_qos = 1\nmax_qoss = 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_qoss"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let err = Config::from_toml("[mqtt]\nmax_qos = 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `mqtt.max_qos`: must be 0, 1 or 2"
        );
        let err = Config::from_toml("[[listeners]]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("listeners[0].bind"));
    }

    #[test]
    fn listener_protocols_and_their_keys() {
        let c = Config::from_toml(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/x\"\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        assert!(matches!(c.listeners[0].transport, ListenerTransport::Tcp));
        let ListenerTransport::Ws(w) = &c.listeners[1].transport else {
            panic!("ws expected");
        };
        assert_eq!(w, &WsSettings::default());
        let ListenerTransport::Ws(w) = &c.listeners[2].transport else {
            panic!("ws expected");
        };
        assert_eq!(w.path, "/x");
        assert_eq!(
            w.allowed_origins,
            Some(vec!["https://a.example".to_string()])
        );

        let err = |toml: &str| Config::from_toml(toml).unwrap_err().to_string();
        let msg = err("[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"quic\"\n");
        assert!(msg.contains("listeners[0].protocol"), "{msg}");
        let msg = err("[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"wss\"\n");
        assert!(msg.contains("listeners[0].cert_file"), "{msg}");
        let msg = err("[[listeners]]\nbind = \"127.0.0.1:0\"\npath = \"/mqtt\"\n");
        assert!(msg.contains("listeners[0].path"), "{msg}");
        let msg =
            err("[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"mqtt\"\n");
        assert!(msg.contains("must start with `/`"), "{msg}");
    }

    #[test]
    fn listener_proxy_protocol_and_auth_overrides_are_read() {
        let c = Config::from_toml(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\nallow_anonymous = false\npassword_file = \"p\"\nacl_file = \"a\"\n[auth]\nacl_file = \"global\"\n",
        )
        .unwrap();
        assert!(!c.listeners[0].proxy_protocol);
        assert_eq!(c.listeners[0].auth, crate::access::AuthConfig::default());
        assert!(c.listeners[1].proxy_protocol);
        let own = c.auth.with_overrides(&c.listeners[1].auth);
        assert_eq!(own.allow_anonymous, Some(false));
        assert_eq!(own.password_file.as_deref(), Some(Path::new("p")));
        assert_eq!(own.acl_file.as_deref(), Some(Path::new("a")));
        let inherited = c.auth.with_overrides(&c.listeners[0].auth);
        assert_eq!(inherited.acl_file.as_deref(), Some(Path::new("global")));
        assert_eq!(inherited.allow_anonymous, None);
    }

    #[test]
    fn settings_are_applied() {
        let c = Config::from_toml(
            "[mqtt]\nmax_qos = 1\nmax_keep_alive = 60\n[limits]\nconnect_timeout_ms = 500\nmax_publish_rate = 20\nmax_publish_bytes_rate = 4096\n[sys]\ninterval_secs = 0\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_publish_rate, 20);
        assert_eq!(c.limits.max_publish_bytes_rate, 4096);
        assert_eq!(c.broker.max_qos, QoS::AtLeastOnce);
        assert_eq!(c.broker.max_keep_alive, 60);
        assert_eq!(c.limits.connect_timeout, Duration::from_millis(500));
        assert!(c.sys_interval.is_none());
    }

    #[test]
    fn storage_section_defaults_to_disk_with_always() {
        let c = Config::from_toml("[storage]\n").unwrap();
        let s = c.storage.unwrap();
        assert_eq!(s.data_dir.as_deref(), Some(Path::new(DEFAULT_DATA_DIR)));
        assert_eq!(s.sync, SyncPolicy::Always);
        assert!(c.broker.durable);
        assert!(Config::from_toml("").unwrap().storage.is_none());
    }

    #[test]
    fn storage_keys_are_checked() {
        let c = Config::from_toml(
            "[storage]\nbackend = \"memory\"\nsync = \"interval\"\nsync_interval_ms = 20\n",
        )
        .unwrap();
        assert_eq!(
            c.storage,
            Some(StorageConfig {
                data_dir: None,
                sync: SyncPolicy::Interval(Duration::from_millis(20))
            })
        );
        let e = Config::from_toml("[storage]\nsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("storage.sync"), "{e}");
        let e = Config::from_toml("[storage]\nbackend = \"tape\"\n").unwrap_err();
        assert!(e.to_string().contains("storage.backend"), "{e}");
        let none = Config::from_toml("[storage]\nbackend = \"none\"\n").unwrap();
        assert!(none.storage.is_none() && !none.broker.durable);
    }

    #[test]
    fn a_relative_data_dir_is_next_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thingmq.toml");
        std::fs::write(&path, "[storage]\ndata_dir = \"state\"\n").unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.storage.unwrap().data_dir, Some(dir.path().join("state")));
    }
}
