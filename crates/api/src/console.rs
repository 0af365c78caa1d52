//! The web console: the files built from `web/` (by `build.rs`, embedded at compile time) and
//! the one route the console needs besides the broker's: where MQTT over WebSocket listens.

use crate::ApiState;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use include_dir::{include_dir, Dir};
use serde::Serialize;
use utoipa::ToSchema;

/// Scripts and styles only from this server (no inline script, so injected markup cannot
/// run); WebSocket connections anywhere, since the MQTT listener is on another port; blob
/// workers, which MQTT.js uses for its timers.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; worker-src 'self' blob:; \
    frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// The built console (`vite build` output).
static ASSETS: Dir<'_> = include_dir!("$OUT_DIR/web");

/// An MQTT-over-WebSocket listener the console can connect to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WsEndpoint {
    /// The listener's port; the browser uses the host it loaded the console from.
    pub port: u16,
    /// The HTTP path of the WebSocket upgrade (e.g. `/mqtt`).
    pub path: String,
    /// `wss` when true.
    pub tls: bool,
}

/// An MQTT listener over TCP or TLS, which the console shows devices' owners.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MqttEndpoint {
    /// The listener's port.
    pub port: u16,
    /// `mqtts` (TLS) when true.
    pub tls: bool,
}

/// What the console needs to know about this server.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Endpoints {
    /// MQTT-over-WebSocket listeners, in configuration order.
    mqtt_ws: Vec<WsEndpoint>,
    /// MQTT listeners over TCP and TLS, in configuration order (for a device's connection
    /// details).
    mqtt: Vec<MqttEndpoint>,
    /// How often `$SYS/broker/...` is published, in seconds; 0 when it is not (the dashboard
    /// then polls `/api/v1/overview`).
    sys_interval_secs: u64,
}

/// Where the console's live pages connect for MQTT over WebSocket, where devices connect,
/// and how often the broker publishes `$SYS`.
#[utoipa::path(get, path = "/api/v1/endpoints", tag = "console",
    responses((status = 200, description = "The endpoints", body = Endpoints)))]
pub(crate) async fn endpoints(State(state): State<ApiState>) -> Json<Endpoints> {
    Json(Endpoints {
        mqtt_ws: state.mqtt_ws.to_vec(),
        mqtt: state.mqtt.to_vec(),
        sys_interval_secs: state.sys_interval_secs,
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves a console file; `/` is `index.html`. Pages are hash-routed (`/#/clients`), so no
/// other path needs the index.
pub(crate) async fn asset(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = ASSETS.get_file(path) else {
        return crate::ApiError::not_found(format!("{:?}", uri.path())).into_response();
    };
    // Vite puts a content hash in every asset name, so those can be cached for good; the
    // index must be fetched again to learn new names.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        file.contents(),
    )
        .into_response()
}
