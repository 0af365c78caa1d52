//! Who is calling, and may they do this: API keys (`Authorization: Bearer`), console login
//! sessions (a cookie), or nobody when the API is open; plus the login, logout and `me`
//! routes.
//!
//! DNS rebinding: open access answers only requests whose `Host` is a loopback name.
//!
//! CSRF: the session cookie is `SameSite=Strict`, so other sites' requests don't carry it;
//! on top of that a state-changing request authenticated by the cookie must carry an
//! `X-Requested-With` header, which a cross-site page cannot add without a CORS preflight
//! this server never approves. Any state-changing request from a browser whose `Origin` is
//! not this server's own is refused too, which also protects the open (keyless, loopback)
//! mode, where there is no cookie to check.

use crate::keys::{ApiKeys, Role};
use crate::ratelimit::{Limiter, Rate};
use crate::session::{SessionUser, Sessions};
use crate::users::ConsoleUsers;
use crate::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "thingmq_session";

/// Login attempts per client address: a burst of 10, then one every 6 s.
const PER_IP: Rate = Rate {
    capacity: 10,
    refill: Duration::from_secs(6),
};
/// Login attempts per user name: a burst of 5, then one every 12 s.
const PER_USER: Rate = Rate {
    capacity: 5,
    refill: Duration::from_secs(12),
};
/// Buckets kept per limiter before full ones are forgotten.
const MAX_BUCKETS: usize = 10_000;
/// Sessions kept at once.
const MAX_SESSIONS: usize = 10_000;
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
struct LoginLimits {
    per_ip: Limiter<IpAddr>,
    per_user: Limiter<String>,
}

/// The credentials files as last loaded; replaced whole on a reload.
#[derive(Debug)]
struct Files {
    keys: Arc<ApiKeys>,
    users: Arc<ConsoleUsers>,
}

/// Why [`Access::reload`] kept the previous files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// Neither keys nor users would be left, which would open the API to anyone.
    #[error("the reloaded files have no API keys and no console users, which would leave the API open: keeping the previous ones")]
    WouldOpen,
}

/// Who may use the API: API keys, console users, or (with neither) everyone.
#[derive(Debug, Clone)]
pub struct Access {
    files: Arc<RwLock<Files>>,
    sessions: Arc<Mutex<Sessions>>,
    limits: Arc<Mutex<LoginLimits>>,
    secure_cookie: bool,
}

impl Access {
    /// No keys and no users: everyone is admin. Only for loopback listeners.
    pub fn open() -> Access {
        Access::new(ApiKeys::default(), ConsoleUsers::default())
    }

    /// API keys and console users; open when both are empty.
    pub fn new(keys: ApiKeys, users: ConsoleUsers) -> Access {
        Access {
            files: Arc::new(RwLock::new(Files {
                keys: Arc::new(keys),
                users: Arc::new(users),
            })),
            sessions: Arc::new(Mutex::new(Sessions::new(SESSION_TTL, MAX_SESSIONS))),
            limits: Arc::new(Mutex::new(LoginLimits {
                per_ip: Limiter::new(PER_IP, MAX_BUCKETS),
                per_user: Limiter::new(PER_USER, MAX_BUCKETS),
            })),
            secure_cookie: false,
        }
    }

    /// Marks the session cookie `Secure` (when the console is reached over HTTPS through a
    /// proxy: this server itself speaks plain HTTP, where a `Secure` cookie would never be
    /// sent back).
    pub fn with_secure_cookie(mut self, secure: bool) -> Access {
        self.secure_cookie = secure;
        self
    }

    /// Whether no credentials are configured.
    pub fn is_open(&self) -> bool {
        let f = read(&self.files);
        f.keys.is_empty() && f.users.is_empty()
    }

    /// Replaces the API keys and console users (`None` keeps what is loaded), as SIGHUP does
    /// with the files. Sessions of users no longer in the file end at their next request; the
    /// others take the role the file now gives them. Refused when it would leave the API open
    /// although it was not.
    pub fn reload(
        &self,
        keys: Option<ApiKeys>,
        users: Option<ConsoleUsers>,
    ) -> Result<(), ReloadError> {
        let mut f = self.files.write().unwrap_or_else(|p| p.into_inner());
        let was_open = f.keys.is_empty() && f.users.is_empty();
        let keys = keys.map_or_else(|| f.keys.clone(), Arc::new);
        let users = users.map_or_else(|| f.users.clone(), Arc::new);
        if !was_open && keys.is_empty() && users.is_empty() {
            return Err(ReloadError::WouldOpen);
        }
        *f = Files { keys, users };
        Ok(())
    }

    fn users(&self) -> Arc<ConsoleUsers> {
        read(&self.files).users.clone()
    }
}

fn read(files: &RwLock<Files>) -> std::sync::RwLockReadGuard<'_, Files> {
    // Replaced whole under the lock: a panic elsewhere cannot leave it half-written.
    files.read().unwrap_or_else(|p| p.into_inner())
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The API is open.
    Open,
    /// An API key.
    Key { name: String, role: Role },
    /// A console session.
    User { name: String, role: Role },
}

impl Principal {
    fn role(&self) -> Role {
        match self {
            Principal::Open => Role::Admin,
            Principal::Key { role, .. } | Principal::User { role, .. } => *role,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (single map operations).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Resolves who is calling; `None` when credentials are needed and missing or wrong.
fn principal(access: &Access, headers: &HeaderMap, now: Instant) -> Option<Principal> {
    if let Some(key) = bearer(headers) {
        let files = read(&access.files);
        return files.keys.verify(key).map(|(name, role)| Principal::Key {
            name: name.to_owned(),
            role,
        });
    }
    if let Some(token) = cookie_token(headers) {
        let mut sessions = lock(&access.sessions);
        if let Some(u) = sessions.get(token, now) {
            // The users file may have been reloaded since the login: its role now counts,
            // and a removed user's session ends here.
            match access.users().role(&u.name) {
                Some(role) => return Some(Principal::User { name: u.name, role }),
                None => {
                    sessions.remove(token);
                }
            }
        }
    }
    access.is_open().then_some(Principal::Open)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser's `Origin` that is not this server's own host.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    origin_host.is_none() || origin_host != host
}

/// Whether the `Host` header names this machine's loopback (or is absent). With open access
/// the API must not answer a page that reached it through DNS rebinding (a hostile name
/// resolving to 127.0.0.1): such a request carries the hostile name as its `Host`.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Paths anyone may call: the login itself, the API description and the console's files.
fn is_public(path: &str) -> bool {
    path == "/api/v1/login" || path == "/api/v1/openapi.json" || !is_protected(path)
}

fn is_protected(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// The middleware: CSRF checks, then credentials, then role. Reads need `viewer`, anything
/// else `admin`, except logging out.
pub(crate) async fn authorize(
    State(access): State<Access>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let safe = is_safe(req.method());
    if !safe && foreign_origin(headers) {
        return ApiError::csrf("requests from other sites' pages are refused").into_response();
    }
    let path = req.uri().path().to_owned();
    if is_public(&path) {
        return next.run(req).await;
    }
    let Some(who) = principal(&access, headers, Instant::now()) else {
        return ApiError::unauthorized().into_response();
    };
    if who == Principal::Open && !loopback_host(headers) {
        return ApiError::csrf(
            "open access (no users, no API keys) answers only requests to a loopback host name",
        )
        .into_response();
    }
    if !safe && matches!(who, Principal::User { .. }) && !headers.contains_key("x-requested-with") {
        return ApiError::csrf("the X-Requested-With header is required with a session cookie")
            .into_response();
    }
    let needed = if safe || path == "/api/v1/logout" {
        Role::Viewer
    } else {
        Role::Admin
    };
    if who.role() < needed {
        return ApiError::forbidden().into_response();
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    username: String,
    password: String,
}

/// Who is logged in.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    /// The console user or API key name; null when the API is open.
    name: Option<String>,
    /// `admin` or `viewer`.
    role: &'static str,
    /// `open`, `key` or `session`.
    via: &'static str,
}

/// Logs a console user in: sets the session cookie.
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", security(()),
    request_body(content = LoginBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = Me),
        (status = 400, description = "Malformed body", body = crate::error::ErrorBody),
        (status = 401, description = "Wrong user name or password", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 429, description = "Too many attempts", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn login(
    State(access): State<Access>,
    req: Request,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body: Bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::invalid("body", e))?;
    // A JSON content type can't be sent cross-site without a preflight: no login CSRF.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::unsupported_media("application/json"));
    }
    let body: LoginBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", e))?;
    if body.username.is_empty() {
        return Err(ApiError::invalid("username", "must not be empty"));
    }
    let now = Instant::now();
    {
        let mut limits = lock(&access.limits);
        // Without a peer address (tests calling the app directly) all share one bucket.
        let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        limits
            .per_ip
            .take(ip, now)
            .map_err(ApiError::too_many_attempts)?;
        limits
            .per_user
            .take(body.username.clone(), now)
            .map_err(ApiError::too_many_attempts)?;
    }
    let users = access.users();
    let name = body.username.clone();
    let role = tokio::task::spawn_blocking(move || users.verify(&name, body.password.as_bytes()))
        .await
        .map_err(|e| ApiError::unavailable(format!("password check failed: {e}")))?;
    let Some(role) = role else {
        return Err(ApiError::bad_login());
    };
    let (token, ttl) = {
        let mut sessions = lock(&access.sessions);
        let token = sessions.create(
            SessionUser {
                name: body.username.clone(),
                role,
            },
            now,
        );
        (token, sessions.ttl())
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if access.secure_cookie { "; Secure" } else { "" }
    );
    let mut resp = Json(Me {
        name: Some(body.username),
        role: role.as_str(),
        via: "session",
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::unavailable)?,
    );
    Ok(resp)
}

/// Ends the console session (if any) and clears the cookie.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not logged in", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn logout(State(access): State<Access>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_token(&headers) {
        lock(&access.sessions).remove(token);
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response()
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Not logged in", body = crate::error::ErrorBody),
    ))]
pub(crate) async fn me(axum::Extension(who): axum::Extension<Principal>) -> Json<Me> {
    let role = who.role().as_str();
    Json(match who {
        Principal::Open => Me {
            name: None,
            role,
            via: "open",
        },
        Principal::Key { name, .. } => Me {
            name: Some(name),
            role,
            via: "key",
        },
        Principal::User { name, .. } => Me {
            name: Some(name),
            role,
            via: "session",
        },
    })
}
