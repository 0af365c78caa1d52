//! The publish/subscribe scenarios (`pub`, `sub`, `fanin`, `fanout`, `shared`, `pairs`):
//! connect the subscribers and wait for their SUBACKs, connect the publishers, publish for
//! `--duration`, then wait for outstanding deliveries and merge the subscribers' histograms.

use super::pacing::Pacer;
use super::payload;
use super::report::{self, Counters, Latency, Report};
use super::wire::Conn;
use super::{Ctx, Scenario};
use anyhow::{bail, Context};
use bytes::Bytes;
use bytestring::ByteString;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::Duration;
use thingmq_codec::{Packet, PacketId, PubAck, PubComp, PubRec, PubRel, Publish, QoS};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Publishes encoded per write: enough to amortise the system call, small enough that the
/// timestamps inside one batch are microseconds apart.
const BATCH: u64 = 64;

/// How long subscribers may take to get their SUBACKs.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Deliveries stop being waited for after this long without progress.
const IDLE_DRAIN: Duration = Duration::from_secs(1);

pub(crate) async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<Report> {
    let a = &ctx.args;
    let (npub, nsub) = match a.scenario {
        Scenario::Pub => (a.publishers.unwrap_or(10), a.subscribers.unwrap_or(0)),
        Scenario::Sub => (a.publishers.unwrap_or(0), a.subscribers.unwrap_or(10)),
        Scenario::Fanin => (a.publishers.unwrap_or(100), a.subscribers.unwrap_or(1)),
        Scenario::Fanout => (a.publishers.unwrap_or(1), a.subscribers.unwrap_or(100)),
        Scenario::Shared => (a.publishers.unwrap_or(10), a.subscribers.unwrap_or(10)),
        Scenario::Pairs => {
            let n = a.publishers.or(a.subscribers).unwrap_or(100);
            (n, n)
        }
        Scenario::Conn | Scenario::Retained => unreachable!("not a flow scenario"),
    };
    let filter = |i: usize| match (&a.filter, a.scenario) {
        (Some(f), _) => f.clone(),
        (None, Scenario::Pairs) => format!("bench/{i}"),
        (None, Scenario::Shared) => "$share/bench/bench/#".to_string(),
        (None, _) => "bench/#".to_string(),
    };
    // Deliveries per publish, when the scenario knows it: every subscriber matches `bench/#`,
    // and a shared group or a pair delivers each message once.
    let fan = match (a.scenario, &a.filter) {
        (_, Some(_)) | (Scenario::Pub | Scenario::Sub, _) => None,
        (Scenario::Pairs | Scenario::Shared, None) => Some(1),
        (_, None) => Some(nsub as u64),
    };

    let subs = start_subscribers(ctx, nsub, filter, true).await?;
    let topics = Arc::new(topic_list(
        if a.topics > 0 { a.topics } else { npub },
        "bench",
    ));
    let conns = connect_many(ctx, "pub", npub, &tokio::runtime::Handle::current()).await?;

    let start = Instant::now() + Duration::from_millis(20);
    let duration = Duration::from_secs_f64(a.duration);
    let per_pub_rate = (a.rate > 0.0 && npub > 0).then(|| a.rate / npub as f64);
    let mut pubs = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let spec = PubSpec {
            topics: TopicCycle {
                list: topics.clone(),
                start: i,
                step: npub,
            },
            qos: ctx.qos,
            retain: false,
            size: a.size as usize,
            window: u64::from(a.inflight),
            // Stagger the schedules so paced publishers do not fire in lock-step.
            pacer: per_pub_rate
                .map(|r| Pacer::new(r, Duration::from_secs_f64(i as f64 / (r * npub as f64)))),
            start,
            end: start + duration,
            limit: None,
            drain: Duration::from_secs_f64(a.drain),
        };
        pubs.spawn(publish(conn, spec, ctx.counters.clone()));
    }
    let mut sent_total = (0, 0);
    while let Some(r) = pubs.join_next().await {
        let (sent, acked) = r.context("publisher task panicked")?;
        sent_total.0 += sent;
        sent_total.1 += acked;
    }
    let (sent, acked) = sent_total;
    if npub == 0 {
        tokio::time::sleep_until(start + duration).await;
    }
    let expected = fan.map(|f| sent * f);
    if nsub > 0 {
        wait_for_deliveries(ctx, expected, Duration::from_secs_f64(a.drain)).await;
    }
    let merged = subs.stop().await;

    let secs = duration.as_secs_f64();
    let recv_secs = merged
        .last_recv
        .map(|t| t.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(secs);
    Ok(Report {
        publishers: npub,
        subscribers: nsub,
        duration_s: secs,
        sent,
        acked,
        received: merged.received,
        expected,
        dropped: expected.map(|e| report::dropped(e, merged.received)),
        errors: Counters::get(&ctx.counters.errors),
        sent_per_s: report::rate(sent, secs),
        received_per_s: report::rate(merged.received, recv_secs),
        latency: Latency::from_histogram(&merged.hist),
        ..Report::default()
    })
}

/// `prefix/0 … prefix/(n-1)`.
pub(crate) fn topic_list(n: usize, prefix: &str) -> Vec<ByteString> {
    (0..n.max(1))
        .map(|k| ByteString::from(format!("{prefix}/{k}")))
        .collect()
}

/// The topic of each publish: publisher `start` of `step` takes every `step`-th topic, so
/// together the publishers cover the list.
#[derive(Debug, Clone)]
pub(crate) struct TopicCycle {
    pub(crate) list: Arc<Vec<ByteString>>,
    pub(crate) start: usize,
    pub(crate) step: usize,
}

impl TopicCycle {
    pub(crate) fn get(&self, seq: u64) -> ByteString {
        let i = (self.start as u64 + seq * self.step as u64) % self.list.len() as u64;
        self.list[i as usize].clone()
    }
}

/// Connects `n` clients, `--concurrency` handshakes at a time. Any failure fails the run: a
/// throughput figure over fewer clients than asked for would mislead.
/// The sockets belong to the runtime `on` (the one whose tasks will drive them).
pub(crate) async fn connect_many(
    ctx: &Arc<Ctx>,
    role: &str,
    n: usize,
    on: &tokio::runtime::Handle,
) -> anyhow::Result<Vec<Conn>> {
    let limit = Arc::new(Semaphore::new(ctx.args.concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (ctx, limit, id) = (ctx.clone(), limit.clone(), ctx.client_id(role, i));
        set.spawn_on(
            async move {
                let _permit = limit.acquire().await.expect("semaphore never closed");
                let conn = Conn::connect(ctx.addr, &id, ctx.version).await;
                if conn.is_ok() {
                    Counters::add(&ctx.counters.connected, 1);
                }
                (i, conn)
            },
            on,
        );
    }
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, conn) = r.context("connect task panicked")?;
        conns[i] = Some(conn.with_context(|| format!("{role} {i}"))?);
    }
    Ok(conns.into_iter().flatten().collect())
}

/// What one publisher does.
#[derive(Debug)]
pub(crate) struct PubSpec {
    pub(crate) topics: TopicCycle,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) size: usize,
    /// Unacknowledged QoS 1/2 publishes at most.
    pub(crate) window: u64,
    pub(crate) pacer: Option<Pacer>,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// Stop after this many publishes.
    pub(crate) limit: Option<u64>,
    /// Longest wait for the last acknowledgements after `end`.
    pub(crate) drain: Duration,
}

/// Runs one publisher; returns (sent, acknowledged). Errors are counted, not returned: the
/// report shows how far it got.
pub(crate) async fn publish(mut conn: Conn, spec: PubSpec, counters: Arc<Counters>) -> (u64, u64) {
    let mut st = PubState::default();
    if let Err(e) = publish_loop(&mut conn, &spec, &counters, &mut st).await {
        Counters::add(&counters.errors, 1);
        tracing::debug!("publisher: {e:#}");
    }
    (st.seq, st.acked)
}

#[derive(Debug, Default)]
struct PubState {
    seq: u64,
    inflight: u64,
    acked: u64,
    next_id: u16,
}

async fn publish_loop(
    conn: &mut Conn,
    spec: &PubSpec,
    counters: &Counters,
    st: &mut PubState,
) -> anyhow::Result<()> {
    let zeros = Bytes::from(vec![0u8; spec.size]);
    let acks = spec.qos != QoS::AtMostOnce;
    tokio::time::sleep_until(spec.start).await;
    loop {
        let now = Instant::now();
        let limit_left = spec.limit.map_or(u64::MAX, |l| l - st.seq);
        if now >= spec.end || limit_left == 0 {
            break;
        }
        if acks {
            while conn.try_fill()? {}
            handle_acks(conn, st, counters)?;
        }
        let room = if acks {
            spec.window - st.inflight
        } else {
            BATCH
        };
        let due = match &spec.pacer {
            Some(p) => p.due(now - spec.start).saturating_sub(st.seq),
            None => u64::MAX,
        };
        let n = room.min(due).min(BATCH).min(limit_left);
        for _ in 0..n {
            let packet_id = acks.then(|| {
                st.next_id = st.next_id.checked_add(1).unwrap_or(1);
                PacketId::new(st.next_id).expect("never zero")
            });
            let publish = Publish {
                dup: false,
                qos: spec.qos,
                retain: spec.retain,
                topic: spec.topics.get(st.seq),
                packet_id,
                properties: Default::default(),
                payload: zeros.clone(),
            };
            conn.queue(&Packet::Publish(publish))?;
            // The payload is the tail of the packet just encoded: stamp it in place.
            let len = conn.wbuf.len();
            payload::stamp(&mut conn.wbuf[len - spec.size..], payload::now_ns(), st.seq);
            st.seq += 1;
        }
        if acks {
            st.inflight += n;
        }
        Counters::add(&counters.sent, n);
        conn.flush().await?;
        if n > 0 {
            continue;
        }
        let wake = match &spec.pacer {
            Some(p) if room > 0 => (spec.start + p.at(st.seq)).min(spec.end),
            _ => spec.end,
        };
        tokio::select! {
            r = conn.stream.readable(), if acks => r?,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    // Collect the last acknowledgements (QoS 2 still needs its PUBRELs sent).
    let deadline = Instant::now() + spec.drain;
    while acks && st.inflight > 0 {
        handle_acks(conn, st, counters)?;
        conn.flush().await?;
        if st.inflight == 0 {
            break;
        }
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Ok(r) => r?,
            Err(_) => bail!("{} publishes not acknowledged in time", st.inflight),
        }
    }
    Ok(())
}

fn handle_acks(conn: &mut Conn, st: &mut PubState, counters: &Counters) -> anyhow::Result<()> {
    let before = st.acked;
    while let Some(p) = conn.next_buffered()? {
        match p {
            Packet::PubAck(_) | Packet::PubComp(_) => {
                st.inflight = st.inflight.saturating_sub(1);
                st.acked += 1;
            }
            Packet::PubRec(r) => conn.queue(&Packet::PubRel(PubRel::new(r.packet_id)))?,
            Packet::Disconnect(d) => bail!("broker disconnected the publisher: {:?}", d.reason),
            _ => {}
        }
    }
    Counters::add(&counters.acked, st.acked - before);
    Ok(())
}

/// Running subscribers and the way to stop them.
pub(crate) struct Subscribers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<SubResult>,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// What the subscribers saw, merged.
#[derive(Debug)]
pub(crate) struct SubResult {
    pub(crate) received: u64,
    pub(crate) hist: Histogram<u64>,
    pub(crate) last_recv: Option<Instant>,
}

impl Subscribers {
    /// Stops the subscribers and merges their results.
    pub(crate) async fn stop(mut self) -> SubResult {
        let _ = self.stop.send(true);
        let mut all = SubResult {
            received: 0,
            hist: report::new_histogram(),
            last_recv: None,
        };
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(r) = r {
                all.received += r.received;
                let _ = all.hist.add(&r.hist);
                all.last_recv = all.last_recv.max(r.last_recv);
            }
        }
        all
    }
}

/// Connects `n` subscribers, subscribes each to `filter(i)` and waits for every SUBACK.
pub(crate) async fn start_subscribers(
    ctx: &Arc<Ctx>,
    n: usize,
    filter: impl Fn(usize) -> String,
    record_latency: bool,
) -> anyhow::Result<Subscribers> {
    let conns = connect_many(ctx, "sub", n, &ctx.sub_runtime).await?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut ready = Vec::with_capacity(n);
    for (i, conn) in conns.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        tasks.spawn_on(
            subscribe(
                conn,
                filter(i),
                ctx.qos,
                tx,
                stop_rx.clone(),
                ctx.counters.clone(),
                record_latency,
            ),
            &ctx.sub_runtime,
        );
    }
    let subs = Subscribers { stop, tasks };
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    for (i, rx) in ready.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("subscriber {i}: {e}"),
            Ok(Err(_)) => bail!("subscriber {i} failed before its SUBACK"),
            Err(_) => bail!("subscriber {i}: no SUBACK within {SUBSCRIBE_TIMEOUT:?}"),
        }
    }
    Ok(subs)
}

async fn subscribe(
    mut conn: Conn,
    filter: String,
    qos: QoS,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    record_latency: bool,
) -> SubResult {
    let mut r = SubResult {
        received: 0,
        hist: report::new_histogram(),
        last_recv: None,
    };
    let mut ready = Some(ready);
    let result = async {
        conn.queue_subscribe(&filter, qos)?;
        conn.flush().await?;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                f = conn.fill() => f?,
            }
            // One clock reading per socket read: everything in it arrived at the same moment.
            let now_ns = payload::now_ns();
            let mut n = 0;
            while let Some(p) = conn.next_buffered()? {
                match p {
                    Packet::Publish(p) => {
                        n += 1;
                        if record_latency {
                            if let Some((sent, _)) = payload::read(&p.payload) {
                                r.hist.saturating_record(payload::latency_us(sent, now_ns));
                            }
                        }
                        match (p.qos, p.packet_id) {
                            (QoS::AtLeastOnce, Some(id)) => {
                                conn.queue(&Packet::PubAck(PubAck::new(id)))?
                            }
                            (QoS::ExactlyOnce, Some(id)) => {
                                conn.queue(&Packet::PubRec(PubRec::new(id)))?
                            }
                            _ => {}
                        }
                    }
                    Packet::PubRel(rel) => {
                        conn.queue(&Packet::PubComp(PubComp::new(rel.packet_id)))?
                    }
                    Packet::SubAck(ack) => {
                        let refused = ack.reasons.iter().find(|c| !c.is_success());
                        let answer = match refused {
                            Some(code) => Err(format!("subscription refused: {code:?}")),
                            None => Ok(()),
                        };
                        let failed = answer.is_err();
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(answer);
                        }
                        if failed {
                            bail!("subscription to {filter} refused");
                        }
                    }
                    Packet::Disconnect(d) => bail!("broker disconnected: {:?}", d.reason),
                    _ => {}
                }
            }
            if n > 0 {
                r.received += n;
                r.last_recv = Some(Instant::now());
                Counters::add(&counters.received, n);
            }
            conn.flush().await?;
        }
    }
    .await;
    if let Err(e) = result {
        let e: anyhow::Error = e;
        Counters::add(&counters.errors, 1);
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(format!("{e:#}")));
        }
        tracing::debug!("subscriber: {e:#}");
    }
    r
}

/// Waits until `expected` deliveries arrived, or none arrived for [`IDLE_DRAIN`], or `max`
/// passed. Without an expectation, waits for the deliveries to stop.
pub(crate) async fn wait_for_deliveries(ctx: &Ctx, expected: Option<u64>, max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = (Counters::get(&ctx.counters.received), Instant::now());
    while Instant::now() < deadline {
        let now_count = Counters::get(&ctx.counters.received);
        if expected.is_some_and(|e| now_count >= e) {
            return;
        }
        if now_count != last.0 {
            last = (now_count, Instant::now());
        } else if last.1.elapsed() >= IDLE_DRAIN {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_together_cover_every_topic() {
        let list = Arc::new(topic_list(10, "bench"));
        let mut seen = std::collections::BTreeSet::new();
        for start in 0..3 {
            let c = TopicCycle {
                list: list.clone(),
                start,
                step: 3,
            };
            for seq in 0..10 {
                seen.insert(c.get(seq).to_string());
            }
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn one_topic_per_publisher_without_topics() {
        let c = TopicCycle {
            list: Arc::new(topic_list(4, "bench")),
            start: 2,
            step: 4,
        };
        assert!((0..5).all(|s| c.get(s) == "bench/2"));
    }
}
