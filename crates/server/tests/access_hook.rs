//! Access hooks: another credential source (as the device registry will be) claims its own
//! clients ahead of the password file and ACL, and gives them their own policy; clients it
//! does not claim meet the configured rules as before.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thingmq_auth::{ClientInfo, Refusal};
use thingmq_broker::AccessPolicy;
use thingmq_server::access::AccessHook;
use thingmq_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Claims usernames ending in `&prod`; password `secret`; may only use `own/{username}/#`.
#[derive(Debug, Default)]
struct Devices {
    /// When set, the hook refuses everyone it claims (a disabled device).
    disabled: AtomicBool,
}

#[derive(Debug)]
struct OwnTopics(String);

impl AccessPolicy for OwnTopics {
    fn can_publish(&self, topic: &str) -> bool {
        topic.starts_with(&self.0)
    }
    fn can_subscribe(&self, filter: &str) -> bool {
        filter.starts_with(&self.0)
    }
    fn can_receive(&self, topic: &str) -> bool {
        topic.starts_with(&self.0)
    }
}

impl AccessHook for Devices {
    fn authenticate(
        &self,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Option<Result<(), Refusal>> {
        let user = client.username.as_deref()?;
        if !user.ends_with("&prod") {
            return None;
        }
        if self.disabled.load(Ordering::Relaxed) {
            return Some(Err(Refusal::NotAuthorized));
        }
        Some(if password == Some(b"secret") {
            Ok(())
        } else {
            Err(Refusal::BadCredentials)
        })
    }

    fn policy(&self, client: &ClientInfo) -> Option<Arc<dyn AccessPolicy>> {
        let user = client.username.as_deref()?;
        user.ends_with("&prod")
            .then(|| Arc::new(OwnTopics(format!("own/{user}/"))) as Arc<dyn AccessPolicy>)
    }
}

/// MQTT 3.1.1 CONNECT with username and password, clean session, keep-alive 60.
fn connect(id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xc2, 0x00, 0x3c];
    for s in [id, user, password] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// SUBSCRIBE packet id 1 to `filter` at QoS 0.
fn subscribe(filter: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    let mut p = vec![0x82, body.len() as u8];
    p.extend(body);
    p
}

/// Connects and returns the CONNACK return code and the stream.
async fn try_connect(
    addr: std::net::SocketAddr,
    id: &str,
    user: &str,
    pw: &str,
) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect(id, user, pw)).await.unwrap();
    let mut ack = [0u8; 4];
    within("CONNACK", s.read_exact(&mut ack)).await.unwrap();
    assert_eq!(ack[..2], [0x20, 0x02]);
    (ack[3], s)
}

async fn suback(s: &mut TcpStream, filter: &str) -> u8 {
    s.write_all(&subscribe(filter)).await.unwrap();
    let mut ack = [0u8; 5];
    within("SUBACK", s.read_exact(&mut ack)).await.unwrap();
    ack[4]
}

#[tokio::test]
async fn hook_claims_its_clients_and_binds_their_policy_while_others_meet_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    std::fs::write(
        &passwords,
        format!("alice:{}\n", thingmq_auth::hash_password(b"pw").unwrap()),
    )
    .unwrap();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\npassword_file = {:?}\n[sys]\ninterval_secs = 0\n",
        passwords.display().to_string()
    );
    let server = within("start", Server::start(Config::from_toml(&toml).unwrap()))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let devices = Arc::new(Devices::default());
    server.add_access_hook(devices.clone());

    // The hook's client: right and wrong password.
    let (code, mut dev) = try_connect(addr, "d1", "lamp&prod", "secret").await;
    assert_eq!(code, 0);
    assert_eq!(try_connect(addr, "d2", "lamp&prod", "nope").await.0, 4);
    // Its policy: only its own subtree.
    assert_eq!(suback(&mut dev, "own/lamp&prod/#").await, 0x00);
    assert_eq!(suback(&mut dev, "other/#").await, 0x80);

    // Not the hook's client: the password file decides, and no ACL restricts alice.
    let (code, mut alice) = try_connect(addr, "a1", "alice", "pw").await;
    assert_eq!(code, 0);
    assert_eq!(suback(&mut alice, "other/#").await, 0x00);
    assert_eq!(try_connect(addr, "a2", "mallory", "pw").await.0, 4);

    // The hook changes its mind: new connections are refused.
    devices.disabled.store(true, Ordering::Relaxed);
    server.access_changed();
    assert_eq!(try_connect(addr, "d3", "lamp&prod", "secret").await.0, 5);

    // A password-file reload keeps the hook.
    server.reload_access().unwrap();
    devices.disabled.store(false, Ordering::Relaxed);
    assert_eq!(try_connect(addr, "d4", "lamp&prod", "secret").await.0, 0);
    within("shutdown", server.shutdown()).await;
}
