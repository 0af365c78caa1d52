//! Per-listener authentication: a listener's own `allow_anonymous`, `password_file` and
//! `acl_file` replace those of `[auth]` for connections that come in on it; listeners
//! without them keep `[auth]`'s.

mod common;

use common::*;
use std::net::SocketAddr;
use thingmq_server::{Config, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CONNECT 3.1.1 with optional username and password.
fn connect_with(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let string = |s: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    };
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    let flags = if login.is_some() { 0xC2 } else { 0x02 };
    body.extend_from_slice(&[4, flags, 0, 60]);
    string(client_id.as_bytes(), &mut body);
    if let Some((user, password)) = login {
        string(user.as_bytes(), &mut body);
        string(password.as_bytes(), &mut body);
    }
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// The CONNACK return code, and the connection when accepted.
async fn try_connect(addr: SocketAddr, id: &str, login: Option<(&str, &str)>) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_with(id, login)).await.unwrap();
    let (first, body) = within("CONNACK", read_packet(&mut s)).await.unwrap();
    assert_eq!(first, 0x20);
    (body[1], s)
}

fn password_file(dir: &std::path::Path, name: &str, user: &str, password: &str) -> String {
    let mut file = thingmq_auth::PasswordFile::parse("").unwrap();
    file.set(user, password.as_bytes()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, file.to_text()).unwrap();
    format!("{path:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_s_own_auth_keys_replace_the_global_ones_for_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let global = password_file(dir.path(), "global.pw", "alice", "alice-pw");
    let own = password_file(dir.path(), "own.pw", "bob", "bob-pw");
    let acl = dir.path().join("own.acl");
    std::fs::write(&acl, "user bob\ntopic readwrite bob/#\n").unwrap();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\npassword_file = {own}\nacl_file = {acl:?}\n\n\
         [auth]\nallow_anonymous = false\npassword_file = {global}\n\n[sys]\ninterval_secs = 0\n"
    );
    let server = within("start", Server::start(Config::from_toml(&toml).unwrap()))
        .await
        .unwrap();
    let (plain, special) = (server.local_addrs()[0], server.local_addrs()[1]);

    // The first listener has [auth]'s rules: no anonymous, alice only, no ACL.
    assert_eq!(try_connect(plain, "anon", None).await.0, 5);
    assert_eq!(try_connect(plain, "b0", Some(("bob", "bob-pw"))).await.0, 4);
    let (code, mut alice) = try_connect(plain, "a0", Some(("alice", "alice-pw"))).await;
    assert_eq!(code, 0);
    raw_subscribe(&mut alice, "anything/#", 0).await;

    // The second its own: anonymous allowed, bob only, bob's ACL.
    assert_eq!(try_connect(special, "anon", None).await.0, 0);
    assert_eq!(
        try_connect(special, "a1", Some(("alice", "alice-pw")))
            .await
            .0,
        4
    );
    let (code, mut bob) = try_connect(special, "b1", Some(("bob", "bob-pw"))).await;
    assert_eq!(code, 0);
    raw_subscribe(&mut bob, "bob/inbox", 0).await;
    bob.write_all(&subscribe_packet("anything/#", 0))
        .await
        .unwrap();
    let (first, body) = within("SUBACK", read_packet(&mut bob)).await.unwrap();
    assert_eq!(
        (first, body),
        (0x90, vec![0, 1, 0x80]),
        "ACL of the listener refuses"
    );

    // After a reload (SIGHUP), each listener still has its own rules.
    server.reload_access().unwrap();
    assert_eq!(try_connect(plain, "anon2", None).await.0, 5);
    assert_eq!(try_connect(special, "anon3", None).await.0, 0);
    server.shutdown().await;
}
