//! Broker-wide counters, updated with relaxed atomics from every task and read by `$SYS`
//! and the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (µs) of the latency histogram buckets: from a page-cache write (tens of µs)
/// to a stalled disk (a second), roughly ×2.5 apart as Prometheus' defaults are.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A latency histogram with fixed buckets, written with relaxed atomics (by one writer in
/// practice: a store task) and read by `/metrics` as a Prometheus histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is above every bound (+Inf).
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A named histogram, for `/metrics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Histogram {
    /// Prometheus name without the `thingmq_` prefix.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its buckets now.
    pub value: HistogramSnapshot,
}

/// A histogram read at one moment, in Prometheus' terms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative, ending with
    /// `f64::INFINITY` (rendered `+Inf`).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&le| le < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The cumulative buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            // Prometheus requires the count to equal the +Inf bucket.
            count: cumulative,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// How the store is doing, written by the store task. While a write fails, it is retried
/// (with back-off) and every acknowledgement that waits on it stays held.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// 1 while a write has failed and is being retried, 0 when the last write succeeded.
    pub failing: AtomicU64,
    /// Attempts to write a batch (or to fsync) that failed.
    pub write_failures: AtomicU64,
    /// Changes (operations) held in the batch being retried.
    pub held_changes: AtomicU64,
    /// How long applying a batch took (with its fsync under `sync = "always"`), for batches
    /// that succeeded.
    pub write_latency: LatencyHistogram,
    /// How long a periodic fsync took (`sync = "interval"`).
    pub sync_latency: LatencyHistogram,
}

/// Counters. All monotonic except `connections`, `sessions` and `sessions_hibernating`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Network connections with an accepted CONNECT.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Sessions (connected or not).
    pub sessions: AtomicU64,
    /// Sessions hibernating (`limits.hibernate_after_ms`), connected or not.
    pub sessions_hibernating: AtomicU64,
    /// Times a session fell asleep since start: against the wake-ups a client's traffic
    /// causes, it tells whether `hibernate_after_ms` is too short for it.
    pub hibernations_total: AtomicU64,
    /// PUBLISH packets received.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_sent: AtomicU64,
    /// PUBLISH packets received, by QoS (index 0, 1, 2).
    pub received_by_qos: [AtomicU64; 3],
    /// PUBLISH packets sent, by QoS (index 0, 1, 2).
    pub sent_by_qos: [AtomicU64; 3],
    /// Bytes read from clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients.
    pub bytes_sent: AtomicU64,
    /// Messages dropped because a session's queue or inbox was full.
    pub dropped_queue_full: AtomicU64,
    /// QoS 0 messages not delivered to offline sessions.
    pub dropped_offline: AtomicU64,
    /// Messages that expired before delivery.
    pub dropped_expired: AtomicU64,
    /// Messages larger than a client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Connections refused because a connection limit was reached.
    pub refused_connections: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Publishes, subscriptions, deliveries and wills refused by the access policy.
    pub denied: AtomicU64,
    /// Connections refused for bad credentials or as not authorized.
    pub auth_failures: AtomicU64,
    /// Connections whose TLS handshake or WebSocket upgrade failed (untrusted or expired
    /// client certificate, wrong path, origin not allowed, not TLS at all, …).
    pub handshake_failures: AtomicU64,
    /// Connections closed because their TLS/WebSocket handshake and CONNECT did not complete
    /// within `limits.connect_timeout_ms`.
    pub connect_timeouts: AtomicU64,
    /// CONNECTs refused for what they ask (client id too long, keep-alive above the maximum,
    /// unsupported protocol version, …).
    pub connects_refused: AtomicU64,
    /// Packets from clients larger than `mqtt.max_packet_size` (their connection is closed).
    pub packets_too_large: AtomicU64,
    /// v5 clients that sent more unacknowledged QoS 1/2 PUBLISHes than our Receive Maximum
    /// (their connection is closed).
    pub receive_maximum_exceeded: AtomicU64,
    /// Times a connection's socket reads were paused by `limits.max_publish_rate` or
    /// `limits.max_publish_bytes_rate`.
    pub publish_throttled: AtomicU64,
    /// The store's health, when sessions are persisted (`[storage]`).
    pub store: Option<Arc<StoreHealth>>,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Calls `f(name, labels, help, kind, value)` for every counter, named as in Prometheus
    /// (without the `thingmq_` prefix); `labels` is empty or a label set such as `qos="1"`
    /// (samples of one name come one after another); `kind` is `counter` or `gauge`.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&'static str, &'static str, &'static str, &'static str, u64),
    ) {
        let all: [(&str, &str, &str, &AtomicU64); 23] = [
            (
                "connections",
                "Network connections with an accepted CONNECT",
                "gauge",
                &self.connections,
            ),
            (
                "connections_total",
                "Connections accepted since start",
                "counter",
                &self.connections_total,
            ),
            (
                "sessions",
                "Sessions, connected or not",
                "gauge",
                &self.sessions,
            ),
            (
                "sessions_hibernating",
                "Sessions hibernating (idle for limits.hibernate_after_ms), connected or not",
                "gauge",
                &self.sessions_hibernating,
            ),
            (
                "hibernations_total",
                "Times a session fell asleep (limits.hibernate_after_ms)",
                "counter",
                &self.hibernations_total,
            ),
            (
                "messages_received_total",
                "PUBLISH packets received",
                "counter",
                &self.messages_received,
            ),
            (
                "messages_sent_total",
                "PUBLISH packets sent",
                "counter",
                &self.messages_sent,
            ),
            (
                "bytes_received_total",
                "Bytes read from clients",
                "counter",
                &self.bytes_received,
            ),
            (
                "bytes_sent_total",
                "Bytes written to clients",
                "counter",
                &self.bytes_sent,
            ),
            (
                "dropped_queue_full_total",
                "Messages dropped because a session queue was full",
                "counter",
                &self.dropped_queue_full,
            ),
            (
                "dropped_offline_total",
                "QoS 0 messages not delivered to offline sessions",
                "counter",
                &self.dropped_offline,
            ),
            (
                "dropped_expired_total",
                "Messages expired before delivery",
                "counter",
                &self.dropped_expired,
            ),
            (
                "dropped_too_large_total",
                "Messages over a client's Maximum Packet Size",
                "counter",
                &self.dropped_too_large,
            ),
            (
                "refused_connections_total",
                "Connections refused at a connection limit",
                "counter",
                &self.refused_connections,
            ),
            (
                "protocol_errors_total",
                "Connections closed for a protocol violation",
                "counter",
                &self.protocol_errors,
            ),
            (
                "denied_total",
                "Publishes, subscriptions, deliveries and wills denied by the ACL",
                "counter",
                &self.denied,
            ),
            (
                "auth_failures_total",
                "Connections refused for credentials",
                "counter",
                &self.auth_failures,
            ),
            (
                "handshake_failures_total",
                "TLS handshakes and WebSocket upgrades that failed",
                "counter",
                &self.handshake_failures,
            ),
            (
                "connect_timeouts_total",
                "Connections closed by the connect timeout",
                "counter",
                &self.connect_timeouts,
            ),
            (
                "connects_refused_total",
                "CONNECTs refused for what they ask (client id, keep-alive, version)",
                "counter",
                &self.connects_refused,
            ),
            (
                "packets_too_large_total",
                "Packets over the maximum packet size",
                "counter",
                &self.packets_too_large,
            ),
            (
                "receive_maximum_exceeded_total",
                "Clients that exceeded our Receive Maximum",
                "counter",
                &self.receive_maximum_exceeded,
            ),
            (
                "publish_throttled_total",
                "Pauses in reading a client over its publish rate limits",
                "counter",
                &self.publish_throttled,
            ),
        ];
        for (name, help, kind, value) in all {
            f(name, "", help, kind, Self::get(value));
        }
        const QOS: [&str; 3] = ["qos=\"0\"", "qos=\"1\"", "qos=\"2\""];
        for (labels, value) in QOS.iter().zip(&self.received_by_qos) {
            let help = "PUBLISH packets received, by QoS";
            f(
                "publish_received_total",
                labels,
                help,
                "counter",
                Self::get(value),
            );
        }
        for (labels, value) in QOS.iter().zip(&self.sent_by_qos) {
            let help = "PUBLISH packets sent, by the QoS they were sent with";
            f(
                "publish_sent_total",
                labels,
                help,
                "counter",
                Self::get(value),
            );
        }
        if let Some(h) = &self.store {
            let store: [(&str, &str, &str, &AtomicU64); 3] = [
                (
                    "store_failing",
                    "1 while a store write fails and is retried (acknowledgements are held)",
                    "gauge",
                    &h.failing,
                ),
                (
                    "store_write_failures_total",
                    "Store writes and fsyncs that failed",
                    "counter",
                    &h.write_failures,
                ),
                (
                    "store_held_changes",
                    "Changes in the store batch being retried",
                    "gauge",
                    &h.held_changes,
                ),
            ];
            for (name, help, kind, value) in store {
                f(name, "", help, kind, Self::get(value));
            }
        }
    }

    /// The latency histograms, named as in Prometheus (without `thingmq_` and `_bucket`).
    pub fn histograms(&self) -> Vec<Histogram> {
        let mut all = Vec::new();
        if let Some(h) = &self.store {
            all.push(Histogram {
                name: "store_write_seconds",
                help: "Time to apply a session-store batch (with its fsync under sync = always)",
                value: h.write_latency.snapshot(),
            });
            all.push(Histogram {
                name: "store_sync_seconds",
                help: "Time of a periodic session-store fsync (sync = interval)",
                value: h.sync_latency.snapshot(),
            });
        }
        all
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_at_or_above_it() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // exactly on the first bound
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(s.buckets[0], (0.00005, 1));
        assert_eq!(s.buckets[1], (0.0001, 2));
        assert_eq!(s.buckets[5].1, 2); // le 2.5 ms
        assert_eq!(s.buckets[6], (0.005, 3));
        assert_eq!(s.buckets[13], (1.0, 3));
        assert_eq!(s.buckets[14].1, 4);
        assert!(s.buckets[14].0.is_infinite());
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 5.003101).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
