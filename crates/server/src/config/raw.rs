//! The file as written: a serde mirror of the TOML with `deny_unknown_fields` on every
//! table, so a misspelt key is an error naming it and its line. Every field is optional;
//! defaults come from `Config::default()`, and the sibling modules validate each section.

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
