//! The in-memory backend: the reference semantics of every [`Op`], used by tests.

use crate::records::{EntryRecord, MessageRecord, Op, SessionRecord, SessionSnapshot, Snapshot};
use crate::{Store, StoreError};
use bytestring::ByteString;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A store that keeps everything in memory. Clones share nothing.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    sessions: BTreeMap<ByteString, SessionRecord>,
    /// Message and the number of entries referencing it.
    messages: HashMap<u64, (MessageRecord, usize)>,
    entries: BTreeMap<(ByteString, u64), EntryRecord>,
    qos2: BTreeSet<(ByteString, u16)>,
    retained: BTreeMap<ByteString, MessageRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn release(&mut self, message_id: u64) {
        if let Some((_, refs)) = self.messages.get_mut(&message_id) {
            *refs -= 1;
            if *refs == 0 {
                self.messages.remove(&message_id);
            }
        }
    }

    fn apply_one(&mut self, op: &Op) {
        match op {
            Op::PutSession { client_id, record } => {
                self.sessions.insert(client_id.clone(), record.clone());
            }
            Op::DeleteSession { client_id } => {
                self.sessions.remove(client_id);
                let ids: Vec<u64> = self
                    .entries
                    .range((client_id.clone(), 0)..=(client_id.clone(), u64::MAX))
                    .map(|((_, id), _)| *id)
                    .collect();
                for id in ids {
                    self.entries.remove(&(client_id.clone(), id));
                    self.release(id);
                }
                self.qos2.retain(|(c, _)| c != client_id);
            }
            Op::PutMessage { id, record } => {
                self.messages.entry(*id).or_insert((record.clone(), 0));
            }
            Op::PutEntry {
                client_id,
                message_id,
                entry,
            } => {
                let key = (client_id.clone(), *message_id);
                if self.entries.contains_key(&key) {
                    self.entries.insert(key, entry.clone());
                } else if let Some((_, refs)) = self.messages.get_mut(message_id) {
                    *refs += 1;
                    self.entries.insert(key, entry.clone());
                }
            }
            Op::UpdateEntry {
                client_id,
                message_id,
                packet_id,
                state,
            } => {
                if let Some(e) = self.entries.get_mut(&(client_id.clone(), *message_id)) {
                    e.packet_id = Some(*packet_id);
                    e.state = *state;
                }
            }
            Op::DeleteEntry {
                client_id,
                message_id,
            } => {
                if self
                    .entries
                    .remove(&(client_id.clone(), *message_id))
                    .is_some()
                {
                    self.release(*message_id);
                }
            }
            Op::PutQos2 {
                client_id,
                packet_id,
            } => {
                self.qos2.insert((client_id.clone(), *packet_id));
            }
            Op::DeleteQos2 {
                client_id,
                packet_id,
            } => {
                self.qos2.remove(&(client_id.clone(), *packet_id));
            }
            Op::PutRetained { topic, record } => {
                self.retained.insert(topic.clone(), record.clone());
            }
            Op::DeleteRetained { topic } => {
                self.retained.remove(topic);
            }
        }
    }

    /// Drops messages no entry references (a batch that stored a message but no entry).
    fn collect_garbage(&mut self) {
        self.messages.retain(|_, (_, refs)| *refs > 0);
    }
}

impl Store for MemoryStore {
    fn apply(&mut self, ops: &[Op], _sync: bool) -> Result<(), StoreError> {
        for op in ops {
            self.apply_one(op);
        }
        self.collect_garbage();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut sessions = BTreeMap::new();
        for (client_id, record) in &self.sessions {
            sessions.insert(
                client_id.clone(),
                SessionSnapshot {
                    record: record.clone(),
                    entries: Vec::new(),
                    qos2_received: Vec::new(),
                },
            );
        }
        for ((client_id, id), entry) in &self.entries {
            if let Some(s) = sessions.get_mut(client_id) {
                s.entries.push((*id, entry.clone()));
            }
        }
        for (client_id, packet_id) in &self.qos2 {
            if let Some(s) = sessions.get_mut(client_id) {
                s.qos2_received.push(*packet_id);
            }
        }
        Ok(Snapshot {
            messages: self
                .messages
                .iter()
                .map(|(id, (m, _))| (*id, m.clone()))
                .collect(),
            sessions,
            retained: self.retained.clone(),
        })
    }
}
