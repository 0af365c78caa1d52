//! A subscriber that never reads its socket while a publisher floods it with QoS 0 and QoS 1
//! messages: the broker's memory stays bounded (QoS 0 past `limits.outbound_queue` and QoS 1
//! past `mqtt.max_queued_messages` are dropped and counted) and other clients keep being
//! served.
//!
//! Alone in its test binary on purpose: it measures the resident memory of this process
//! (the in-process broker plus the test's small clients), which other tests running in
//! parallel threads would disturb.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thingmq_server::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resident set size of this process in bytes (`VmRSS` of /proc/self/status).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

const PAYLOAD: usize = 4096;
const QOS0_MESSAGES: u64 = 40_000;
const QOS1_MESSAGES: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_that_never_reads_does_not_grow_broker_memory_and_others_are_served() {
    let (server, addr) = start("[sys]\ninterval_secs = 0").await;
    // Warm up allocator and runtime so the baseline is not the empty process.
    let mut warm = raw_connect(addr, "warm").await;
    raw_subscribe(&mut warm, "warm", 0).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss();

    // The sluggard subscribes to everything the flood sends, at QoS 1, then never reads.
    let mut sluggard = raw_connect(addr, "sluggard").await;
    raw_subscribe(&mut sluggard, "flood/#", 1).await;

    let peak = Arc::new(AtomicU64::new(baseline));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, flooding) = (peak.clone(), flooding.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // QoS 0 flood, written in batches through one connection.
    let mut qos0 = raw_connect(addr, "flood-qos0").await;
    let qos0_task = tokio::spawn(async move {
        let batch = publish_packet("flood/zero", &[b'0'; PAYLOAD], None).repeat(100);
        for _ in 0..QOS0_MESSAGES / 100 {
            qos0.write_all(&batch).await.unwrap();
        }
        qos0
    });
    // QoS 1 flood on another connection; its PUBACKs are drained as they come.
    let qos1 = raw_connect(addr, "flood-qos1").await;
    let (mut qos1_read, mut qos1_write) = qos1.into_split();
    let acks = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        while bytes < QOS1_MESSAGES * 4 {
            match qos1_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes += n as u64,
            }
        }
        bytes / 4
    });
    let qos1_task = tokio::spawn(async move {
        for i in 0..QOS1_MESSAGES {
            let id = (i % 65535 + 1) as u16;
            qos1_write
                .write_all(&publish_packet("flood/one", &[b'1'; PAYLOAD], Some(id)))
                .await
                .unwrap();
        }
        qos1_write
    });

    // Meanwhile a normal client keeps getting round trips through the broker.
    let mut other = raw_connect(addr, "other").await;
    raw_subscribe(&mut other, "other/t", 0).await;
    let mut worst = Duration::ZERO;
    let mut round_trips = 0;
    while !(qos0_task.is_finished() && qos1_task.is_finished()) && round_trips < 200 {
        let sent = Instant::now();
        other
            .write_all(&publish_packet("other/t", b"ping", None))
            .await
            .unwrap();
        let (_, payload) = within("round trip during the flood", read_publish(&mut other)).await;
        assert_eq!(payload, b"ping");
        worst = worst.max(sent.elapsed());
        round_trips += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _qos0 = within("the QoS 0 flood", qos0_task).await.unwrap();
    let _qos1 = within("the QoS 1 flood", qos1_task).await.unwrap();
    let acked = within("every PUBACK", acks).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    flooding.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    let flood_bytes = (QOS0_MESSAGES + QOS1_MESSAGES) * PAYLOAD as u64;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    let dropped = Metrics::get(&server.metrics().dropped_queue_full);
    eprintln!(
        "flood {} MiB, peak RSS growth {} MiB, dropped {dropped}, {round_trips} round trips, worst {worst:?}",
        flood_bytes >> 20,
        growth >> 20
    );
    assert_eq!(acked, QOS1_MESSAGES, "every QoS 1 PUBLISH acknowledged");
    // What may stay: 1,000 QoS 0 and 1,000 QoS 1 messages in the inbox, 1,000 in the session
    // queue, the in-flight window and 256 KiB of write buffer — about 13 MiB of payload,
    // some of it pinning the read buffers it was decoded from.
    assert!(
        growth < 96 << 20,
        "broker memory grew by {} MiB for a {} MiB flood",
        growth >> 20,
        flood_bytes >> 20
    );
    assert!(
        dropped > 0,
        "messages for the sluggard were dropped and counted"
    );
    assert!(
        round_trips >= 5,
        "{round_trips} round trips during the flood"
    );
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    drop(sluggard);
    server.shutdown().await;
}
