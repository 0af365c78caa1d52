//! thingmq's HTTP side: the REST API under `/api/v1`, Prometheus metrics at `/metrics`, the
//! OpenAPI document at `/api/v1/openapi.json` and the web console at `/`, served by the same
//! binary as the broker.
//!
//! - [`app`] builds the axum `Router` from an [`ApiState`] (tested with `oneshot`, no socket).
//! - [`serve`] runs it on a bound listener until shutdown.
//! - [`Access`]: who may call. [`keys::ApiKeys`] are bearer keys for scripts;
//!   [`users::ConsoleUsers`] log in to the console (`POST /api/v1/login` sets a session
//!   cookie). Both carry a role: `viewer` reads, `admin` also changes.
//! - [`ApiError`]: every error is JSON `{code, message}` with the matching HTTP status.
//!
//! With neither keys nor users the API and console are open, which the server only allows
//! on a loopback address (as anonymous MQTT access is by default).

mod auth;
mod broker;
mod console;
mod error;
pub mod keys;
mod metrics;
mod openapi;
mod ratelimit;
mod session;
mod things;
pub mod users;

pub use auth::{Access, ReloadError, SESSION_COOKIE};
pub use console::{MqttEndpoint, WsEndpoint};
pub use error::ApiError;

use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use std::sync::Arc;
use thingmq_server::admin::Admin;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The broker's operator interface.
    pub admin: Admin,
    /// Who may call.
    pub access: Access,
    /// MQTT-over-WebSocket listeners, told to the console.
    pub mqtt_ws: Arc<[WsEndpoint]>,
    /// MQTT listeners over TCP and TLS, told to the console (a device's connection details).
    pub mqtt: Arc<[MqttEndpoint]>,
    /// The `$SYS` interval in seconds (0: not published), told to the dashboard.
    pub sys_interval_secs: u64,
    /// The device layer, when it runs (`/api/v1/products`, `/api/v1/devices`, …).
    pub platform: Option<thingmq_things::runtime::Platform>,
}

impl ApiState {
    /// State with no WebSocket listeners to tell the console about.
    pub fn new(admin: Admin, access: Access) -> ApiState {
        ApiState {
            admin,
            access,
            mqtt_ws: Arc::new([]),
            mqtt: Arc::new([]),
            sys_interval_secs: 0,
            platform: None,
        }
    }
}

impl FromRef<ApiState> for Access {
    fn from_ref(state: &ApiState) -> Access {
        state.access.clone()
    }
}

/// Every route, as axum paths; the OpenAPI test checks each is documented.
fn routes() -> Vec<(&'static str, MethodRouter<ApiState>)> {
    vec![
        ("/api/v1/login", post(auth::login)),
        ("/api/v1/logout", post(auth::logout)),
        ("/api/v1/me", get(auth::me)),
        ("/api/v1/overview", get(broker::overview)),
        ("/api/v1/clients", get(broker::clients)),
        ("/api/v1/subscriptions", get(broker::subscriptions)),
        (
            "/api/v1/clients/{client_id}",
            get(broker::client).delete(broker::kick),
        ),
        ("/api/v1/retained", get(broker::retained_list)),
        (
            "/api/v1/retained/{*topic}",
            get(broker::retained_get).delete(broker::retained_delete),
        ),
        ("/api/v1/publish", post(broker::publish)),
        ("/api/v1/endpoints", get(console::endpoints)),
        (
            "/api/v1/products",
            get(things::products).post(things::create_product),
        ),
        (
            "/api/v1/products/{productKey}",
            get(things::product)
                .put(things::put_product)
                .delete(things::delete_product),
        ),
        (
            "/api/v1/products/{productKey}/devices",
            post(things::create_device),
        ),
        ("/api/v1/devices", get(things::devices)),
        (
            "/api/v1/devices/{productKey}/{deviceName}",
            get(things::device)
                .patch(things::patch_device)
                .delete(things::delete_device),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/credentials",
            post(things::credentials),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/secret",
            post(things::reset_secret),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/shadow",
            get(things::shadow),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/properties",
            get(things::get_properties).post(things::set_properties),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/properties/{identifier}/history",
            get(things::property_history),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/services/{service}",
            post(things::call_service),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/calls/{callId}",
            get(things::call_state),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/events",
            get(things::events),
        ),
        (
            "/api/v1/devices/{productKey}/{deviceName}/log",
            get(things::log),
        ),
        ("/api/v1/openapi.json", get(openapi::openapi_json)),
        ("/metrics", get(metrics::prometheus)),
    ]
}

/// The paths [`app`] serves (besides the console's files), as axum writes them
/// (`{*rest}` for a catch-all).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(p, _)| p).collect()
}

/// The HTTP application.
pub fn app(state: ApiState) -> Router {
    let mut router = Router::new();
    for (path, method) in routes() {
        router = router.route(path, method);
    }
    router
        .route("/api/{*rest}", axum::routing::any(not_found))
        .fallback(console::asset)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            auth::authorize,
        ))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

/// Serves `app` on `listener` until `shutdown` resolves. The peer address is kept for the
/// login rate limit.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
