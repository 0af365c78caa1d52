//! What `thingmq pub` and `thingmq sub` share: the connection flags (named as in
//! mosquitto_pub/mosquitto_sub), the `--url` parser, and connecting with a clear error.

use anyhow::{bail, Context};
use bytestring::ByteString;
use std::path::PathBuf;
use std::time::Duration;
use thingmq_client::codec::{LastWill, WillProperties};
use thingmq_client::{
    Client, Event, EventLoop, MqttOptions, ProtocolVersion, QoS, Reconnect, TlsOptions, Transport,
};
use tokio::sync::mpsc;

/// Connection flags common to `pub` and `sub`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnArgs {
    /// Broker host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Broker port [default: 1883, 8883 with TLS].
    #[arg(short = 'p', long)]
    pub(crate) port: Option<u16>,
    /// mqtt://, mqtts://, ws:// or wss://[user[:password]@]host[:port]/path. For mqtt(s) the
    /// path is the topic; for ws(s) it is the WebSocket path (default /mqtt).
    #[arg(short = 'L', long)]
    pub(crate) url: Option<String>,
    /// Client id [default: thingmq-pub-<pid> / thingmq-sub-<pid>].
    #[arg(short = 'i', long = "id")]
    pub(crate) id: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub(crate) password: Option<String>,
    /// Keep-alive in seconds (0 = off).
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub(crate) keep_alive: u16,
    /// MQTT version: 311 (or mqttv311) or 5 (or mqttv5).
    #[arg(short = 'V', long = "protocol-version", default_value = "5", value_parser = parse_version)]
    pub(crate) version: ProtocolVersion,
    /// Disable clean session / clean start: resume the broker's session for this client id
    /// (v5 without -x: a session that never expires).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub(crate) no_clean: bool,
    /// v5 session expiry interval in seconds.
    #[arg(short = 'x', long = "session-expiry-interval")]
    pub(crate) session_expiry: Option<u32>,
    /// CA certificates (PEM) to trust; turns TLS on.
    #[arg(long)]
    pub(crate) cafile: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long)]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Do not check the server's certificate or host name (testing only); turns TLS on.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// v5 user property KEY VALUE (repeatable): on each PUBLISH for `pub`, on CONNECT for `sub`.
    #[arg(short = 'D', long = "user-property", num_args = 2, value_names = ["KEY", "VALUE"])]
    pub(crate) user_property: Vec<String>,
    /// Will topic.
    #[arg(long)]
    pub(crate) will_topic: Option<String>,
    /// Will payload.
    #[arg(long, requires = "will_topic")]
    pub(crate) will_payload: Option<String>,
    /// Will QoS.
    #[arg(long, requires = "will_topic", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) will_qos: u8,
    /// Retain the will.
    #[arg(long, requires = "will_topic")]
    pub(crate) will_retain: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "311" | "mqttv311" | "4" => Ok(ProtocolVersion::V3_1_1),
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        _ => Err(format!("unsupported MQTT version {s:?}: use 311 or 5")),
    }
}

/// Parses a QoS flag value.
pub(crate) fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {s:?}"))
}

/// Where to connect, and what `--url` added.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) transport: Transport,
    /// The topic from an mqtt(s):// URL path.
    pub(crate) topic: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl ConnArgs {
    fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.cafile.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure: self.insecure,
            server_name: None,
        }
    }

    /// The transport from `--url`, or from -h/-p and the TLS flags.
    pub(crate) fn target(&self) -> anyhow::Result<Target> {
        if self.cert.is_some() != self.key.is_some() {
            bail!("--cert and --key go together");
        }
        for f in [&self.cafile, &self.cert, &self.key].into_iter().flatten() {
            std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        }
        match &self.url {
            Some(url) => parse_url(url, self.tls_options()),
            None => {
                let tls = self.cafile.is_some() || self.insecure;
                let host = self.host.clone();
                let transport = if tls {
                    Transport::Tls {
                        host,
                        port: self.port.unwrap_or(8883),
                        tls: self.tls_options(),
                    }
                } else {
                    Transport::Tcp {
                        host,
                        port: self.port.unwrap_or(1883),
                    }
                };
                Ok(Target {
                    transport,
                    topic: None,
                    username: None,
                    password: None,
                })
            }
        }
    }

    /// Session options from the flags (and the URL's credentials).
    pub(crate) fn options(&self, target: &Target, default_id: &str) -> anyhow::Result<MqttOptions> {
        let mut o = MqttOptions::new(self.id.clone().unwrap_or_else(|| default_id.to_owned()));
        o.version = self.version;
        o.keep_alive = Duration::from_secs(self.keep_alive.into());
        o.clean_start = !self.no_clean;
        if self.session_expiry.is_some() && !self.version.is_v5() {
            bail!("-x (session expiry) needs MQTT 5 (-V 5)");
        }
        o.session_expiry_interval = self.session_expiry;
        if self.no_clean && self.version.is_v5() && self.session_expiry.is_none() {
            // As mosquitto_pub/sub: -c without -x means a session that does not expire (a v5
            // session with expiry 0 would end with the connection, defeating -c).
            o.session_expiry_interval = Some(u32::MAX);
        }
        let username = self.username.clone().or(target.username.clone());
        let password = self.password.clone().or(target.password.clone());
        if password.is_some() && username.is_none() && !self.version.is_v5() {
            bail!("a password needs a user name (-u) on MQTT 3.1.1");
        }
        o.username = username.map(ByteString::from);
        o.password = password.map(|p| p.into_bytes().into());
        if let Some(topic) = &self.will_topic {
            thingmq_client::codec::topic::validate_name(topic)
                .map_err(|e| anyhow::anyhow!("invalid will topic {topic:?}: {e}"))?;
            o.will = Some(LastWill {
                topic: topic.as_str().into(),
                payload: self
                    .will_payload
                    .clone()
                    .unwrap_or_default()
                    .into_bytes()
                    .into(),
                qos: QoS::from_u8(self.will_qos).expect("range checked by clap"),
                retain: self.will_retain,
                properties: WillProperties::default(),
            });
        }
        // The CLI tools report a refused or lost first connection instead of retrying.
        o.reconnect = None;
        Ok(o)
    }

    /// `-D KEY VALUE` pairs.
    pub(crate) fn user_properties(&self) -> Vec<(ByteString, ByteString)> {
        self.user_property
            .chunks(2)
            .map(|kv| (kv[0].as_str().into(), kv[1].as_str().into()))
            .collect()
    }
}

fn parse_url(url: &str, tls: TlsOptions) -> anyhow::Result<Target> {
    let bad = |why: &str| anyhow::anyhow!("bad --url {url:?}: {why}");
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (username, password) = match creds {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(c.to_owned()), None),
        },
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p.parse::<u16>().map_err(|_| bad("bad port"))?;
            (h.to_owned(), Some(port))
        }
        _ => (hostport.to_owned(), None),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let topic_of = |path: &str| {
        let t = path.trim_start_matches('/');
        (!t.is_empty()).then(|| t.to_owned())
    };
    let ws_url = |scheme: &str, default_port: u16| {
        let path = if path.is_empty() { "/mqtt" } else { path };
        format!("{scheme}://{host}:{}{path}", port.unwrap_or(default_port))
    };
    let (transport, topic) = match scheme {
        "mqtt" | "tcp" => (
            Transport::Tcp {
                host: host.clone(),
                port: port.unwrap_or(1883),
            },
            topic_of(path),
        ),
        "mqtts" | "ssl" => (
            Transport::Tls {
                host: host.clone(),
                port: port.unwrap_or(8883),
                tls,
            },
            topic_of(path),
        ),
        "ws" => (
            Transport::Ws {
                url: ws_url("ws", 80),
            },
            None,
        ),
        "wss" => (
            Transport::Wss {
                url: ws_url("wss", 443),
                tls,
            },
            None,
        ),
        other => {
            return Err(bad(&format!(
                "unknown scheme {other:?} (mqtt, mqtts, ws, wss)"
            )))
        }
    };
    Ok(Target {
        transport,
        topic,
        username,
        password,
    })
}

/// A running client: the handle, and the events its loop (in its own task) produces.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) events: mpsc::Receiver<Event>,
}

/// Connects and waits for CONNACK; a refusal or failure is an error naming the reason.
pub(crate) async fn connect(options: MqttOptions, transport: Transport) -> anyhow::Result<Session> {
    let timeout = options.connect_timeout + Duration::from_secs(1);
    let (client, event_loop) = Client::new(options, transport);
    let mut events = drive(event_loop);
    let first = tokio::time::timeout(timeout, events.recv())
        .await
        .map_err(|_| anyhow::anyhow!("connection timed out"))?;
    match first {
        Some(Event::Connected { .. }) => Ok(Session { client, events }),
        Some(Event::Disconnected { error: Some(e) }) => Err(e.into()),
        other => bail!("unexpected first event {other:?}"),
    }
}

fn drive(mut event_loop: EventLoop) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(e) = event_loop.poll().await {
            if tx.send(e).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Turns the reconnect policy on (for `sub`, which should survive a broker restart).
pub(crate) fn with_reconnect(mut o: MqttOptions) -> MqttOptions {
    o.reconnect = Some(Reconnect::default());
    o
}

/// A single-threaded runtime: the tools do one thing at a time.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Target {
        parse_url(u, TlsOptions::default()).unwrap()
    }

    #[test]
    fn mqtt_url_gives_credentials_host_port_and_topic() {
        let t = url("mqtt://alice:s3:cret@example.com:1884/a/b");
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("s3:cret"));
        assert_eq!(t.topic.as_deref(), Some("a/b"));
        assert!(
            matches!(t.transport, Transport::Tcp { ref host, port: 1884 } if host == "example.com")
        );
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        assert!(matches!(
            url("mqtt://h").transport,
            Transport::Tcp { port: 1883, .. }
        ));
        assert!(matches!(
            url("mqtts://h").transport,
            Transport::Tls { port: 8883, .. }
        ));
        assert!(
            matches!(url("ws://h").transport, Transport::Ws { ref url } if url == "ws://h:80/mqtt")
        );
        assert!(
            matches!(url("wss://u@h:9/x").transport, Transport::Wss { ref url, .. } if url == "wss://h:9/x")
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (u, why) in [
            ("localhost:1883", "no scheme"),
            ("mqtt://:1883", "no host"),
            ("mqtt://h:99999", "bad port"),
            ("http://h", "unknown scheme"),
        ] {
            let e = parse_url(u, TlsOptions::default()).unwrap_err().to_string();
            assert!(e.contains(why), "{u}: {e}");
        }
    }
}
