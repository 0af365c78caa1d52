//! Console login, sessions, CSRF rules, roles, rate limits, the console's files and the
//! OpenAPI document, through `oneshot` on the axum app over a real broker.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use thingmq_api::keys::{generate, ApiKeys, Role};
use thingmq_api::users::ConsoleUsers;
use thingmq_api::{app, route_paths, Access, ApiState, MqttEndpoint, WsEndpoint};
use thingmq_server::{Config, Server, ServerHandle};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn start() -> ServerHandle {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .unwrap();
    within("server start", Server::start(config)).await.unwrap()
}

fn users() -> ConsoleUsers {
    let mut u = ConsoleUsers::default();
    u.set("alice", Role::Admin, b"alice-secret").unwrap();
    u.set("victor", Role::Viewer, b"victor-secret").unwrap();
    u
}

/// One request. `headers` are added as given; JSON bodies get a JSON content type unless a
/// content type is among `headers`.
struct Req<'a> {
    method: Method,
    uri: &'a str,
    body: Option<String>,
    headers: Vec<(&'a str, String)>,
    peer: Option<SocketAddr>,
}

impl<'a> Req<'a> {
    fn new(method: Method, uri: &'a str) -> Self {
        Req {
            method,
            uri,
            body: None,
            headers: Vec::new(),
            peer: None,
        }
    }
    fn json(mut self, v: Value) -> Self {
        self.body = Some(v.to_string());
        if !self.headers.iter().any(|(k, _)| *k == "content-type") {
            self.headers
                .push(("content-type", "application/json".to_owned()));
        }
        self
    }
    fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn cookie(self, c: &str) -> Self {
        self.header("cookie", c.to_owned())
    }
    fn ajax(self) -> Self {
        self.header("x-requested-with", "thingmq")
    }
    fn from(mut self, peer: &str) -> Self {
        self.peer = Some(peer.parse().unwrap());
        self
    }
}

async fn send(state: &ApiState, r: Req<'_>) -> (StatusCode, HeaderMap, Value) {
    let mut b = Request::builder().method(r.method).uri(r.uri);
    for (k, v) in &r.headers {
        b = b.header(*k, v);
    }
    let mut req = b
        .body(r.body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    if let Some(p) = r.peer {
        req.extensions_mut().insert(ConnectInfo(p));
    }
    let resp = within(r.uri, app(state.clone()).oneshot(req))
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

/// Logs in and returns the `name=value` cookie pair and the whole Set-Cookie header.
async fn login(state: &ApiState, user: &str, password: &str) -> (String, String) {
    let (status, headers, body) = send(
        state,
        Req::new(Method::POST, "/api/v1/login")
            .json(json!({"username": user, "password": password})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, set)
}

fn with_users(server: &ServerHandle) -> ApiState {
    ApiState::new(server.admin(), Access::new(ApiKeys::default(), users()))
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_that_me_and_logout_honour() {
    let server = start().await;
    let state = with_users(&server);
    let (cookie, set) = login(&state, "alice", "alice-secret").await;
    assert!(cookie.starts_with("thingmq_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP must not mark the cookie Secure: {set}"
    );

    let (status, _, me) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"name": "alice", "role": "admin", "via": "session"})
    );

    let (status, headers, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/logout")
            .cookie(&cookie)
            .ajax(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, body) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session is gone");
    assert_eq!(body["code"], "unauthorized");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn secure_cookie_is_marked_secure_when_configured() {
    let server = start().await;
    let state = ApiState::new(
        server.admin(),
        Access::new(ApiKeys::default(), users()).with_secure_cookie(true),
    );
    let (_, set) = login(&state, "alice", "alice-secret").await;
    assert!(set.contains("; Secure"), "{set}");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn bad_logins_are_refused_with_the_reason() {
    let server = start().await;
    let state = with_users(&server);
    let cases = [
        (
            json!({"username": "alice", "password": "nope"}),
            StatusCode::UNAUTHORIZED,
            "bad_login",
        ),
        (
            json!({"username": "mallory", "password": "x"}),
            StatusCode::UNAUTHORIZED,
            "bad_login",
        ),
        (
            json!({"username": "alice"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"username": "", "password": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({"username": "a", "password": "x", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
    ];
    for (body, want, code) in cases {
        let (status, headers, got) = send(
            &state,
            Req::new(Method::POST, "/api/v1/login").json(body.clone()),
        )
        .await;
        assert_eq!(
            (status, got["code"].as_str()),
            (want, Some(code)),
            "{body}: {got}"
        );
        assert!(!headers.contains_key(header::SET_COOKIE));
    }
    // A form post (what another site could send without a preflight) is not accepted.
    let (status, _, got) = send(
        &state,
        Req::new(Method::POST, "/api/v1/login")
            .header("content-type", "text/plain")
            .json(json!({"username": "alice", "password": "alice-secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(got["code"], "unsupported_media_type");
    let (status, _, _) = send(
        &state,
        Req::new(Method::GET, "/api/v1/overview").cookie("thingmq_session=forged"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn logins_are_rate_limited_per_user_and_per_address() {
    let server = start().await;
    let state = with_users(&server);
    // Per user: 5 attempts, from different addresses.
    for i in 0..5 {
        let (status, _, _) = send(
            &state,
            Req::new(Method::POST, "/api/v1/login")
                .from(&format!("10.0.0.{i}:1000"))
                .json(json!({"username": "alice", "password": "wrong"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = send(
        &state,
        Req::new(Method::POST, "/api/v1/login")
            .from("10.0.0.9:1000")
            .json(json!({"username": "alice", "password": "alice-secret"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert_eq!(body["code"], "too_many_attempts");
    let after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&after), "{after}");
    // Another user is not affected.
    let (status, _, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/login")
            .from("10.0.0.9:1000")
            .json(json!({"username": "victor", "password": "victor-secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Per address: 10 attempts (two already used above by 10.0.0.9: a refused attempt
    // still costs its address a token), whatever the names.
    for i in 2..10 {
        let (status, _, _) = send(
            &state,
            Req::new(Method::POST, "/api/v1/login")
                .from("10.0.0.9:2000")
                .json(json!({"username": format!("nobody{i}"), "password": "x"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (status, _, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/login")
            .from("10.0.0.9:3000")
            .json(json!({"username": "victor", "password": "victor-secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn cookie_requests_that_change_things_need_the_custom_header() {
    let server = start().await;
    let state = with_users(&server);
    let (cookie, _) = login(&state, "alice", "alice-secret").await;
    let publish = json!({"topic": "t/1", "payload": "x"});
    let (status, _, body) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish")
            .cookie(&cookie)
            .json(publish.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "csrf");
    let (status, _, _) = send(
        &state,
        Req::new(Method::DELETE, "/api/v1/retained/t/1").cookie(&cookie),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish")
            .cookie(&cookie)
            .ajax()
            .json(publish.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A browser request from another site is refused before anything else.
    let (status, _, body) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish")
            .cookie(&cookie)
            .ajax()
            .header("host", "127.0.0.1:8080")
            .header("origin", "https://evil.example")
            .json(publish.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let (status, _, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish")
            .cookie(&cookie)
            .ajax()
            .header("host", "127.0.0.1:8080")
            .header("origin", "http://127.0.0.1:8080")
            .json(publish),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "same origin");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn open_mode_refuses_other_sites_but_not_scripts() {
    let server = start().await;
    let state = ApiState::new(server.admin(), Access::open());
    let (status, _, me) = send(&state, Req::new(Method::GET, "/api/v1/me")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"name": null, "role": "admin", "via": "open"}));
    let publish = json!({"topic": "t/1", "payload": "x"});
    let (status, _, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish").json(publish.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "curl-like callers send no Origin");
    let (status, _, body) = send(
        &state,
        Req::new(Method::POST, "/api/v1/publish")
            .header("host", "127.0.0.1:8080")
            .header("origin", "http://attacker.example")
            .header("content-type", "text/plain")
            .json(publish),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn roles_matrix_for_sessions_keys_and_nobody() {
    let server = start().await;
    let (admin_key, admin_line) = generate("ops", Role::Admin);
    let (viewer_key, viewer_line) = generate("grafana", Role::Viewer);
    let keys = ApiKeys::parse(&format!("{admin_line}\n{viewer_line}\n")).unwrap();
    let state = ApiState::new(server.admin(), Access::new(keys, users()));
    let (alice, _) = login(&state, "alice", "alice-secret").await;
    let (victor, _) = login(&state, "victor", "victor-secret").await;

    enum Who<'a> {
        Nobody,
        Cookie(&'a str),
        Key(&'a str),
    }
    let auth = |r: Req<'static>, who: &Who<'_>| match who {
        Who::Nobody => r,
        Who::Cookie(c) => r.cookie(c).ajax(),
        Who::Key(k) => r.header("authorization", format!("Bearer {k}")),
    };
    let who = [
        (
            "nobody",
            Who::Nobody,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "viewer session",
            Who::Cookie(&victor),
            StatusCode::OK,
            StatusCode::FORBIDDEN,
        ),
        (
            "admin session",
            Who::Cookie(&alice),
            StatusCode::OK,
            StatusCode::OK,
        ),
        (
            "viewer key",
            Who::Key(&viewer_key),
            StatusCode::OK,
            StatusCode::FORBIDDEN,
        ),
        (
            "admin key",
            Who::Key(&admin_key),
            StatusCode::OK,
            StatusCode::OK,
        ),
        (
            "forged key",
            Who::Key("tmq_forged"),
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (name, w, read, write) in &who {
        for uri in [
            "/api/v1/overview",
            "/api/v1/clients",
            "/api/v1/subscriptions",
            "/api/v1/retained",
            "/api/v1/me",
            "/api/v1/endpoints",
            "/metrics",
        ] {
            let (status, _, body) = send(&state, auth(Req::new(Method::GET, uri), w)).await;
            assert_eq!(status, *read, "{name} GET {uri}: {body}");
        }
        let (status, _, body) = send(
            &state,
            auth(Req::new(Method::POST, "/api/v1/publish"), w)
                .json(json!({"topic": "m/x", "payload": "1", "retain": true})),
        )
        .await;
        assert_eq!(status, *write, "{name} publish: {body}");
        // A missing retained message: 404 for those allowed to delete, else the auth error.
        let (status, _, _) = send(
            &state,
            auth(Req::new(Method::DELETE, "/api/v1/retained/none/here"), w),
        )
        .await;
        let expect = if *write == StatusCode::OK {
            StatusCode::NOT_FOUND
        } else {
            *write
        };
        assert_eq!(status, expect, "{name} delete retained");
        let (status, _, _) = send(
            &state,
            auth(Req::new(Method::DELETE, "/api/v1/clients/none"), w),
        )
        .await;
        assert_eq!(status, expect, "{name} kick");
    }
    // Logging out needs only a session, whatever the role.
    let (status, _, _) = send(
        &state,
        Req::new(Method::POST, "/api/v1/logout")
            .cookie(&victor)
            .ajax(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&state, Req::new(Method::POST, "/api/v1/logout")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn console_files_are_served_without_login_and_api_needs_it() {
    let server = start().await;
    let state = with_users(&server);
    let (status, headers, body) = send(&state, Req::new(Method::GET, "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = body.as_str().unwrap().to_owned();
    assert!(html.contains("<div id=\"app\""), "{html}");
    // Every script and stylesheet the page names is served with its type.
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{html}");
    for a in assets {
        let (status, headers, _) = send(&state, Req::new(Method::GET, a)).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let ct = headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            ct.starts_with(if a.ends_with(".js") {
                "text/javascript"
            } else {
                "text/css"
            }),
            "{a}: {ct}"
        );
        assert!(headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
    }
    let (status, _, _) = send(&state, Req::new(Method::GET, "/assets/missing.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&state, Req::new(Method::POST, "/").json(json!({}))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = send(&state, Req::new(Method::GET, "/api/v1/overview")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn malformed_queries_and_wrong_methods_answer_json_errors() {
    let server = start().await;
    let state = ApiState::new(server.admin(), Access::open());
    let (status, _, body) = send(&state, Req::new(Method::GET, "/api/v1/clients?page=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_input");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("query: ") && message.contains("page"),
        "{message}"
    );
    let (status, _, body) = send(
        &state,
        Req::new(Method::GET, "/api/v1/retained?per_page=-1"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
    let (status, _, body) = send(&state, Req::new(Method::PUT, "/api/v1/overview")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn endpoints_tell_the_console_where_mqtt_listens_and_how_often_sys_is_published() {
    let server = start().await;
    let mut state = ApiState::new(server.admin(), Access::open());
    let (_, _, body) = send(&state, Req::new(Method::GET, "/api/v1/endpoints")).await;
    assert_eq!(
        body,
        json!({"mqtt_ws": [], "mqtt": [], "sys_interval_secs": 0})
    );
    state.mqtt_ws = vec![WsEndpoint {
        port: 8083,
        path: "/mqtt".into(),
        tls: false,
    }]
    .into();
    state.mqtt = vec![
        MqttEndpoint {
            port: 1883,
            tls: false,
        },
        MqttEndpoint {
            port: 8883,
            tls: true,
        },
    ]
    .into();
    state.sys_interval_secs = 10;
    let (status, _, body) = send(&state, Req::new(Method::GET, "/api/v1/endpoints")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "mqtt_ws": [{"port": 8083, "path": "/mqtt", "tls": false}],
            "mqtt": [{"port": 1883, "tls": false}, {"port": 8883, "tls": true}],
            "sys_interval_secs": 10,
        })
    );
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn openapi_document_parses_and_documents_every_route_the_router_serves() {
    let server = start().await;
    let state = with_users(&server);
    // Public: scripts and generators fetch it without credentials.
    let (status, _, doc) = send(&state, Req::new(Method::GET, "/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    let served: Vec<String> = route_paths().iter().map(|p| p.replace("{*", "{")).collect();
    for p in &served {
        assert!(
            paths.contains_key(p),
            "route {p} is not in the OpenAPI document"
        );
    }
    assert_eq!(
        paths.len(),
        served.len(),
        "documented paths that are not served: {:?}",
        paths.keys()
    );

    // Every documented operation reaches a handler (an admin key gets past auth): never the
    // fallback's "route not found" nor 405.
    let (key, line) = generate("doc", Role::Admin);
    let state = ApiState::new(
        server.admin(),
        Access::new(ApiKeys::parse(&line).unwrap(), users()),
    );
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let uri = path
                .replace("{client_id}", "nobody")
                .replace("{topic}", "a/b");
            let m: Method = method.to_uppercase().parse().unwrap();
            let mut r = Req::new(m, Box::leak(uri.clone().into_boxed_str()))
                .header("authorization", format!("Bearer {key}"));
            if method == "post" {
                r = r.json(json!({}));
            }
            let (status, _, body) = send(&state, r).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert_ne!(body["message"], "route not found", "{method} {uri}");
            operations += 1;
        }
    }
    assert_eq!(operations, 35);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn reloaded_users_file_lets_new_users_in_ends_removed_users_sessions_and_applies_new_roles() {
    let server = start().await;
    let state = with_users(&server);
    let (alice, _) = login(&state, "alice", "alice-secret").await;
    let (victor, _) = login(&state, "victor", "victor-secret").await;

    // The file now: alice demoted to viewer, victor gone, carol added.
    let mut fresh = ConsoleUsers::default();
    fresh.set("alice", Role::Viewer, b"alice-secret").unwrap();
    fresh.set("carol", Role::Admin, b"carol-secret").unwrap();
    state.access.reload(None, Some(fresh)).unwrap();

    let (status, _, me) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["role"], "viewer", "the reloaded role counts at once");
    let (status, _, _) = send(
        &state,
        Req::new(Method::DELETE, "/api/v1/retained/a/b")
            .cookie(&alice)
            .ajax(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&victor)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a removed user is logged out"
    );
    let (carol, _) = login(&state, "carol", "carol-secret").await;
    let (_, _, me) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&carol)).await;
    assert_eq!(me["role"], "admin");

    // A reload that would leave neither users nor keys is refused: the API stays closed.
    let err = state
        .access
        .reload(Some(ApiKeys::default()), Some(ConsoleUsers::default()))
        .unwrap_err();
    assert!(err.to_string().contains("open"), "{err}");
    assert!(!state.access.is_open());
    let (status, _, _) = send(&state, Req::new(Method::GET, "/api/v1/me").cookie(&carol)).await;
    assert_eq!(status, StatusCode::OK, "the previous users stay in force");
    within("shutdown", server.shutdown()).await;
}
