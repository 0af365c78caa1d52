//! `/metrics` in the Prometheus text exposition format (version 0.0.4).

use crate::ApiState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use thingmq_server::metrics::Histogram;

/// Prometheus text: each family's HELP and TYPE once, before its first sample.
#[derive(Default)]
struct Exposition {
    text: String,
    last_family: &'static str,
}

impl Exposition {
    fn sample(&mut self, name: &'static str, labels: &str, help: &str, kind: &str, value: u64) {
        if self.last_family != name {
            self.header(name, help, kind);
        }
        let text = &mut self.text;
        let _ = if labels.is_empty() {
            writeln!(text, "thingmq_{name} {value}")
        } else {
            writeln!(text, "thingmq_{name}{{{labels}}} {value}")
        };
    }

    fn header(&mut self, name: &'static str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP thingmq_{name} {help}");
        let _ = writeln!(self.text, "# TYPE thingmq_{name} {kind}");
        self.last_family = name;
    }

    fn histogram(&mut self, h: &Histogram) {
        self.header(h.name, h.help, "histogram");
        let (name, text) = (h.name, &mut self.text);
        for (le, count) in &h.value.buckets {
            let _ = if le.is_infinite() {
                writeln!(text, "thingmq_{name}_bucket{{le=\"+Inf\"}} {count}")
            } else {
                writeln!(text, "thingmq_{name}_bucket{{le=\"{le}\"}} {count}")
            };
        }
        let _ = writeln!(text, "thingmq_{name}_sum {}", h.value.sum_seconds);
        let _ = writeln!(text, "thingmq_{name}_count {}", h.value.count);
    }
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub(crate) async fn prometheus(State(state): State<ApiState>) -> impl IntoResponse {
    let overview = state.admin.overview();
    let mut out = Exposition::default();
    for c in &overview.counters {
        out.sample(c.name, c.labels, c.help, c.kind, c.value);
    }
    let mut metric = |name: &'static str, help: &str, kind: &str, value: u64| {
        out.sample(name, "", help, kind, value)
    };
    metric(
        "subscriptions",
        "Subscriptions in the router",
        "gauge",
        overview.subscriptions as u64,
    );
    metric(
        "retained_messages",
        "Retained messages stored",
        "gauge",
        overview.retained as u64,
    );
    metric(
        "uptime_seconds",
        "Seconds since the broker started",
        "counter",
        overview.uptime_secs,
    );
    let depths = state.admin.queue_depths();
    for (name, help, value) in [
        (
            "session_queued_messages",
            "Messages waiting in session queues (offline, or over the in-flight window)",
            depths.queued,
        ),
        (
            "session_queued_messages_max",
            "Messages waiting in the deepest session queue",
            depths.queued_max,
        ),
        (
            "sessions_queueing",
            "Sessions with at least one message waiting",
            depths.sessions_queueing,
        ),
        (
            "session_inflight_messages",
            "Deliveries sent and not yet acknowledged, over all sessions",
            depths.inflight,
        ),
        (
            "session_inflight_messages_max",
            "Unacknowledged deliveries of the session with the most",
            depths.inflight_max,
        ),
    ] {
        metric(name, help, "gauge", value);
    }
    if let Some(p) = &state.platform {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (s, w) = (p.stats(), p.writer_stats());
        for (name, help, kind, value) in [
            (
                "things_devices_online",
                "Devices connected now",
                "gauge",
                p.online_count() as u64,
            ),
            (
                "things_uplinks_total",
                "Device messages handled",
                "counter",
                get(&s.uplinks),
            ),
            (
                "things_uplinks_rejected_total",
                "Device messages of unknown or disabled devices",
                "counter",
                get(&s.rejected),
            ),
            (
                "things_uplinks_throttled_total",
                "Device messages refused with Alink code 429 (device over its rate)",
                "counter",
                get(&s.throttled),
            ),
            (
                "things_uplinks_dropped_total",
                "Device messages dropped because the device layer fell behind",
                "counter",
                get(&s.dropped),
            ),
            (
                "things_history_rows_written_total",
                "History rows (properties, events, status, calls) stored",
                "counter",
                get(&w.written),
            ),
            (
                "things_history_rows_dropped_total",
                "History rows dropped because the writer queue was full",
                "counter",
                get(&w.dropped),
            ),
            (
                "things_history_rows_failed_total",
                "History rows lost because the database refused their batch",
                "counter",
                get(&w.failed),
            ),
            (
                "things_history_batches_total",
                "History batches committed",
                "counter",
                get(&w.batches),
            ),
            (
                "things_history_queued_records",
                "History records waiting for the writer",
                "gauge",
                p.writer_queued() as u64,
            ),
            (
                "things_history_last_batch_microseconds",
                "Duration of the last committed history batch",
                "gauge",
                get(&w.last_batch_us),
            ),
        ] {
            metric(name, help, kind, value);
        }
    }
    for h in state.admin.histograms() {
        out.histogram(&h);
    }
    if let Some(p) = &state.platform {
        out.histogram(&Histogram {
            name: "things_history_batch_seconds",
            help: "Time to commit a history batch",
            value: p.writer_stats().batch_latency.snapshot(),
        });
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.text,
    )
}
