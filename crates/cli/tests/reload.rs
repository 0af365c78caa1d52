//! `thingmq reload --pid-file`: a running broker (the real binary) reloads its password file
//! without dropping connections, and removes its pid file when it stops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thingmq_auth::PasswordFile;

/// The broker process; killed if the test fails before stopping it.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_passwords(path: &Path, users: &[(&str, &str)]) {
    let mut file = PasswordFile::parse("").unwrap();
    for (user, password) in users {
        file.set(user, password.as_bytes()).unwrap();
    }
    std::fs::write(path, file.to_text()).unwrap();
}

/// Connects with MQTT 3.1.1 and a username/password; returns the CONNACK return code and
/// the socket.
fn connect(port: u16, user: &str, password: &str) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60];
    for field in [user, user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    s.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack[0], 0x20);
    (connack[3], s)
}

fn ping(s: &mut TcpStream) {
    s.write_all(&[0xC0, 0]).unwrap();
    let mut pingresp = [0u8; 2];
    s.read_exact(&mut pingresp)
        .expect("PINGRESP: still connected");
    assert_eq!(pingresp, [0xD0, 0]);
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_command_makes_the_broker_reload_its_password_file_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (passwords, pid_file, ready) = (
        dir.path().join("passwords"),
        dir.path().join("thingmq.pid"),
        dir.path().join("ready.json"),
    );
    write_passwords(&passwords, &[("alice", "alice-pw")]);
    let config = dir.path().join("thingmq.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\npassword_file = {passwords:?}\n[sys]\ninterval_secs = 0\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_thingmq");
    let mut broker = Broker(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--no-http")
            // Not the working directory's `data`: the test leaves nothing behind.
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the ready file", || ready.exists() && pid_file.exists());
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, broker.0.id());
    let ready = std::fs::read_to_string(&ready).unwrap();
    // {"mqtt":["127.0.0.1:PORT"],"http":null}
    let port: u16 = ready
        .split("\"mqtt\":[\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("MQTT port in the ready file: {ready}"));

    let (code, mut alice) = connect(port, "alice", "alice-pw");
    assert_eq!(code, 0);
    assert_eq!(
        connect(port, "bob", "bob-pw").0,
        4,
        "bob is not in the file yet"
    );

    write_passwords(&passwords, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let out = Command::new(bin)
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("bob to be accepted", || {
        connect(port, "bob", "bob-pw").0 == 0
    });
    ping(&mut alice);

    // A pid file naming no process is an error, not a silent success.
    let stale = dir.path().join("stale.pid");
    std::fs::write(&stale, "999999999\n").unwrap();
    let out = Command::new(bin)
        .args(["reload", "--pid-file"])
        .arg(&stale)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A graceful stop removes the pid file.
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = broker.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!pid_file.exists());
}

/// `POST /api/v1/login` over a fresh connection; the HTTP status code.
fn http_login(addr: &str, user: &str, password: &str) -> u16 {
    let body = format!("{{\"username\":\"{user}\",\"password\":\"{password}\"}}");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {answer}"))
}

fn console_user(bin: &str, file: &Path, name: &str, password: &str) {
    let mut child = Command::new(bin)
        .args(["console-user", "--file"])
        .arg(file)
        .args(["add", name, "--role", "admin", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn sighup_reloads_the_console_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_thingmq");
    let (users, ready, config) = (
        dir.path().join("users"),
        dir.path().join("ready.json"),
        dir.path().join("thingmq.toml"),
    );
    console_user(bin, &users, "alice", "alice-password");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[http]\nbind = \"127.0.0.1:0\"\nusers_file = {users:?}\n[things]\nenabled = false\n[sys]\ninterval_secs = 0\n"
        ),
    )
    .unwrap();
    let mut broker = Broker(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the ready file", || ready.exists());
    let ready = std::fs::read_to_string(&ready).unwrap();
    // {"mqtt":[...],"http":"127.0.0.1:PORT"}
    let http = ready
        .split("\"http\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("HTTP address in the ready file: {ready}"))
        .to_owned();
    assert_eq!(http_login(&http, "alice", "alice-password"), 200);
    assert_eq!(http_login(&http, "bob", "bob-password"), 401);

    console_user(bin, &users, "bob", "bob-password");
    let pid = rustix::process::Pid::from_raw(broker.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    // Few tries, spaced out: logins are rate limited (5 per user name at once).
    let mut let_in = false;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        if http_login(&http, "bob", "bob-password") == 200 {
            let_in = true;
            break;
        }
    }
    assert!(let_in, "bob is let in after SIGHUP");
    assert_eq!(http_login(&http, "alice", "alice-password"), 200);

    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(broker.0.wait().unwrap().success());
}
