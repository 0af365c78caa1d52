//! Configuration: a raw serde mirror of the TOML file (unknown keys are errors), then
//! validated, typed [`Config`]. Every key is documented in `docs/config.md`.
//!
//! Here: [`Config`] and its defaults, [`ConfigError`], loading ([`Config::from_file`],
//! [`Config::from_toml`]) and the validation that goes through the sections one by one,
//! stopping at the first error, with the small sections `[log]`, `[auth]` and `[sys]`
//! handled inline. The other sections each have a module:
//!
//! - `raw`: the file as written (serde, `deny_unknown_fields`);
//! - `listener`: `[[listeners]]`, with their TLS and WebSocket settings;
//! - `limits`: `[mqtt]` (into `BrokerSettings`) and `[limits]`;
//! - `http`, `storage`, `things`: the sections of those names.

mod http;
mod limits;
mod listener;
mod raw;
mod storage;
mod things;

pub use http::HttpConfig;
pub use limits::Limits;
pub use listener::{ListenerConfig, ListenerTransport, TlsSettings, WsSettings};
pub use storage::{StorageConfig, SyncPolicy, DEFAULT_DATA_DIR};
pub use things::ThingsConfig;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use thingmq_broker::BrokerSettings;

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
            c.listeners = listener::validate_listeners(listeners)?;
        }
        limits::apply_mqtt(&mut c.broker, file.mqtt.unwrap_or_default())?;
        limits::apply_limits(&mut c.limits, file.limits.unwrap_or_default())?;
        if let Some(a) = file.auth {
            c.auth = crate::access::AuthConfig {
                allow_anonymous: a.allow_anonymous,
                password_file: a.password_file,
                acl_file: a.acl_file,
            };
        }
        if let Some(t) = file.things {
            things::apply_things(&mut c.things, t)?;
        }
        if let Some(h) = file.http {
            http::apply_http(&mut c.http, h)?;
        }
        let sys = file.sys.unwrap_or_default();
        if let Some(secs) = sys.interval_secs {
            c.sys_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        set(&mut c.sys_client_events, sys.client_events);
        if let Some(s) = file.storage {
            c.storage = storage::validate_storage(s)?;
        }
        c.broker.durable = c.storage.is_some();
        Ok(c)
    }
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
    fn a_relative_data_dir_is_next_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thingmq.toml");
        std::fs::write(&path, "[storage]\ndata_dir = \"state\"\n").unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.storage.unwrap().data_dir, Some(dir.path().join("state")));
    }
}
