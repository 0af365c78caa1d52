//! Durability seen from outside: a server on a data directory is stopped and started again
//! on it, and a client finds its session as docs/durability.md says.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use thingmq_server::metrics::Metrics;
use thingmq_server::{Config, Server, ServerHandle};
use thingmq_store::{MemoryStore, Op, Snapshot, Store, StoreError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CONNECT 3.1.1, keep-alive 60 s, clean session 0 (the session is kept).
fn persistent_connect(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4];
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[4, 0x00, 0, 60]);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Connects with a persistent session; returns the stream and Session Present.
async fn connect_persistent(addr: SocketAddr, client_id: &str) -> (TcpStream, bool) {
    let mut s = within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    s.write_all(&persistent_connect(client_id)).await.unwrap();
    let (first, body) = within("CONNACK", read_packet(&mut s)).await.unwrap();
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK accepted");
    (s, body[0] & 1 == 1)
}

/// Publishes QoS 1 and waits for the PUBACK.
async fn publish_qos1(s: &mut TcpStream, topic: &str, payload: &[u8], id: u16) {
    s.write_all(&publish_packet(topic, payload, Some(id)))
        .await
        .unwrap();
    let (first, body) = within("PUBACK", read_packet(s)).await.unwrap();
    assert_eq!((first, body), (0x40, id.to_be_bytes().to_vec()));
}

/// The next packet, which must be a QoS 1 PUBLISH: (topic, payload); it is acknowledged.
async fn expect_qos1_publish(s: &mut TcpStream) -> (String, Vec<u8>) {
    let (first, body) = within("PUBLISH", read_packet(s)).await.unwrap();
    assert_eq!(first & 0xf6, 0x32, "a QoS 1 PUBLISH, got {first:#x}");
    let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tl].to_vec()).unwrap();
    let id = [body[2 + tl], body[3 + tl]];
    s.write_all(&[0x40, 2, id[0], id[1]]).await.unwrap();
    (topic, body[4 + tl..].to_vec())
}

/// PINGREQ, and what arrives before the PINGRESP must be nothing.
async fn expect_nothing_queued(s: &mut TcpStream) {
    s.write_all(&[0xc0, 0]).await.unwrap();
    let (first, _) = within("PINGRESP", read_packet(s)).await.unwrap();
    assert_eq!(first, 0xd0, "nothing before the PINGRESP");
}

async fn start(toml: &str) -> ServerHandle {
    within("start", Server::start(Config::from_toml(toml).unwrap()))
        .await
        .unwrap()
}

fn acl(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    format!("{path:?}")
}

/// `[[listeners]]` tables: (bind, acl file) each, then `[storage]` on `dir`.
fn config(dir: &Path, listeners: &[(&str, &str)]) -> String {
    let mut toml = String::new();
    for (bind, acl) in listeners {
        toml += &format!(
            "[[listeners]]\nbind = \"{bind}\"\nallow_anonymous = true\nacl_file = {acl}\n\n"
        );
    }
    toml += &format!(
        "[storage]\ndata_dir = {:?}\n\n[sys]\ninterval_secs = 0\n",
        dir.join("data")
    );
    toml
}

/// The rules of the first listener: anonymous clients may publish to `t/#` but not read it.
const WRITE_ONLY: &str = "topic write t/#\n";
/// The rules of the second: anonymous clients may read `t/#`.
const READ_WRITE: &str = "topic readwrite t/#\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_session_gets_the_access_rules_of_the_listener_it_last_came_in_on() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        acl(dir.path(), "first.acl", WRITE_ONLY),
        acl(dir.path(), "second.acl", READ_WRITE),
    );
    // Both listeners are `tcp 127.0.0.1:0`: the position tells them apart.
    let toml = config(
        dir.path(),
        &[("127.0.0.1:0", &first), ("127.0.0.1:0", &second)],
    );
    let server = start(&toml).await;
    let (mut sub, _) = connect_persistent(server.local_addrs()[1], "reader").await;
    raw_subscribe(&mut sub, "t/#", 1).await;
    sub.write_all(&[0xe0, 0]).await.unwrap();
    closed_by_server(&mut sub).await;
    server.shutdown().await;

    let server = start(&toml).await;
    let mut publisher = raw_connect(server.local_addrs()[0], "writer").await;
    publish_qos1(&mut publisher, "t/x", b"for the reader", 1).await;
    // Under the first listener's rules the message would have been refused for the reader.
    let (mut sub, present) = connect_persistent(server.local_addrs()[1], "reader").await;
    assert!(present);
    assert_eq!(
        expect_qos1_publish(&mut sub).await,
        ("t/x".to_owned(), b"for the reader".to_vec())
    );
    assert_eq!(Metrics::get(&server.metrics().denied), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_session_whose_listener_is_gone_gets_the_first_listener_s_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        acl(dir.path(), "first.acl", WRITE_ONLY),
        acl(dir.path(), "second.acl", READ_WRITE),
    );
    let server = start(&config(
        dir.path(),
        &[("127.0.0.1:0", &first), ("127.0.0.2:0", &second)],
    ))
    .await;
    let (mut sub, _) = connect_persistent(server.local_addrs()[1], "reader").await;
    raw_subscribe(&mut sub, "t/#", 1).await;
    sub.write_all(&[0xe0, 0]).await.unwrap();
    closed_by_server(&mut sub).await;
    server.shutdown().await;

    // The second listener is no longer configured.
    let server = start(&config(dir.path(), &[("127.0.0.1:0", &first)])).await;
    let addr = server.local_addrs()[0];
    let mut publisher = raw_connect(addr, "writer").await;
    publish_qos1(&mut publisher, "t/x", b"not readable here", 1).await;
    let denied = || Metrics::get(&server.metrics().denied);
    within("the delivery to be denied", async {
        while denied() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let (mut sub, present) = connect_persistent(addr, "reader").await;
    assert!(present);
    expect_nothing_queued(&mut sub).await;
    server.shutdown().await;
}

/// A store that fails on purpose: while `fail_next` is above zero each write (or fsync)
/// fails and counts it down (`u32::MAX`: fails until set otherwise); else it writes to a
/// memory store that outlives the server, so a restart finds what was stored.
#[derive(Debug, Clone, Default)]
struct FlakyStore {
    inner: Arc<Mutex<MemoryStore>>,
    fail_next: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
}

impl FlakyStore {
    fn injected_failure(&self) -> Result<(), StoreError> {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if failing {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend {
                file: "flaky".into(),
                detail: "No space left on device (injected)".into(),
            });
        }
        Ok(())
    }
}

impl Store for FlakyStore {
    fn apply(&mut self, ops: &[Op], sync: bool) -> Result<(), StoreError> {
        self.injected_failure()?;
        self.inner.lock().unwrap().apply(ops, sync)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.injected_failure()?;
        self.inner.lock().unwrap().sync()
    }
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.lock().unwrap().load()
    }
}

async fn start_on(store: &FlakyStore, extra: &str) -> (ServerHandle, SocketAddr) {
    let toml = format!("[[listeners]]\nbind = \"127.0.0.1:0\"\n{extra}\n");
    let server = within(
        "start",
        Server::start_with_store(Config::from_toml(&toml).unwrap(), Box::new(store.clone())),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

fn store_health(server: &ServerHandle) -> (u64, u64) {
    let h = server
        .metrics()
        .store
        .as_ref()
        .expect("a store is configured");
    (Metrics::get(&h.failing), Metrics::get(&h.write_failures))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_retried_and_the_held_puback_is_sent_once_it_succeeds() {
    let store = FlakyStore::default();
    let (server, addr) = start_on(&store, "[sys]\ninterval_secs = 0\n").await;
    let (mut sub, _) = connect_persistent(addr, "sub").await;
    raw_subscribe(&mut sub, "t/#", 1).await;
    sub.write_all(&[0xe0, 0]).await.unwrap();
    closed_by_server(&mut sub).await;
    let mut publisher = raw_connect(addr, "pub").await;

    // The message, with the offline subscriber's queue entry, fails to be stored three
    // times; the PUBACK comes once the fourth attempt succeeded.
    store.fail_next.store(3, Ordering::SeqCst);
    publish_qos1(&mut publisher, "t/x", b"stored at last", 1).await;
    assert_eq!(store.failed.load(Ordering::SeqCst), 3);
    assert_eq!(
        store_health(&server),
        (0, 3),
        "recovered, three failures counted"
    );
    drop(publisher);
    server.shutdown().await;

    // What the PUBACK promised is in the store: the next server delivers it.
    let (server, addr) = start_on(&store, "[sys]\ninterval_secs = 0\n").await;
    let (mut sub, present) = connect_persistent(addr, "sub").await;
    assert!(present);
    assert_eq!(
        expect_qos1_publish(&mut sub).await,
        ("t/x".to_owned(), b"stored at last".to_vec())
    );
    assert_eq!(store_health(&server), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_store_fails_acknowledgements_are_held_and_sys_says_failing() {
    let store = FlakyStore::default();
    let (server, addr) = start_on(&store, "[sys]\ninterval_secs = 1\n").await;
    let mut watcher = raw_connect(addr, "watcher").await;
    raw_subscribe(&mut watcher, "$SYS/broker/store/#", 0).await;
    let (mut sub, _) = connect_persistent(addr, "sub").await;
    raw_subscribe(&mut sub, "t/#", 1).await;
    let mut publisher = raw_connect(addr, "pub").await;

    store.fail_next.store(u32::MAX, Ordering::SeqCst);
    publisher
        .write_all(&publish_packet("t/x", b"held", Some(1)))
        .await
        .unwrap();
    // $SYS (QoS 0) keeps flowing and reports the failure.
    within("$SYS/broker/store/status = failing", async {
        while read_publish(&mut watcher).await
            != ("$SYS/broker/store/status".to_owned(), b"failing".to_vec())
        {}
    })
    .await;
    assert_eq!(store_health(&server).0, 1);
    assert!(store_health(&server).1 >= 1);
    // Nothing was acknowledged, nothing delivered.
    let held = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        read_packet(&mut publisher),
    )
    .await;
    assert!(held.is_err(), "no PUBACK while the store fails: {held:?}");

    store.fail_next.store(0, Ordering::SeqCst);
    let (first, body) = within("PUBACK", read_packet(&mut publisher)).await.unwrap();
    assert_eq!((first, body), (0x40, vec![0, 1]));
    assert_eq!(
        expect_qos1_publish(&mut sub).await,
        ("t/x".to_owned(), b"held".to_vec())
    );
    assert_eq!(store_health(&server).0, 0);
    let failures = store_health(&server).1;
    assert_eq!(failures, u64::from(store.failed.load(Ordering::SeqCst)));
    within("$SYS/broker/store/status = ok", async {
        while read_publish(&mut watcher).await
            != ("$SYS/broker/store/status".to_owned(), b"ok".to_vec())
        {}
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_store_keeps_failing_still_stops() {
    let store = FlakyStore::default();
    let (server, addr) = start_on(&store, "[sys]\ninterval_secs = 0\n").await;
    let (mut sub, _) = connect_persistent(addr, "sub").await;
    raw_subscribe(&mut sub, "t/#", 1).await;
    store.fail_next.store(u32::MAX, Ordering::SeqCst);
    let mut publisher = raw_connect(addr, "pub").await;
    publisher
        .write_all(&publish_packet("t/x", b"never stored", Some(1)))
        .await
        .unwrap();
    within("a failure", async {
        while store.failed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // The store task gives up the batch after a few more attempts once stopping.
    within("shutdown", server.shutdown()).await;
}
