//! Helpers shared by the integration tests: bounded waits, a cuttable link, certificates.

#![allow(dead_code, unreachable_pub)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thingmq_client::{Event, EventLoop, Publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Runs an event loop in a task, forwarding its events. The task ends with the loop (or
/// with the test's runtime).
pub fn spawn_events(mut ev: EventLoop) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = ev.poll().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the next event matching `f`, skipping others.
pub async fn next_matching<T>(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    mut f: impl FnMut(Event) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            let e = rx
                .recv()
                .await
                .unwrap_or_else(|| panic!("event loop ended waiting for {what}"));
            if let Some(v) = f(e) {
                return v;
            }
        }
    })
    .await
}

pub async fn connected(rx: &mut mpsc::UnboundedReceiver<Event>) -> bool {
    next_matching(rx, "Connected", |e| match e {
        Event::Connected {
            session_present, ..
        } => Some(session_present),
        Event::Disconnected { error } => panic!("disconnected while connecting: {error:?}"),
        _ => None,
    })
    .await
}

pub async fn message(rx: &mut mpsc::UnboundedReceiver<Event>) -> Publish {
    next_matching(rx, "a message", |e| match e {
        Event::Publish(p) => Some(p),
        _ => None,
    })
    .await
}

/// A link between a client and a TCP server that the test can cut, or make drop everything
/// the server sends (so acks get lost).
#[derive(Clone, Default)]
pub struct Link {
    pub blackhole_down: Arc<AtomicBool>,
    /// Bit n set: drop packets of type n (4 = PUBACK, 7 = PUBCOMP…) sent by the server.
    pub drop_down_kinds: Arc<AtomicU16>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Link {
    /// Opens a new proxied connection to `port`; the client gets the in-memory end.
    pub async fn open(&self, port: u16) -> std::io::Result<DuplexStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let (client_end, proxy_end) = tokio::io::duplex(64 * 1024);
        let blackhole = self.blackhole_down.clone();
        let drop_kinds = self.drop_down_kinds.clone();
        let task: JoinHandle<()> = tokio::spawn(async move {
            let (mut pr, mut pw) = tokio::io::split(proxy_end);
            let (mut tr, mut tw) = tcp.into_split();
            let up = async move {
                let _ = tokio::io::copy(&mut pr, &mut tw).await;
            };
            let down = async move {
                // Whole packets are forwarded (or dropped) one by one, split with the codec's
                // fixed-header check.
                let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
                loop {
                    match tr.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    while let Ok(Some(h)) = thingmq_client::codec::check(&buf, u32::MAX) {
                        let frame = buf.split_to(h.frame_len());
                        let kind = h.first_byte >> 4;
                        let dropped = blackhole.load(Ordering::SeqCst)
                            || drop_kinds.load(Ordering::SeqCst) & (1 << kind) != 0;
                        if !dropped && pw.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }
            };
            tokio::select! { _ = up => {}, _ = down => {} }
        });
        self.tasks.lock().unwrap().push(task);
        Ok(client_end)
    }

    /// Cuts every open connection, as a network failure would.
    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A CA and a server certificate for localhost / 127.0.0.1, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "client test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        let mut s =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        s.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = s.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
