//! Rough history-write throughput: `cargo run -p thingmq-things --example history_bench -- URL ROWS`.
//! Writes ROWS property values through the HistoryWriter (batches of 1 000) and prints rows/s
//! and the last batch's latency.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::json;
use thingmq_things::store::{HistoryWriter, Record, Store, WriterConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite:///tmp/thingmq-bench.db?mode=rwc".into());
    let rows: i64 = args.next().map_or(100_000, |s| s.parse().expect("ROWS"));
    let store = Store::connect(&url).await.expect("connect");
    let config = WriterConfig {
        queue_capacity: 200_000,
        batch_rows: 1_000,
        flush_interval: Duration::from_millis(100),
        ..WriterConfig::default()
    };
    let (writer, task) = HistoryWriter::spawn(store, config);
    let started = Instant::now();
    for i in 0..rows {
        let r = Record::Property {
            product_key: "bench".into(),
            device_name: format!("dev-{}", i % 10_000),
            identifier: "temp".into(),
            time: 1_700_000_000_000 + i,
            value: json!(20.0 + (i % 100) as f64 / 10.0),
        };
        while !writer.submit(r.clone()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    writer.flush().await;
    let secs = started.elapsed().as_secs_f64();
    let s = writer.stats();
    println!(
        "{} rows in {secs:.2} s = {:.0} rows/s; last batch {} µs; dropped while queue full {}",
        s.written.load(Relaxed),
        s.written.load(Relaxed) as f64 / secs,
        s.last_batch_us.load(Relaxed),
        s.dropped.load(Relaxed)
    );
    drop(writer);
    task.await.unwrap();
}
