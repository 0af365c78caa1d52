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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
