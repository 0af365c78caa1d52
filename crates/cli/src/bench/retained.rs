//! The `retained` scenario: one publisher stores `--topics` retained messages under
//! `bench/r/…` (QoS 1, so every one is acknowledged before the clock starts), then
//! `--subscribers` clients subscribe to `bench/r/#` and the time until they have received
//! them all gives retained messages delivered per second.

use super::flow::{self, PubSpec, TopicCycle};
use super::report::{self, Counters, Report};
use super::Ctx;
use anyhow::bail;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thingmq_codec::QoS;
use tokio::time::Instant;

/// Longest time the store phase may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<Report> {
    let a = &ctx.args;
    let topics = if a.topics > 0 { a.topics } else { 10_000 };
    let nsub = a.subscribers.unwrap_or(1);

    let mut conns = flow::connect_many(ctx, "store", 1, &tokio::runtime::Handle::current()).await?;
    let conn = conns.pop().expect("one connection");
    let start = Instant::now();
    let spec = PubSpec {
        topics: TopicCycle {
            list: Arc::new(flow::topic_list(topics, "bench/r")),
            start: 0,
            step: 1,
        },
        qos: QoS::AtLeastOnce,
        retain: true,
        size: a.size as usize,
        window: u64::from(a.inflight),
        pacer: None,
        start,
        end: start + STORE_TIMEOUT,
        limit: Some(topics as u64),
        drain: Duration::from_secs_f64(a.drain),
    };
    let (sent, acked) = flow::publish(conn, spec, ctx.counters.clone()).await;
    let store_secs = start.elapsed().as_secs_f64();
    if acked < topics as u64 {
        bail!("only {acked} of {topics} retained messages were acknowledged");
    }
    // The progress line counts deliveries from here on.
    ctx.counters.received.store(0, Ordering::Relaxed);

    let sub_start = Instant::now();
    let subs = flow::start_subscribers(ctx, nsub, |_| "bench/r/#".to_string(), false).await?;
    let expected = topics as u64 * nsub as u64;
    flow::wait_for_deliveries(
        ctx,
        Some(expected),
        Duration::from_secs_f64(a.drain.max(30.0)),
    )
    .await;
    let merged = subs.stop().await;
    let recv_secs = merged
        .last_recv
        .map(|t| t.saturating_duration_since(sub_start).as_secs_f64())
        .unwrap_or(0.0);
    Ok(Report {
        publishers: 1,
        subscribers: nsub,
        duration_s: store_secs,
        sent,
        acked,
        received: merged.received,
        expected: Some(expected),
        dropped: Some(report::dropped(expected, merged.received)),
        errors: Counters::get(&ctx.counters.errors),
        sent_per_s: report::rate(sent, store_secs),
        received_per_s: report::rate(merged.received, recv_secs),
        ..Report::default()
    })
}
