//! Counters shared by the load tasks, the latency histogram, and the final report (text or
//! JSON).

use super::procfs::BrokerStats;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, read by the progress line. Tasks add in batches (per socket read or per
/// written batch), not per message, so the counters are not a contention point.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A latency histogram in microseconds, 1 µs to 1 hour at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of the end-to-end latency, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) mean_us: f64,
}

impl Latency {
    /// `None` when nothing was recorded.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        })
    }
}

/// Messages per second; 0 over an empty interval rather than infinity.
pub(crate) fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// The final report of one run. Fields that do not apply to a scenario are left out of the
/// JSON.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) mqtt_version: String,
    pub(crate) qos: u8,
    pub(crate) payload_bytes: usize,
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    /// Seconds the publishers ran (or the connect phase took, for `conn`).
    pub(crate) duration_s: f64,
    pub(crate) sent: u64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2) the publishers got back.
    pub(crate) acked: u64,
    pub(crate) received: u64,
    /// Deliveries the scenario should produce, when it knows (`sent` × matching subscribers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expected: Option<u64>,
    /// `expected - received` (messages the broker dropped or had not delivered in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dropped: Option<u64>,
    pub(crate) errors: u64,
    pub(crate) sent_per_s: f64,
    /// Deliveries per second, from the first publish to the last delivery.
    pub(crate) received_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connections: Option<ConnStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) broker: Option<BrokerStats>,
}

/// Figures of the `conn` scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ConnStats {
    pub(crate) attempted: u64,
    pub(crate) connected: u64,
    pub(crate) failed: u64,
    pub(crate) connect_per_s: f64,
    /// Broker RSS with every connection open, after a settle pause (with `--broker-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_connected_kb: Option<u64>,
    /// (RSS connected − RSS before) / connections, in bytes (with `--broker-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_per_connection: Option<u64>,
}

/// Memory per connection in bytes: the RSS growth spread over the connections.
pub(crate) fn bytes_per_connection(rss_before_kb: u64, rss_after_kb: u64, conns: u64) -> u64 {
    if conns == 0 {
        return 0;
    }
    rss_after_kb.saturating_sub(rss_before_kb) * 1024 / conns
}

/// `expected - received`, never negative (duplicates at QoS 1 can push `received` over).
pub(crate) fn dropped(expected: u64, received: u64) -> u64 {
    expected.saturating_sub(received)
}

impl Report {
    /// The human-readable report.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (MQTT {}, QoS {}, {} B payload, {} publishers, {} subscribers)",
            self.scenario,
            self.mqtt_version,
            self.qos,
            self.payload_bytes,
            self.publishers,
            self.subscribers
        );
        if let Some(c) = &self.connections {
            let _ = writeln!(
                s,
                "connections  {} of {} in {:.2} s: {:.0}/s, {} failed",
                c.connected, c.attempted, self.duration_s, c.connect_per_s, c.failed
            );
            if let (Some(rss), Some(per)) = (c.rss_connected_kb, c.bytes_per_connection) {
                let _ = writeln!(s, "memory       {rss} kB connected, {per} B per connection");
            }
        } else {
            let _ = writeln!(
                s,
                "sent         {} in {:.2} s: {:.0} msg/s (acked {})",
                self.sent, self.duration_s, self.sent_per_s, self.acked
            );
            let _ = write!(
                s,
                "received     {}: {:.0} msg/s",
                self.received, self.received_per_s
            );
            match (self.expected, self.dropped) {
                (Some(e), Some(d)) => {
                    let _ = writeln!(s, " (expected {e}, missing {d})");
                }
                _ => s.push('\n'),
            }
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "latency      p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
            );
        }
        let _ = writeln!(s, "errors       {}", self.errors);
        if let Some(b) = &self.broker {
            let _ = writeln!(
                s,
                "broker       pid {}: RSS {} → {} kB (peak {} kB), CPU {:.0}%",
                b.pid, b.rss_start_kb, b.rss_end_kb, b.rss_peak_kb, b.cpu_percent
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50_us, 500);
        assert_eq!(l.p90_us, 900);
        assert_eq!(l.p99_us, 990);
        assert_eq!(l.p999_us, 999);
        assert_eq!(l.max_us, 1000);
        assert!((l.mean_us - 500.5).abs() < 0.5);
        assert_eq!(Latency::from_histogram(&new_histogram()), None);
    }

    #[test]
    fn rates_and_drops() {
        assert_eq!(rate(1000, 2.0), 500.0);
        assert_eq!(rate(1000, 0.0), 0.0);
        assert_eq!(dropped(100, 90), 10);
        assert_eq!(dropped(100, 105), 0);
    }

    #[test]
    fn memory_per_connection_spreads_rss_growth() {
        // 10,000 connections growing RSS from 5 MB to 15 MB: 1024 bytes each.
        assert_eq!(bytes_per_connection(5_000, 15_000, 10_000), 1024);
        assert_eq!(bytes_per_connection(5_000, 4_000, 10), 0);
        assert_eq!(bytes_per_connection(5_000, 6_000, 0), 0);
    }

    #[test]
    fn json_leaves_out_what_does_not_apply() {
        let r = Report {
            scenario: "pub".into(),
            ..Report::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"scenario\":\"pub\""));
        assert!(!json.contains("latency"));
        assert!(!json.contains("connections"));
        assert!(r.to_text().contains("scenario pub"));
    }
}
