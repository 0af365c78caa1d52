//! `thingmq pub` and `thingmq sub` as binaries, against `thingmq serve` (also the built
//! binary, on 127.0.0.1:0 with a ready file) and Mosquitto's own clients (`mosquitto_pub`,
//! `mosquitto_sub`, installed by scripts/test): TCP, TLS, WebSocket, a refused connection,
//! `-C`/`-W` exits and `--json`.
//!
//! A subscriber is only known to be subscribed once it receives something, so live tests
//! publish repeatedly (bounded) until the subscriber exits with `-C`.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_thingmq");

/// A `thingmq serve` process, killed by PID when dropped (also when the test fails).
struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Starts with `config` (TOML) if given, else with `--bind 127.0.0.1:0`.
    fn start(config: Option<&str>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new(BIN);
        // No REST API: these tests need MQTT only, and its default port may be taken.
        cmd.args(["serve", "--no-http", "--ready-file"]).arg(&ready);
        cmd.arg("--data-dir").arg(dir.path().join("data"));
        match config {
            Some(toml) => {
                let path = dir.path().join("thingmq.toml");
                std::fs::write(&path, toml).unwrap();
                cmd.arg("--config").arg(path);
            }
            None => {
                cmd.args(["--bind", "127.0.0.1:0"]);
            }
        }
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("thingmq serve starts");
        let mut b = Broker {
            child,
            port: 0,
            dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let addr = v["mqtt"][0].as_str().unwrap().to_owned();
                    b.port = addr.rsplit(':').next().unwrap().parse().unwrap();
                    return b;
                }
            }
            if let Some(status) = b.child.try_wait().unwrap() {
                panic!("thingmq serve exited with {status}: {}", b.log());
            }
            assert!(Instant::now() < deadline, "broker not ready: {}", b.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    fn port(&self) -> String {
        self.port.to_string()
    }
}

fn require(bin: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{bin} is not installed: ./scripts/test installs mosquitto-clients"
    );
}

fn spawn(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run(program: &str, args: &[&str]) -> Output {
    let child = spawn(program, args);
    wait_output(child)
}

/// Waits (bounded) for a child and returns its output; kills it on timeout.
fn wait_output(mut child: Child) -> Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process did not exit within {WAIT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `publish` every 200 ms until `subscriber` exits (bounded), then returns its output.
fn publish_until_exit(mut subscriber: Child, mut publish: impl FnMut()) -> Output {
    let deadline = Instant::now() + WAIT;
    while subscriber.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = subscriber.kill();
            let out = subscriber.wait_with_output().unwrap();
            panic!(
                "subscriber got nothing within {WAIT:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        publish();
        std::thread::sleep(Duration::from_millis(200));
    }
    subscriber.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn thingmq_sub_receives_what_mosquitto_pub_sends() {
    require("mosquitto_pub");
    let b = Broker::start(None);
    for (v, mv) in [("5", "mqttv5"), ("311", "mqttv311")] {
        let sub = spawn(
            BIN,
            &[
                "sub",
                "-p",
                &b.port(),
                "-t",
                "m/#",
                "-q",
                "1",
                "-v",
                "-C",
                "1",
                "-V",
                v,
            ],
        );
        let out = publish_until_exit(sub, || {
            let o = run(
                "mosquitto_pub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &b.port(),
                    "-t",
                    "m/x",
                    "-m",
                    "from mosquitto",
                    "-q",
                    "1",
                    "-V",
                    mv,
                ],
            );
            ok(&o);
        });
        assert_eq!(ok(&out), "m/x from mosquitto\n");
    }
}

#[test]
fn thingmq_pub_delivers_to_mosquitto_sub() {
    require("mosquitto_sub");
    let b = Broker::start(None);
    for (qos, v) in [("0", "5"), ("1", "311"), ("2", "5")] {
        let sub = spawn(
            "mosquitto_sub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &b.port(),
                "-t",
                "t/#",
                "-v",
                "-C",
                "1",
                "-q",
                "2",
            ],
        );
        let out = publish_until_exit(sub, || {
            ok(&run(
                BIN,
                &[
                    "pub",
                    "-p",
                    &b.port(),
                    "-t",
                    "t/q",
                    "-m",
                    "from thingmq",
                    "-q",
                    qos,
                    "-V",
                    v,
                ],
            ));
        });
        assert_eq!(ok(&out), "t/q from thingmq\n", "QoS {qos} v{v}");
    }
}

#[test]
fn pub_reads_lines_files_and_null_messages() {
    let b = Broker::start(None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, "from a file").unwrap();
    // Retained, so the subscriber started afterwards gets them without a race.
    ok(&run(
        BIN,
        &[
            "pub",
            "-p",
            &b.port(),
            "-t",
            "f/1",
            "-f",
            file.to_str().unwrap(),
            "-r",
            "-q",
            "1",
        ],
    ));
    let mut child = Command::new(BIN)
        .args(["pub", "-p", &b.port(), "-t", "f/2", "-l", "-r", "-q", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first\nlast line\n")
        .unwrap();
    ok(&wait_output(child));
    let out = run(
        BIN,
        &[
            "sub",
            "-p",
            &b.port(),
            "-t",
            "f/#",
            "-v",
            "-C",
            "2",
            "-W",
            "5",
        ],
    );
    let text = ok(&out);
    assert!(text.contains("f/1 from a file\n"), "{text}");
    assert!(text.contains("f/2 last line\n"), "{text}");
    // -n with -r clears the retained message.
    ok(&run(
        BIN,
        &["pub", "-p", &b.port(), "-t", "f/1", "-n", "-r"],
    ));
    let out = run(BIN, &["sub", "-p", &b.port(), "-t", "f/1", "-W", "1"]);
    assert_eq!(out.status.code(), Some(27));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn count_and_timeout_end_sub_with_the_right_exit_code() {
    let b = Broker::start(None);
    for i in 0..3 {
        ok(&run(
            BIN,
            &[
                "pub",
                "-p",
                &b.port(),
                "-t",
                &format!("c/{i}"),
                "-m",
                "x",
                "-r",
            ],
        ));
    }
    let started = Instant::now();
    let out = run(BIN, &["sub", "-p", &b.port(), "-t", "c/#", "-C", "2"]);
    assert_eq!(ok(&out), "x\nx\n", "exits after exactly -C messages");
    let out = run(
        BIN,
        &["sub", "-p", &b.port(), "-t", "nothing/here", "-W", "1"],
    );
    assert_eq!(
        out.status.code(),
        Some(27),
        "-W expiry exits 27 like mosquitto_sub"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn json_output_is_one_parsable_object_per_message() {
    let b = Broker::start(None);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::write(&bin, [0xff, 0x00, 0xfe]).unwrap();
    ok(&run(
        BIN,
        &[
            "pub",
            "-p",
            &b.port(),
            "-t",
            "j/text",
            "-m",
            "héllo",
            "-r",
            "-q",
            "1",
            "-D",
            "k",
            "v",
        ],
    ));
    ok(&run(
        BIN,
        &[
            "pub",
            "-p",
            &b.port(),
            "-t",
            "j/bin",
            "-f",
            bin.to_str().unwrap(),
            "-r",
        ],
    ));
    let out = run(
        BIN,
        &[
            "sub",
            "-p",
            &b.port(),
            "-t",
            "j/#",
            "-q",
            "1",
            "--json",
            "-C",
            "2",
        ],
    );
    let text = ok(&out);
    let objs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objs.len(), 2);
    let t = objs.iter().find(|o| o["topic"] == "j/text").unwrap();
    assert_eq!(t["payload"], "héllo");
    assert_eq!(t["qos"], 1);
    assert_eq!(t["retain"], true);
    assert_eq!(
        t["properties"]["user_properties"],
        serde_json::json!([["k", "v"]])
    );
    let bin = objs.iter().find(|o| o["topic"] == "j/bin").unwrap();
    assert_eq!(bin["payload_base64"], "/wD+");
    assert!(bin.get("payload").is_none());
}

#[test]
fn refused_connection_says_why_in_words() {
    let b = Broker::start(Some(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n",
    ));
    for v in ["5", "311"] {
        let out = run(
            BIN,
            &["pub", "-p", &b.port(), "-t", "a", "-m", "x", "-V", v],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("connection refused: not authorized (0x87)"),
            "v{v}: {err}"
        );
        let out = run(BIN, &["sub", "-p", &b.port(), "-t", "a", "-V", v]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not authorized (0x87)"));
    }
}

#[test]
fn bad_flags_and_unreadable_files_are_clear_errors() {
    let out = run(BIN, &["pub", "-t", "a", "-m", "x", "-q", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("QoS must be 0, 1 or 2"));
    let out = run(BIN, &["pub", "-t", "a"]);
    assert_eq!(out.status.code(), Some(2), "a message source is required");
    let out = run(BIN, &["pub", "-t", "a", "-f", "/nonexistent/file"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file"));
    let out = run(BIN, &["pub", "-t", "a/#", "-m", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid topic"));
    let out = run(BIN, &["sub", "-t", "a", "--url", "gopher://x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
    let out = run(BIN, &["sub", "-t", "a", "--cafile", "/nonexistent/ca.pem"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/ca.pem"));
}

/// CA + server certificate for localhost/127.0.0.1, as PEM files in `dir`.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "cli test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let mut s = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    s.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = s.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls_with_mosquitto_pub_and_thingmq_sub() {
    require("mosquitto_pub");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let b = Broker::start(Some(&format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert_file = {cert:?}\nkey_file = {key:?}\n"
    )));
    let ca = ca.to_str().unwrap();
    let sub = spawn(
        BIN,
        &[
            "sub",
            "-h",
            "localhost",
            "-p",
            &b.port(),
            "--cafile",
            ca,
            "-t",
            "s/#",
            "-v",
            "-C",
            "1",
        ],
    );
    let out = publish_until_exit(sub, || {
        ok(&run(
            "mosquitto_pub",
            &[
                "-h",
                "localhost",
                "-p",
                &b.port(),
                "--cafile",
                ca,
                "-t",
                "s/1",
                "-m",
                "secret",
                "-q",
                "1",
            ],
        ));
    });
    assert_eq!(ok(&out), "s/1 secret\n");
    // And thingmq pub over mqtts:// with --insecure, to mosquitto_sub.
    let sub = spawn(
        "mosquitto_sub",
        &[
            "-h",
            "localhost",
            "-p",
            &b.port(),
            "--cafile",
            ca,
            "-t",
            "s/#",
            "-C",
            "1",
        ],
    );
    let url = format!("mqtts://127.0.0.1:{}/s/2", b.port);
    let out = publish_until_exit(sub, || {
        ok(&run(
            BIN,
            &[
                "pub",
                "--url",
                &url,
                "--insecure",
                "-m",
                "via url",
                "-q",
                "2",
            ],
        ));
    });
    assert_eq!(ok(&out), "via url\n");
}

#[test]
fn websocket_pub_and_sub() {
    let b = Broker::start(Some(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n",
    ));
    let url = format!("ws://127.0.0.1:{}/mqtt", b.port);
    let sub = spawn(
        BIN,
        &[
            "sub", "--url", &url, "-t", "w/#", "-v", "-C", "1", "-q", "2",
        ],
    );
    let out = publish_until_exit(sub, || {
        ok(&run(
            BIN,
            &[
                "pub", "--url", &url, "-t", "w/1", "-m", "over ws", "-q", "2",
            ],
        ));
    });
    assert_eq!(ok(&out), "w/1 over ws\n");
}

#[test]
fn url_carries_credentials_and_topic() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let out = Command::new(BIN)
        .args(["passwd", "-c", "--stdin"])
        .arg(&pw)
        .arg("alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&out);
    let b = Broker::start(Some(&format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\npassword_file = {pw:?}\n"
    )));
    let url = format!("mqtt://alice:s3cret@127.0.0.1:{}/u/1", b.port);
    ok(&run(BIN, &["pub", "--url", &url, "-m", "authed", "-r"]));
    let out = run(BIN, &["sub", "--url", &url, "-C", "1", "-W", "5"]);
    assert_eq!(ok(&out), "authed\n");
    let bad = format!("mqtt://alice:wrong@127.0.0.1:{}/u/1", b.port);
    let out = run(BIN, &["sub", "--url", &bad, "-W", "5"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("connection refused: bad user name or password (0x86)"));
}

#[test]
fn persistent_session_keeps_messages_sent_while_sub_was_away() {
    require("mosquitto_pub");
    let b = Broker::start(None);
    for v in ["5", "311"] {
        let port = b.port();
        let args = vec![
            "sub", "-p", &port, "-i", "worker", "-c", "-q", "1", "-t", "jobs/#", "-V", v,
        ];
        // v5: -c alone must already mean a lasting session (no -x), as with mosquitto_sub.
        let mut first = args.clone();
        first.extend(["-W", "2"]);
        assert_eq!(run(BIN, &first).status.code(), Some(27));
        ok(&run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &b.port(),
                "-t",
                "jobs/1",
                "-m",
                "queued",
                "-q",
                "1",
            ],
        ));
        let mut second = args.clone();
        second.extend(["-C", "1", "-W", "5"]);
        assert_eq!(ok(&run(BIN, &second)), "queued\n", "v{v}");
    }
}
