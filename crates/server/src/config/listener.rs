//! `[[listeners]]`: each listener's address, connection cap, PROXY protocol flag and auth
//! overrides, and its transport: TCP, TLS (certificates loaded and checked here, and
//! reloadable), WebSocket, or both. A key that belongs to another protocol is an error.

use super::{invalid, raw, ConfigError};
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The `[[listeners]]` tables, each validated under its `listeners[i]` key.
pub(super) fn validate_listeners(
    listeners: Vec<raw::Listener>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if listeners.is_empty() {
        return Err(invalid("listeners", "at least one listener is needed"));
    }
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| validate_listener(&format!("listeners[{i}]"), l))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
