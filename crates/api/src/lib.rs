//! thingmq's HTTP side: the REST API under `/api/v1` and Prometheus metrics at `/metrics`,
//! served by the same binary as the broker.
//!
//! - [`app`] builds the axum `Router` from an [`ApiState`] (tested with `oneshot`, no socket).
//! - [`serve`] runs it on a bound listener until shutdown.
//! - [`keys::ApiKeys`]: bearer API keys with a role (`viewer` reads, `admin` also changes).
//! - [`ApiError`]: every error is JSON `{code, message}` with the matching HTTP status.
//!
//! Access: with an API key file, every request needs `Authorization: Bearer <key>`; without
//! one the API is open, which the server only allows on a loopback address (as anonymous
//! MQTT access is by default).

mod broker;
mod error;
pub mod keys;
mod metrics;

pub use error::ApiError;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use keys::{ApiKeys, Role};
use std::sync::Arc;
use thingmq_server::admin::Admin;

/// Who may use the API.
#[derive(Debug, Clone)]
pub enum Access {
    /// No keys: everyone is admin. Only for loopback listeners.
    Open,
    /// Bearer keys with roles.
    Keys(Arc<ApiKeys>),
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The broker's operator interface.
    pub admin: Admin,
    /// Who may call.
    pub access: Access,
}

/// The HTTP application.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/overview", get(broker::overview))
        .route("/api/v1/clients", get(broker::clients))
        .route(
            "/api/v1/clients/{client_id}",
            get(broker::client).delete(broker::kick),
        )
        .route("/api/v1/retained", get(broker::retained_list))
        .route(
            "/api/v1/retained/{*topic}",
            get(broker::retained_get).delete(broker::retained_delete),
        )
        .route("/api/v1/publish", post(broker::publish))
        .route("/metrics", get(metrics::prometheus))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Reads only need `viewer`; anything else needs `admin`.
async fn authorize(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let needed = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Role::Viewer
    } else {
        Role::Admin
    };
    if let Access::Keys(keys) = &state.access {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some((_, role)) = presented.and_then(|k| keys.verify(k.trim())) else {
            return axum::response::IntoResponse::into_response(ApiError::unauthorized());
        };
        if role < needed {
            return axum::response::IntoResponse::into_response(ApiError::forbidden());
        }
    }
    next.run(req).await
}
