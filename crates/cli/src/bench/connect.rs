//! The `conn` scenario: connect `--clients` clients (at `--rate` per second, or as fast as
//! `--concurrency` handshakes in flight allow), report connections/s and failures, and — with
//! `--broker-pid` — the broker's memory per open connection.

use super::report::{self, ConnStats, Counters, Report};
use super::wire::Conn;
use super::Ctx;
use std::sync::Arc;
use std::time::Duration;
use thingmq_codec::{Packet, QoS};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A handshake taking longer than this counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Subscribes to `filter` and waits for the SUBACK.
async fn subscribe_own(conn: &mut Conn, filter: &str, qos: QoS) -> anyhow::Result<()> {
    conn.queue_subscribe(filter, qos)?;
    conn.flush().await?;
    loop {
        match conn.read_packet().await? {
            Packet::SubAck(ack) => {
                if let Some(code) = ack.reasons.iter().find(|c| !c.is_success()) {
                    anyhow::bail!("subscription to {filter} refused: {code:?}");
                }
                return Ok(());
            }
            Packet::Disconnect(d) => anyhow::bail!("broker disconnected: {:?}", d.reason),
            _ => {}
        }
    }
}

pub(crate) async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<Report> {
    let a = &ctx.args;
    let n = a.clients;
    let limit = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        let (ctx, limit) = (ctx.clone(), limit.clone());
        let due = (a.rate > 0.0).then(|| start + Duration::from_secs_f64(i as f64 / a.rate));
        set.spawn(async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            let _permit = limit.acquire().await.expect("semaphore never closed");
            let id = ctx.client_id("conn", i);
            let prefix = ctx.args.subscribe_own.clone();
            let qos = ctx.qos;
            let r = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut conn = Conn::connect(ctx.addr, &id, ctx.version).await?;
                if let Some(prefix) = prefix {
                    subscribe_own(&mut conn, &format!("{prefix}/{id}"), qos).await?;
                }
                anyhow::Ok(conn)
            })
            .await;
            match r {
                Ok(Ok(conn)) => {
                    Counters::add(&ctx.counters.connected, 1);
                    Some((conn, Instant::now()))
                }
                Ok(Err(e)) => {
                    tracing::debug!("connect {i}: {e:#}");
                    Counters::add(&ctx.counters.errors, 1);
                    None
                }
                Err(_) => {
                    Counters::add(&ctx.counters.errors, 1);
                    None
                }
            }
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut last = start;
    while let Some(r) = set.join_next().await {
        if let Ok(Some((conn, at))) = r {
            last = last.max(at);
            held.push(conn);
        }
    }
    let connected = held.len() as u64;
    let secs = last.duration_since(start).as_secs_f64();
    let mut stats = ConnStats {
        attempted: n as u64,
        connected,
        failed: n as u64 - connected,
        connect_per_s: report::rate(connected, secs),
        rss_connected_kb: None,
        bytes_per_connection: None,
    };
    if ctx.probe.is_some() {
        // The broker finishes allocating for the last connections (and may shrink idle ones).
        tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
        let before = ctx
            .probe
            .as_ref()
            .and_then(|p| p.lock().ok().map(|p| p.rss_start_kb()));
        if let (Some(before), Some(after)) = (before, ctx.sample_rss()) {
            stats.rss_connected_kb = Some(after);
            stats.bytes_per_connection =
                Some(report::bytes_per_connection(before, after, connected));
        }
    }
    if a.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }
    drop(held);
    Ok(Report {
        duration_s: secs,
        errors: Counters::get(&ctx.counters.errors),
        connections: Some(stats),
        ..Report::default()
    })
}
