//! Broker-wide counters, updated with relaxed atomics from every task and read by `$SYS`
//! (and later the metrics endpoint).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters. All monotonic except `connections` and `sessions`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Network connections with an accepted CONNECT.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Sessions (connected or not).
    pub sessions: AtomicU64,
    /// PUBLISH packets received.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_sent: AtomicU64,
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
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
