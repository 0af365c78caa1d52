//! The embedded on-disk backend: one redb file (`thingmq.redb` in the data directory).
//!
//! redb writes copy-on-write B-trees and flips between two checksummed commit slots, so a
//! crash (even mid-commit) leaves the last completed commit readable; there is no partial
//! batch to recover from. Messages carry a reference count next to them so a message lives
//! exactly as long as a session's queue entry points at it.

use crate::encoding::{self, DecodeFailure};
use crate::records::{MessageRecord, Op, SessionSnapshot, Snapshot};
use crate::{Store, StoreError, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use redb::{Database, Durability, ReadableTable, TableDefinition, TableError, WriteTransaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Number of entries referencing each message.
const REFS: TableDefinition<u64, u64> = TableDefinition::new("refs");
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
const QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// The file name inside the data directory.
pub(crate) const FILE_NAME: &str = "thingmq.redb";

/// The on-disk store.
pub struct DiskStore {
    db: Database,
    path: PathBuf,
    /// The file's format version when it was older than ours and stamped with ours at open.
    upgraded_from: Option<u64>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, creating the directory. Refuses a file written
    /// by another format version, and a damaged file, naming it.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let file = path.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
            file: dir.display().to_string(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        // redb asserts (panics) on some damaged files, e.g. one shorter than its header
        // says; that is a damaged store to refuse, not a reason to abort.
        let opened = std::panic::catch_unwind(|| Database::create(&path));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                return Err(StoreError::Backend {
                    file,
                    detail: format!("cannot open the store: {e}"),
                })
            }
            Err(_) => {
                return Err(StoreError::Backend {
                    file,
                    detail: "the store file is damaged (truncated or overwritten); move it aside to start empty".into(),
                })
            }
        };
        let mut store = DiskStore {
            db,
            path,
            upgraded_from: None,
        };
        store.check_version()?;
        Ok(store)
    }

    /// The format version the file had when [`DiskStore::open`] upgraded it to
    /// [`FORMAT_VERSION`] (for the caller to log), `None` when it needed no upgrade.
    pub fn upgraded_from(&self) -> Option<u64> {
        self.upgraded_from
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> String {
        self.path.display().to_string()
    }

    fn backend(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            file: self.file(),
            detail: e.to_string(),
        }
    }

    fn decode_error(&self, table: &'static str, f: DecodeFailure) -> StoreError {
        match f {
            DecodeFailure::Version(v) => StoreError::UnsupportedVersion {
                file: self.file(),
                found: u64::from(v),
                supported: FORMAT_VERSION,
            },
            DecodeFailure::Corrupt(detail) => StoreError::Corrupt {
                file: self.file(),
                table,
                detail: detail.to_owned(),
            },
        }
    }

    /// Stamps a new file with our version; refuses a file of another.
    fn check_version(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.backend(e))?;
        let found = {
            let mut meta = tx.open_table(META).map_err(|e| self.backend(e))?;
            let found = meta
                .get("format")
                .map_err(|e| self.backend(e))?
                .map(|v| v.value());
            if found.is_none() {
                meta.insert("format", u64::from(FORMAT_VERSION))
                    .map_err(|e| self.backend(e))?;
            }
            found
        };
        match found {
            None => {}
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            // An older format we still read: its values keep their own version byte and are
            // read as such; the file is stamped with ours so an older build, which would
            // not understand the values we write from now on, refuses it.
            Some(v)
                if (u64::from(OLDEST_FORMAT_VERSION)..u64::from(FORMAT_VERSION)).contains(&v) =>
            {
                let mut meta = tx.open_table(META).map_err(|e| self.backend(e))?;
                meta.insert("format", u64::from(FORMAT_VERSION))
                    .map_err(|e| self.backend(e))?;
                self.upgraded_from = Some(v);
            }
            Some(found) => {
                return Err(StoreError::UnsupportedVersion {
                    file: self.file(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
        for name in [SESSIONS, RETAINED] {
            tx.open_table(name).map_err(|e| self.backend(e))?;
        }
        tx.open_table(MESSAGES).map_err(|e| self.backend(e))?;
        tx.open_table(REFS).map_err(|e| self.backend(e))?;
        tx.open_table(ENTRIES).map_err(|e| self.backend(e))?;
        tx.open_table(QOS2).map_err(|e| self.backend(e))?;
        tx.commit().map_err(|e| self.backend(e))
    }

    // redb's own error type, returned once per batch on the store thread: not a hot path.
    #[allow(clippy::result_large_err)]
    fn write(&self, tx: &WriteTransaction, ops: &[Op]) -> Result<(), redb::Error> {
        let mut sessions = tx.open_table(SESSIONS)?;
        let mut messages = tx.open_table(MESSAGES)?;
        let mut refs = tx.open_table(REFS)?;
        let mut entries = tx.open_table(ENTRIES)?;
        let mut qos2 = tx.open_table(QOS2)?;
        let mut retained = tx.open_table(RETAINED)?;
        let mut stored: Vec<u64> = Vec::new();
        #[allow(clippy::result_large_err)]
        let release = |refs: &mut redb::Table<u64, u64>,
                       messages: &mut redb::Table<u64, &[u8]>,
                       id: u64|
         -> Result<(), redb::Error> {
            let n = refs.get(id)?.map_or(0, |v| v.value());
            if n <= 1 {
                refs.remove(id)?;
                messages.remove(id)?;
            } else {
                refs.insert(id, n - 1)?;
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::PutSession { client_id, record } => {
                    sessions.insert(&**client_id, encoding::session(record).as_slice())?;
                }
                Op::DeleteSession { client_id } => {
                    sessions.remove(&**client_id)?;
                    let ids: Vec<u64> = entries
                        .range((&**client_id, 0)..=(&**client_id, u64::MAX))?
                        .map(|r| r.map(|(k, _)| k.value().1))
                        .collect::<Result<_, _>>()?;
                    for id in ids {
                        entries.remove((&**client_id, id))?;
                        release(&mut refs, &mut messages, id)?;
                    }
                    let ids: Vec<u16> = qos2
                        .range((&**client_id, 0)..=(&**client_id, u16::MAX))?
                        .map(|r| r.map(|(k, _)| k.value().1))
                        .collect::<Result<_, _>>()?;
                    for id in ids {
                        qos2.remove((&**client_id, id))?;
                    }
                }
                Op::PutMessage { id, record } => {
                    if messages.get(*id)?.is_none() {
                        messages.insert(*id, encoding::message(record).as_slice())?;
                        stored.push(*id);
                    }
                }
                Op::PutEntry {
                    client_id,
                    message_id,
                    entry,
                } => {
                    let key = (&**client_id, *message_id);
                    let value = encoding::entry(entry);
                    if entries.get(key)?.is_some() {
                        entries.insert(key, value.as_slice())?;
                    } else if messages.get(*message_id)?.is_some() {
                        let n = refs.get(*message_id)?.map_or(0, |v| v.value());
                        refs.insert(*message_id, n + 1)?;
                        entries.insert(key, value.as_slice())?;
                    }
                }
                Op::UpdateEntry {
                    client_id,
                    message_id,
                    packet_id,
                    state,
                } => {
                    let key = (&**client_id, *message_id);
                    let old = entries.get(key)?.map(|v| v.value().to_vec());
                    if let Some(old) = old {
                        // An entry we can't read is replaced rather than kept half-updated.
                        if let Ok(mut e) = encoding::decode_entry(&old) {
                            e.packet_id = Some(*packet_id);
                            e.state = *state;
                            entries.insert(key, encoding::entry(&e).as_slice())?;
                        }
                    }
                }
                Op::DeleteEntry {
                    client_id,
                    message_id,
                } => {
                    if entries.remove((&**client_id, *message_id))?.is_some() {
                        release(&mut refs, &mut messages, *message_id)?;
                    }
                }
                Op::PutQos2 {
                    client_id,
                    packet_id,
                } => {
                    qos2.insert((&**client_id, *packet_id), ())?;
                }
                Op::DeleteQos2 {
                    client_id,
                    packet_id,
                } => {
                    qos2.remove((&**client_id, *packet_id))?;
                }
                Op::PutRetained { topic, record } => {
                    retained.insert(&**topic, encoding::message(record).as_slice())?;
                }
                Op::DeleteRetained { topic } => {
                    retained.remove(&**topic)?;
                }
            }
        }
        // A message stored in this batch that no entry took is not kept.
        for id in stored {
            if refs.get(id)?.is_none() {
                messages.remove(id)?;
            }
        }
        Ok(())
    }

    fn read(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.backend(e))?;
        let be = |e: TableError| self.backend(e);
        let st = |e: redb::StorageError| self.backend(e);
        let mut snap = Snapshot::default();
        let sessions = tx.open_table(SESSIONS).map_err(be)?;
        for r in sessions.iter().map_err(st)? {
            let (k, v) = r.map_err(st)?;
            let record = encoding::decode_session(v.value())
                .map_err(|f| self.decode_error("sessions", f))?;
            snap.sessions.insert(
                k.value().into(),
                SessionSnapshot {
                    record,
                    entries: Vec::new(),
                    qos2_received: Vec::new(),
                },
            );
        }
        let entries = tx.open_table(ENTRIES).map_err(be)?;
        for r in entries.iter().map_err(st)? {
            let (k, v) = r.map_err(st)?;
            let (client_id, id) = k.value();
            let entry =
                encoding::decode_entry(v.value()).map_err(|f| self.decode_error("entries", f))?;
            if let Some(s) = snap.sessions.get_mut(client_id) {
                s.entries.push((id, entry));
            }
        }
        let qos2 = tx.open_table(QOS2).map_err(be)?;
        for r in qos2.iter().map_err(st)? {
            let (k, _) = r.map_err(st)?;
            let (client_id, id) = k.value();
            if let Some(s) = snap.sessions.get_mut(client_id) {
                s.qos2_received.push(id);
            }
        }
        let messages = tx.open_table(MESSAGES).map_err(be)?;
        for r in messages.iter().map_err(st)? {
            let (k, v) = r.map_err(st)?;
            let m: MessageRecord = encoding::decode_message(v.value())
                .map_err(|f| self.decode_error("messages", f))?;
            snap.messages.insert(k.value(), m);
        }
        let retained = tx.open_table(RETAINED).map_err(be)?;
        let mut out = BTreeMap::new();
        for r in retained.iter().map_err(st)? {
            let (k, v) = r.map_err(st)?;
            let m = encoding::decode_message(v.value())
                .map_err(|f| self.decode_error("retained", f))?;
            out.insert(k.value().into(), m);
        }
        snap.retained = out;
        Ok(snap)
    }
}

impl Store for DiskStore {
    fn apply(&mut self, ops: &[Op], sync: bool) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.backend(e))?;
        // Eventual: written to the OS (survives the process being killed), fsynced later.
        tx.set_durability(if sync {
            Durability::Immediate
        } else {
            Durability::Eventual
        });
        self.write(&tx, ops).map_err(|e| self.backend(e))?;
        tx.commit().map_err(|e| self.backend(e))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.backend(e))?;
        tx.set_durability(Durability::Immediate);
        tx.commit().map_err(|e| self.backend(e))
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.read()
    }
}
