//! The [`Store`] trait. No backend is named here: a backend is anything that applies batches
//! of [`Op`]s atomically and gives them back as a [`Snapshot`].

use crate::{Op, Snapshot, StoreError};

/// Durable broker state.
///
/// The broker's store task owns the store and calls it from one thread: batches from many
/// sessions are applied together (group commit), so `apply` is called far less often than
/// there are operations.
pub trait Store: Send + std::fmt::Debug + 'static {
    /// Applies `ops` in order as one atomic batch: after a crash, either all of them or none
    /// are found. With `sync` the batch is on stable storage when this returns; without, it
    /// is visible to `load` in this process and made durable by a later [`Store::sync`] or
    /// synced batch.
    fn apply(&mut self, ops: &[Op], sync: bool) -> Result<(), StoreError>;

    /// Makes every batch applied so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Reads everything stored.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
}
