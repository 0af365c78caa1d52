//! Errors of the store layer.

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was written by a format this build does not know.
    #[error("{file}: store format version {found} is not supported (this build reads version {supported}); start with a thingmq that wrote it, or move the file aside to start empty")]
    UnsupportedVersion {
        /// The store file.
        file: String,
        /// The version found.
        found: u64,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// A stored value can't be decoded.
    #[error("{file}: corrupt record in {table}: {detail}; move the file aside to start empty")]
    Corrupt {
        /// The store file.
        file: String,
        /// Which table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The backend failed (I/O error, file damaged, locked by another process…).
    #[error("{file}: {detail}")]
    Backend {
        /// The store file.
        file: String,
        /// The backend's message.
        detail: String,
    },
}
