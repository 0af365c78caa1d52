//! `thingmq bench` run as a binary against a `thingmq serve` on 127.0.0.1:0: each scenario
//! briefly, with small numbers, checking that the counts add up.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_thingmq");

/// A broker process, killed when dropped (also when the test fails).
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--no-http",
            "--bind",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut broker = Broker {
        child,
        port: 0,
        _dir: dir,
    };
    broker.port = wait_for_port(&ready);
    broker
}

fn wait_for_port(ready: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(ready) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let addr = v["mqtt"][0].as_str().unwrap();
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("broker did not write {}", ready.display());
}

fn bench_command(broker: &Broker, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("bench")
        .args(args)
        .args(["--port", &broker.port.to_string(), "--json", "--quiet"]);
    cmd
}

/// Runs `thingmq bench ARGS --json` and returns the report.
fn bench(broker: &Broker, args: &[&str]) -> Value {
    let out = bench_command(broker, args).output().unwrap();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {v:#}"))
}

/// Sent, received and expected agree, nothing is missing, and every delivery has a latency.
fn assert_all_delivered(r: &Value, fan: u64) {
    let sent = u(r, "sent");
    assert!(sent > 0, "{r:#}");
    assert_eq!(u(r, "expected"), sent * fan, "{r:#}");
    assert_eq!(u(r, "received"), sent * fan, "{r:#}");
    assert_eq!(u(r, "dropped"), 0, "{r:#}");
    assert_eq!(u(r, "errors"), 0, "{r:#}");
    assert_eq!(u(&r["latency"], "samples"), sent * fan, "{r:#}");
    assert!(r["latency"]["p99_us"].as_u64().unwrap() <= r["latency"]["max_us"].as_u64().unwrap());
}

#[test]
fn fanout_qos1_delivers_every_publish_to_every_subscriber() {
    let b = broker();
    let r = bench(
        &b,
        &["fanout", "-q", "1", "-S", "5", "-d", "1", "--rate", "500"],
    );
    assert_eq!(u(&r, "subscribers"), 5);
    assert_eq!(u(&r, "acked"), u(&r, "sent"));
    assert_all_delivered(&r, 5);
}

#[test]
fn paced_fanin_qos1_sends_at_the_asked_rate_and_delivers_all() {
    let b = broker();
    let r = bench(
        &b,
        &["fanin", "-q", "1", "-P", "10", "-d", "2", "--rate", "1000"],
    );
    let sent = u(&r, "sent");
    // 1,000 msg/s for 2 s, paced: close to 2,000 (the schedule catches up after late wakes;
    // the slack is for a loaded machine). Unpaced, it would be far more.
    assert!((1500..=2010).contains(&sent), "sent {sent}");
    assert_all_delivered(&r, 1);
}

#[test]
fn fanin_qos0_on_mqtt5_counts_what_arrived() {
    let b = broker();
    let r = bench(
        &b,
        &["fanin", "-V", "5", "-P", "4", "-d", "1", "--rate", "400"],
    );
    assert_eq!(r["mqtt_version"], "5");
    let (sent, received) = (u(&r, "sent"), u(&r, "received"));
    assert!(sent > 0 && received > 0 && received <= sent, "{r:#}");
    assert_eq!(u(&r, "dropped"), sent - received);
}

#[test]
fn shared_group_qos2_delivers_each_message_once() {
    let b = broker();
    let r = bench(
        &b,
        &[
            "shared", "-q", "2", "-P", "2", "-S", "3", "-d", "1", "--rate", "300", "-s", "256",
        ],
    );
    assert_eq!(u(&r, "payload_bytes"), 256);
    assert_eq!(u(&r, "acked"), u(&r, "sent"));
    assert_all_delivered(&r, 1);
}

#[test]
fn pairs_qos1_deliver_to_their_own_subscriber() {
    let b = broker();
    let r = bench(
        &b,
        &["pairs", "-q", "1", "-P", "8", "-d", "1", "--rate", "800"],
    );
    assert_eq!(u(&r, "subscribers"), 8);
    assert_all_delivered(&r, 1);
}

#[test]
fn pub_qos1_gets_every_publish_acknowledged() {
    let b = broker();
    let r = bench(&b, &["pub", "-q", "1", "-P", "3", "-d", "1"]);
    assert!(u(&r, "sent") > 0);
    assert_eq!(u(&r, "acked"), u(&r, "sent"));
    assert!(r.get("expected").is_none());
}

#[test]
fn sub_counts_what_a_separate_pub_process_sends() {
    let b = broker();
    let sub = bench_command(&b, &["sub", "-q", "1", "-S", "2", "-d", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Give the subscribers time to subscribe before publishing.
    std::thread::sleep(Duration::from_millis(2000));
    let p = bench(
        &b,
        &["pub", "-q", "1", "-P", "2", "-d", "1", "--rate", "200"],
    );
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&s, "received"), u(&p, "sent") * 2, "sub {s:#} pub {p:#}");
}

#[test]
fn retained_subscribers_receive_every_stored_topic() {
    let b = broker();
    let r = bench(&b, &["retained", "--topics", "500", "-S", "2", "-d", "1"]);
    assert_eq!(u(&r, "acked"), 500);
    assert_eq!(u(&r, "received"), 1000);
    assert_eq!(u(&r, "dropped"), 0);
    assert!(r["received_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn conn_connects_every_client_and_reports_broker_memory() {
    let b = broker();
    let pid = b.child.id().to_string();
    let r = bench(&b, &["conn", "-n", "50", "--broker-pid", &pid, "-d", "1"]);
    let c = &r["connections"];
    assert_eq!(u(c, "connected"), 50);
    assert_eq!(u(c, "failed"), 0);
    assert!(c["connect_per_s"].as_f64().unwrap() > 0.0);
    assert!(c["bytes_per_connection"].is_u64());
    assert!(u(&r["broker"], "rss_peak_kb") >= u(&r["broker"], "rss_start_kb"));
}

#[test]
fn conn_counts_failures_when_nothing_listens() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["bench", "conn", "-n", "5", "--json", "--quiet", "--port"])
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&r["connections"], "failed"), 5);
    assert_eq!(u(&r, "errors"), 5);
}
