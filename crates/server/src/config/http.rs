//! The `[http]` section: where the REST API, `/metrics` and the web console listen, and the
//! rule that an HTTP listener off loopback needs API keys or console users.

use super::{invalid, raw, ConfigError};
use std::net::SocketAddr;

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

/// The `[http]` section over the defaults in `http`.
pub(super) fn apply_http(http: &mut HttpConfig, h: raw::Http) -> Result<(), ConfigError> {
    if let Some(bind) = h.bind {
        http.bind = Some(bind.parse().map_err(|_| {
            invalid(
                "http.bind",
                format!("`{bind}` is not an address like 127.0.0.1:8080"),
            )
        })?);
    }
    if h.enabled == Some(false) {
        http.bind = None;
    }
    http.api_keys_file = h.api_keys_file;
    http.users_file = h.users_file;
    http.secure_cookie = h.secure_cookie.unwrap_or(false);
    if let Some(bind) = http.bind {
        if !bind.ip().is_loopback() && http.api_keys_file.is_none() && http.users_file.is_none() {
            return Err(invalid(
                "http.api_keys_file",
                "http.api_keys_file or http.users_file is required when http.bind is not a loopback address (the API would be open to the network)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
}
