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
    EntryRecord, EntryState, ListenerRef, MessageRecord, Op, SessionRecord, SessionSnapshot,
    Snapshot,
};
pub use redb_store::DiskStore;
pub use store::Store;

/// Version of the record format written by this build.
///
/// - 1: the first format.
/// - 2: sessions record the listener of their last connection ([`ListenerRef`]), queue
///   entries the `$share` group they came through. Values of format 1 are still read (the
///   new fields take their "unknown" value); a file of format 1 is stamped 2 when opened,
///   so a build that reads only format 1 refuses it instead of misreading it.
pub const FORMAT_VERSION: u8 = 2;

/// The oldest record format this build still reads.
pub const OLDEST_FORMAT_VERSION: u8 = 1;

#[cfg(test)]
mod suite;
