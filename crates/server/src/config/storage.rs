//! The `[storage]` section: which store keeps sessions, queues and retained messages, and
//! when its writes reach the disk (`SyncPolicy`, see docs/durability.md).

use super::{invalid, raw, ConfigError};
use std::path::PathBuf;
use std::time::Duration;

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

/// Default `storage.data_dir`, relative to the config file's directory.
pub const DEFAULT_DATA_DIR: &str = "data";

/// The `[storage]` section; `None` for `backend = "none"`.
pub(super) fn validate_storage(s: raw::Storage) -> Result<Option<StorageConfig>, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

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
}
