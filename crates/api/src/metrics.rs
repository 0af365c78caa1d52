//! `/metrics` in the Prometheus text exposition format (version 0.0.4).

use crate::ApiState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub(crate) async fn prometheus(State(state): State<ApiState>) -> impl IntoResponse {
    let overview = state.admin.overview();
    let mut text = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(text, "# HELP thingmq_{name} {help}");
        let _ = writeln!(text, "# TYPE thingmq_{name} {kind}");
        let _ = writeln!(text, "thingmq_{name} {value}");
    };
    for c in &overview.counters {
        metric(c.name, c.help, c.kind, c.value);
    }
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
                "things_history_last_batch_microseconds",
                "Duration of the last committed history batch",
                "gauge",
                get(&w.last_batch_us),
            ),
        ] {
            metric(name, help, kind, value);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
