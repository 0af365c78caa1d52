//! `[things]`: the device layer's [`ThingsConfig`], its defaults, and the checks on its
//! keys (database URL scheme, timeout and interval ranges).

use super::{invalid, raw, set, ConfigError};
use std::time::Duration;

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

/// The `[things]` section over the defaults in `things`.
pub(super) fn apply_things(things: &mut ThingsConfig, t: raw::Things) -> Result<(), ConfigError> {
    set(&mut things.enabled, t.enabled);
    if let Some(url) = t.database_url {
        let known = ["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"];
        if !known.iter().any(|p| url.starts_with(p)) {
            return Err(invalid(
                "things.database_url",
                "must start with sqlite:, postgres:, postgresql: or mysql:",
            ));
        }
        things.database_url = Some(url);
    }
    if t.retention_days == Some(0) {
        return Err(invalid("things.retention_days", "must be at least 1"));
    }
    things.retention_days = t.retention_days;
    if let Some(ms) = t.call_timeout_ms {
        if !(100..=60_000).contains(&ms) {
            return Err(invalid("things.call_timeout_ms", "must be 100..=60000"));
        }
        things.call_timeout = Duration::from_millis(ms);
    }
    set(&mut things.max_uplinks_per_sec, t.max_uplinks_per_sec);
    if t.uplink_burst == Some(0) {
        return Err(invalid("things.uplink_burst", "must be at least 1"));
    }
    set(&mut things.uplink_burst, t.uplink_burst);
    if let Some(ms) = t.shadow_save_interval_ms {
        if !(200..=3_600_000).contains(&ms) {
            return Err(invalid(
                "things.shadow_save_interval_ms",
                "must be 200..=3600000",
            ));
        }
        things.shadow_save_interval = Duration::from_millis(ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
}
