//! One test suite, run against every backend: the semantics of [`Op`] are the trait's, not a
//! backend's.

use crate::{EntryRecord, EntryState, MessageRecord, Op, SessionRecord, Store};
use bytes::Bytes;
use bytestring::ByteString;
use std::num::NonZeroU32;
use thingmq_broker::router::SubscriptionEntry;
use thingmq_broker::session::SubscriptionRecord;
use thingmq_codec::{
    LastWill, ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions,
    WillProperties,
};

fn message(topic: &str, payload: &'static [u8]) -> MessageRecord {
    MessageRecord {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            correlation_data: Some(Bytes::from_static(b"c")),
            ..Default::default()
        },
        expires_at_ms: Some(1_700_000_000_000),
    }
}

fn session() -> SessionRecord {
    SessionRecord {
        protocol: ProtocolVersion::V5,
        expiry_interval: 3600,
        expires_at_ms: Some(1_800_000_000_000),
        connected: false,
        will: Some(LastWill {
            topic: "will/t".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                message_expiry_interval: Some(60),
                ..Default::default()
            },
        }),
        will_at_ms: Some(1_750_000_000_000),
        subscriptions: vec![SubscriptionRecord {
            filter: "a/+".into(),
            share_group: Some("g".into()),
            entry: SubscriptionEntry {
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                identifier: NonZeroU32::new(9),
            },
        }],
        next_packet_id: 17,
        username: Some("ann".into()),
        listener: crate::ListenerRef::Listener {
            index: 1,
            address: "tcp 0.0.0.0:1883".into(),
        },
    }
}

fn entry() -> EntryRecord {
    EntryRecord {
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![9],
        packet_id: None,
        state: EntryState::Queued,
        share: Some(("g".into(), "a/+".into())),
    }
}

fn cid(s: &str) -> ByteString {
    s.into()
}

pub(crate) fn session_and_its_queue_round_trip<S: Store>(mut s: S) {
    s.apply(
        &[
            Op::PutSession {
                client_id: cid("c1"),
                record: session(),
            },
            Op::PutMessage {
                id: 5,
                record: message("a/b", b"x"),
            },
            Op::PutEntry {
                client_id: cid("c1"),
                message_id: 5,
                entry: entry(),
            },
            Op::PutQos2 {
                client_id: cid("c1"),
                packet_id: 4,
            },
        ],
        true,
    )
    .unwrap();
    s.apply(
        &[Op::UpdateEntry {
            client_id: cid("c1"),
            message_id: 5,
            packet_id: 3,
            state: EntryState::AwaitingComp,
        }],
        false,
    )
    .unwrap();
    let snap = s.load().unwrap();
    let c1 = &snap.sessions[&cid("c1")];
    assert_eq!(c1.record, session());
    assert_eq!(c1.qos2_received, vec![4]);
    assert_eq!(c1.entries.len(), 1);
    assert_eq!(c1.entries[0].0, 5);
    assert_eq!(c1.entries[0].1.packet_id, Some(3));
    assert_eq!(c1.entries[0].1.state, EntryState::AwaitingComp);
    assert_eq!(snap.messages[&5], message("a/b", b"x"));
    assert_eq!(snap.next_message_id(), 6);
}

pub(crate) fn a_message_is_stored_once_and_goes_with_its_last_reference<S: Store>(mut s: S) {
    let mut ops = vec![Op::PutMessage {
        id: 1,
        record: message("t", b"m"),
    }];
    for c in ["a", "b"] {
        ops.push(Op::PutSession {
            client_id: cid(c),
            record: session(),
        });
        ops.push(Op::PutEntry {
            client_id: cid(c),
            message_id: 1,
            entry: entry(),
        });
    }
    s.apply(&ops, true).unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.messages.len(), 1);
    assert_eq!(snap.sessions[&cid("a")].entries.len(), 1);
    assert_eq!(snap.sessions[&cid("b")].entries.len(), 1);
    s.apply(
        &[Op::DeleteEntry {
            client_id: cid("a"),
            message_id: 1,
        }],
        true,
    )
    .unwrap();
    assert_eq!(s.load().unwrap().messages.len(), 1);
    // Deleting the session drops its entries, and with the last one the message.
    s.apply(
        &[Op::DeleteSession {
            client_id: cid("b"),
        }],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    assert!(snap.messages.is_empty());
    assert!(!snap.sessions.contains_key(&cid("b")));
}

pub(crate) fn a_message_without_entries_is_not_kept<S: Store>(mut s: S) {
    s.apply(
        &[Op::PutMessage {
            id: 1,
            record: message("t", b"m"),
        }],
        true,
    )
    .unwrap();
    assert!(s.load().unwrap().messages.is_empty());
}

pub(crate) fn entries_of_unknown_messages_and_updates_of_gone_entries_are_ignored<S: Store>(
    mut s: S,
) {
    s.apply(
        &[
            Op::PutSession {
                client_id: cid("a"),
                record: session(),
            },
            Op::PutEntry {
                client_id: cid("a"),
                message_id: 42,
                entry: entry(),
            },
            Op::UpdateEntry {
                client_id: cid("a"),
                message_id: 43,
                packet_id: 1,
                state: EntryState::AwaitingAck,
            },
            Op::DeleteEntry {
                client_id: cid("a"),
                message_id: 44,
            },
        ],
        true,
    )
    .unwrap();
    assert!(s.load().unwrap().sessions[&cid("a")].entries.is_empty());
}

pub(crate) fn retained_messages_are_set_and_cleared<S: Store>(mut s: S) {
    let mut m = message("r/1", b"on");
    m.retain = true;
    s.apply(
        &[
            Op::PutRetained {
                topic: cid("r/1"),
                record: m.clone(),
            },
            Op::PutRetained {
                topic: cid("r/2"),
                record: message("r/2", b"x"),
            },
            Op::DeleteRetained { topic: cid("r/2") },
        ],
        true,
    )
    .unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.retained[&cid("r/1")], m);
}

pub(crate) fn qos2_ids_are_released<S: Store>(mut s: S) {
    s.apply(
        &[
            Op::PutSession {
                client_id: cid("a"),
                record: session(),
            },
            Op::PutQos2 {
                client_id: cid("a"),
                packet_id: 1,
            },
            Op::PutQos2 {
                client_id: cid("a"),
                packet_id: 2,
            },
            Op::DeleteQos2 {
                client_id: cid("a"),
                packet_id: 1,
            },
        ],
        false,
    )
    .unwrap();
    s.sync().unwrap();
    assert_eq!(s.load().unwrap().sessions[&cid("a")].qos2_received, vec![2]);
}

macro_rules! suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn session_and_its_queue_round_trip() {
                let (_guard, s) = $make;
                super::session_and_its_queue_round_trip(s);
            }
            #[test]
            fn a_message_is_stored_once_and_goes_with_its_last_reference() {
                let (_guard, s) = $make;
                super::a_message_is_stored_once_and_goes_with_its_last_reference(s);
            }
            #[test]
            fn a_message_without_entries_is_not_kept() {
                let (_guard, s) = $make;
                super::a_message_without_entries_is_not_kept(s);
            }
            #[test]
            fn entries_of_unknown_messages_and_updates_of_gone_entries_are_ignored() {
                let (_guard, s) = $make;
                super::entries_of_unknown_messages_and_updates_of_gone_entries_are_ignored(s);
            }
            #[test]
            fn retained_messages_are_set_and_cleared() {
                let (_guard, s) = $make;
                super::retained_messages_are_set_and_cleared(s);
            }
            #[test]
            fn qos2_ids_are_released() {
                let (_guard, s) = $make;
                super::qos2_ids_are_released(s);
            }
        }
    };
}

suite!(memory, ((), crate::MemoryStore::new()));
suite!(disk, {
    let dir = tempfile::tempdir().unwrap();
    let s = crate::DiskStore::open(dir.path()).unwrap();
    (dir, s)
});

#[test]
fn the_disk_store_keeps_its_data_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = crate::DiskStore::open(dir.path()).unwrap();
        s.apply(
            &[Op::PutSession {
                client_id: cid("a"),
                record: session(),
            }],
            true,
        )
        .unwrap();
    }
    let mut s = crate::DiskStore::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap().sessions[&cid("a")].record, session());
}

#[test]
fn a_store_of_another_format_version_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::DiskStore::open(dir.path()).unwrap());
    {
        let db = redb::Database::create(dir.path().join(crate::redb_store::FILE_NAME)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", 99).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = crate::DiskStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("thingmq.redb"), "{err}");
    assert!(err.contains("version 99"), "{err}");
}

#[test]
fn a_store_of_format_1_is_read_and_stamped_with_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::DiskStore::open(dir.path()).unwrap());
    // What format 1 wrote: the file's stamp and a session value without the listener.
    let mut v1_session = crate::encoding::session(&session());
    v1_session[0] = 1;
    let listener_len = 1 + 4 + 4 + "tcp 0.0.0.0:1883".len();
    v1_session.truncate(v1_session.len() - listener_len);
    {
        let db = redb::Database::create(dir.path().join(crate::redb_store::FILE_NAME)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("format", 1).unwrap();
            let mut sessions = tx
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("sessions"))
                .unwrap();
            sessions.insert("old", v1_session.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut s = crate::DiskStore::open(dir.path()).unwrap();
    assert_eq!(s.upgraded_from(), Some(1));
    let loaded = s.load().unwrap().sessions[&cid("old")].record.clone();
    assert_eq!(
        loaded,
        SessionRecord {
            listener: crate::ListenerRef::Unknown,
            ..session()
        }
    );
    drop(s);
    // Stamped: opened again, it needs no upgrade.
    let s = crate::DiskStore::open(dir.path()).unwrap();
    assert_eq!(s.upgraded_from(), None);
}

#[test]
fn a_truncated_store_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = crate::DiskStore::open(dir.path()).unwrap();
        s.apply(
            &[Op::PutSession {
                client_id: cid("a"),
                record: session(),
            }],
            true,
        )
        .unwrap();
    }
    let path = dir.path().join(crate::redb_store::FILE_NAME);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let err = crate::DiskStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("thingmq.redb"), "{err}");
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = crate::DiskStore::open(dir.path()).unwrap();
    let err = crate::DiskStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("thingmq.redb"), "{err}");
}
