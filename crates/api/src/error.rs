//! Errors as the API shows them: a JSON `{code, message}` with the right HTTP status.
//! Internal details are logged, never sent.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

/// The JSON body of every error.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable machine-readable code, e.g. `invalid_input`, `unauthorized`, `not_found`.
    #[schema(value_type = String)]
    code: &'static str,
    /// What went wrong, for people; names the field for invalid input.
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a message naming the offending field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{field}: {message}"),
        )
    }

    /// 404.
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401: no or unknown credentials.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in or send an API key (Authorization: Bearer <key>)",
        )
    }

    /// 401: a failed login.
    pub fn bad_login() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "wrong user name or password",
        )
    }

    /// 403: known credentials without the role for this.
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role (viewer) may not do this",
        )
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take this method",
        )
    }

    /// 403: a request that looks like cross-site request forgery.
    pub fn csrf(message: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "csrf", message)
    }

    /// 415: the body must be of this type.
    pub fn unsupported_media(wanted: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be {wanted}"),
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many_attempts(retry_after: Duration) -> ApiError {
        let secs = retry_after.as_secs_f64().ceil() as u64;
        ApiError {
            retry_after: Some(Duration::from_secs(secs.max(1))),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many login attempts; try again in {} s", secs.max(1)),
            )
        }
    }

    /// 409: it exists, something depends on it, or the device is offline.
    pub fn conflict(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message.to_string())
    }

    /// 504: a device did not answer in time.
    pub fn timeout(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message.to_string())
    }

    /// 503/504-style: the broker did not answer in time.
    pub fn unavailable(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "API error: {}", self.message);
        }
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, after.as_secs().into());
        }
        resp
    }
}
