//! Durable state of a thingmq broker.
//!
//! - [`Store`] (in [`store`]) is the trait every backend implements. It knows records and
//!   operations only, no backend: sessions are keys ([`SessionRecord`]), each QoS 1/2 message
//!   is stored once ([`MessageRecord`]) and sessions reference it by id through their queue
//!   entries ([`EntryRecord`]), so a replicated key-value/stream backend can implement it too.
//! - [`MemoryStore`] keeps everything in memory (tests, `backend = "memory"`).
//! - [`DiskStore`] is the embedded default: one redb file in the data directory.
//!
//! Every stored value starts with a format version byte ([`FORMAT_VERSION`]); a value or a
//! file of another version is refused with [`StoreError::UnsupportedVersion`], never misread.

mod encoding;
mod error;
mod memory;
mod records;
mod redb_store;
pub mod store;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use records::{
    EntryRecord, EntryState, MessageRecord, Op, SessionRecord, SessionSnapshot, Snapshot,
};
pub use redb_store::DiskStore;
pub use store::Store;

/// Version of the record format written by this build.
pub const FORMAT_VERSION: u8 = 1;

#[cfg(test)]
mod suite;
