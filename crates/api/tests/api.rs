//! Every `/api/v1` route and `/metrics`, called with `oneshot` on the axum app over a real
//! broker (started on 127.0.0.1:0), with rumqttc as the MQTT clients the API reports on.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use thingmq_api::keys::{generate, ApiKeys, Role};
use thingmq_api::{app, Access, ApiState};
use thingmq_server::{Config, Server, ServerHandle};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn start() -> (ServerHandle, SocketAddr) {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .unwrap();
    let server = within("server start", Server::start(config)).await.unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

fn open(server: &ServerHandle) -> ApiState {
    ApiState::new(server.admin(), Access::open())
}

/// Sends one request; returns the status and the body as JSON (or as a string for text).
async fn call(
    state: &ApiState,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(state, method, uri, body, None).await
}

async fn call_with(
    state: &ApiState,
    method: Method,
    uri: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = within(uri, app(state.clone()).oneshot(req)).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// A rumqttc client whose event loop runs in a task, forwarding incoming packets.
struct Mqtt {
    client: AsyncClient,
    incoming: tokio::sync::mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mqtt(addr: SocketAddr, id: &str, username: Option<&str>) -> Mqtt {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(false);
    if let Some(u) = username {
        o.set_credentials(u, "");
    }
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(o, 100);
    let (tx, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    within("CONNACK", async {
        loop {
            if let Some(Packet::ConnAck(_)) = incoming.recv().await {
                break;
            }
        }
    })
    .await;
    Mqtt {
        client,
        incoming,
        task,
    }
}

impl Mqtt {
    async fn next(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> bool) -> Packet {
        within(what, async {
            loop {
                match self.incoming.recv().await {
                    Some(p) if pick(&p) => return p,
                    Some(_) => {}
                    None => panic!("connection ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.next("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await;
    }
}

#[tokio::test]
async fn overview_reports_version_counts_and_counters() {
    let (server, addr) = start().await;
    let state = open(&server);
    let _c = mqtt(addr, "ov1", None).await;
    let (status, body) = call(&state, Method::GET, "/api/v1/overview", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["version"].as_str().unwrap().starts_with("thingmq "));
    assert_eq!(body["connections"], 1);
    let counters = body["counters"].as_array().unwrap();
    assert!(counters
        .iter()
        .any(|c| c["name"] == "connections_total" && c["value"] == 1));
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn subscriptions_of_all_sessions_are_listed_filtered_and_paged() {
    let (server, addr) = start().await;
    let state = open(&server);
    let mut a = mqtt(addr, "sub-a", None).await;
    a.subscribe("home/+/temp").await;
    a.subscribe("home/#").await;
    let mut b = mqtt(addr, "sub-b", None).await;
    b.subscribe("$share/workers/jobs/#").await;
    b.subscribe("home/kitchen/temp").await;

    let (status, body) = call(&state, Method::GET, "/api/v1/subscriptions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 4, "{body}");
    // Sorted by filter; a shared subscription names its group, without the prefix.
    let filters: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["filter"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        ["home/#", "home/+/temp", "home/kitchen/temp", "jobs/#"]
    );
    assert_eq!(body["items"][3]["share_group"], "workers");
    assert_eq!(body["items"][3]["client_id"], "sub-b");
    assert_eq!(body["items"][3]["qos"], 1);
    assert!(body["items"][0]["share_group"].is_null());

    // Who gets a message published on home/kitchen/temp.
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/subscriptions?topic=home/kitchen/temp",
        None,
    )
    .await;
    assert_eq!(body["total"], 3, "{body}");
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/subscriptions?client_id=-a",
        None,
    )
    .await;
    assert_eq!(body["total"], 2);
    let (_, body) = call(&state, Method::GET, "/api/v1/subscriptions?q=%2B", None).await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["items"][0]["filter"], "home/+/temp");
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/subscriptions?share_group=workers&per_page=1&page=1",
        None,
    )
    .await;
    assert_eq!(
        (body["total"].as_u64(), body["per_page"].as_u64()),
        (Some(1), Some(1))
    );

    let (status, body) = call(
        &state,
        Method::GET,
        "/api/v1/subscriptions?topic=home/%23",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().starts_with("topic"),
        "{body}"
    );
    let (status, _) = call(&state, Method::GET, "/api/v1/subscriptions?page=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Unsubscribing takes it out of the list.
    a.client.unsubscribe("home/#").await.unwrap();
    a.next("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_)))
        .await;
    let (_, body) = call(&state, Method::GET, "/api/v1/subscriptions", None).await;
    assert_eq!(body["total"], 3);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn clients_are_listed_filtered_paged_and_shown_in_detail() {
    let (server, addr) = start().await;
    let state = open(&server);
    let mut a = mqtt(addr, "client-a", Some("alice")).await;
    a.subscribe("lights/+/state").await;
    let b = mqtt(addr, "client-b", None).await;
    // client-b goes offline but keeps its persistent session.
    b.client.disconnect().await.unwrap();
    drop(b);

    let (status, body) = call(&state, Method::GET, "/api/v1/clients", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["client_id"], "client-a");
    assert_eq!(body["items"][0]["connected"], true);
    assert_eq!(body["items"][0]["connection"]["username"], "alice");
    assert_eq!(body["items"][0]["connection"]["protocol"], "3.1.1");

    let offline = within("client-b offline", async {
        loop {
            let (_, body) =
                call(&state, Method::GET, "/api/v1/clients?connected=false", None).await;
            if body["total"] == 1 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(offline["items"][0]["client_id"], "client-b");
    assert!(offline["items"][0]["connection"].is_null());

    let (_, body) = call(&state, Method::GET, "/api/v1/clients?username=alice", None).await;
    assert_eq!(body["total"], 1);
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/clients?q=-b&per_page=1&page=1",
        None,
    )
    .await;
    assert_eq!(body["items"][0]["client_id"], "client-b");
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/clients?per_page=1&page=2",
        None,
    )
    .await;
    assert_eq!(body["items"][0]["client_id"], "client-b");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);

    let (status, body) = call(&state, Method::GET, "/api/v1/clients?per_page=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_input");
    assert!(body["message"].as_str().unwrap().starts_with("per_page"));

    let (status, body) = call(&state, Method::GET, "/api/v1/clients/client-a", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["subscriptions"][0]["filter"], "lights/+/state");
    assert_eq!(body["subscriptions"][0]["qos"], 1);
    assert_eq!(body["queued"], 0);

    let (status, body) = call(&state, Method::GET, "/api/v1/clients/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn kicking_a_client_closes_its_connection() {
    let (server, addr) = start().await;
    let state = open(&server);
    let mut c = mqtt(addr, "kick-me", None).await;
    let (status, _) = call(&state, Method::DELETE, "/api/v1/clients/kick-me", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    within("connection closed", async {
        while c.incoming.recv().await.is_some() {}
    })
    .await;
    let (status, _) = call(&state, Method::DELETE, "/api/v1/clients/kick-me", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no longer connected");
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn published_message_reaches_subscribers_and_bad_input_names_the_field() {
    let (server, addr) = start().await;
    let state = open(&server);
    let mut sub = mqtt(addr, "sub", None).await;
    sub.subscribe("cmd/#").await;
    let (status, body) = call(
        &state,
        Method::POST,
        "/api/v1/publish",
        Some(json!({"topic": "cmd/light", "payload": "b24=", "encoding": "base64", "qos": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subscribers"], 1);
    let Packet::Publish(p) = sub
        .next("PUBLISH", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(p.topic, "cmd/light");
    assert_eq!(&p.payload[..], b"on");
    assert_eq!(p.qos, QoS::AtLeastOnce);

    for (body, field) in [
        (json!({"topic": "a/#", "payload": "x"}), "topic"),
        (json!({"topic": "$SYS/x", "payload": "x"}), "topic"),
        (json!({"topic": "a", "qos": 3}), "qos"),
        (
            json!({"topic": "a", "payload": "%%", "encoding": "base64"}),
            "payload",
        ),
        (json!({"topic": "a", "encoding": "hex"}), "encoding"),
        (json!({"payload": "x"}), "body"),
        (json!({"topic": "a", "colour": "red"}), "body"),
    ] {
        let (status, answer) =
            call(&state, Method::POST, "/api/v1/publish", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "{body} → {answer}"
        );
    }
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn retained_messages_are_listed_read_and_deleted() {
    let (server, addr) = start().await;
    let state = open(&server);
    for (topic, payload) in [
        ("home/a/temp", "21.5"),
        ("home/b/temp", "19"),
        ("other", "x"),
    ] {
        let (status, _) = call(
            &state,
            Method::POST,
            "/api/v1/publish",
            Some(json!({"topic": topic, "payload": payload, "retain": true})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, body) = call(
        &state,
        Method::GET,
        "/api/v1/retained?filter=home/%2B/temp",
        None,
    )
    .await;
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["topic"], "home/a/temp");
    assert_eq!(body["items"][0]["size"], 4);

    let (status, body) = call(&state, Method::GET, "/api/v1/retained/home/a/temp", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["payload"], "21.5");
    assert_eq!(body["payload_base64"], "MjEuNQ==");

    // A new subscriber gets it over MQTT too.
    let mut sub = mqtt(addr, "late", None).await;
    sub.subscribe("home/a/temp").await;
    let Packet::Publish(p) = sub
        .next("retained PUBLISH", |p| matches!(p, Packet::Publish(_)))
        .await
    else {
        unreachable!()
    };
    assert!(p.retain);

    let (status, _) = call(&state, Method::DELETE, "/api/v1/retained/home/a/temp", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&state, Method::GET, "/api/v1/retained/home/a/temp", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = call(&state, Method::GET, "/api/v1/retained", None).await;
    assert_eq!(body["total"], 2);

    let (status, body) = call(&state, Method::GET, "/api/v1/retained?filter=a/%23/b", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("filter"));
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn metrics_are_in_prometheus_text_format() {
    let (server, addr) = start().await;
    let state = open(&server);
    let _c = mqtt(addr, "m1", None).await;
    let (status, body) = call(&state, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("# TYPE thingmq_connections gauge\nthingmq_connections 1\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE thingmq_messages_received_total counter\n"));
    assert!(text.contains("thingmq_subscriptions 0\n"));
    // The limit counters are there too.
    for name in ["connect_timeouts", "publish_throttled", "packets_too_large"] {
        assert!(
            text.contains(&format!("thingmq_{name}_total 0\n")),
            "{name}: {text}"
        );
    }
    within("shutdown", server.shutdown()).await;
}

/// The value of one sample line (`name` with its labels) in a Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_show_qos_counts_queue_depths_and_store_latency() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n\
         [storage]\ndata_dir = {:?}\nsync = \"always\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let server = within("server start", Server::start(config)).await.unwrap();
    let addr = server.local_addrs()[0];
    let state = open(&server);

    // A persistent subscriber goes away: what is published for it waits in its queue.
    let mut sub = mqtt(addr, "queued-sub", None).await;
    sub.subscribe("q/#").await;
    sub.client.disconnect().await.unwrap();
    drop(sub);
    within("session offline", async {
        loop {
            let (_, c) = call(&state, Method::GET, "/api/v1/clients/queued-sub", None).await;
            if c["connected"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut publisher = mqtt(addr, "qos-pub", None).await;
    for i in 0..3 {
        publisher
            .client
            .publish(format!("q/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
        publisher
            .next("PUBACK", |p| matches!(p, Packet::PubAck(_)))
            .await;
    }
    publisher
        .client
        .publish("q/zero", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();

    // A subscriber that does not acknowledge keeps its deliveries in flight.
    let mut o = MqttOptions::new("no-ack", addr.ip().to_string(), addr.port());
    o.set_manual_acks(true);
    let (slow, mut slow_loop) = AsyncClient::new(o, 10);
    slow.subscribe("slow/t", QoS::AtLeastOnce).await.unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let slow_task = tokio::spawn(async move {
        while let Ok(e) = slow_loop.poll().await {
            if let Event::Incoming(p) = e {
                let _ = got_tx.send(p);
            }
        }
    });
    within("no-ack SUBACK", async {
        while !matches!(got.recv().await, Some(Packet::SubAck(_))) {}
    })
    .await;
    for _ in 0..2 {
        publisher
            .client
            .publish("slow/t", QoS::AtLeastOnce, false, "y")
            .await
            .unwrap();
    }
    within("two unacknowledged deliveries", async {
        let mut n = 0;
        while n < 2 {
            if let Some(Packet::Publish(_)) = got.recv().await {
                n += 1;
            }
        }
    })
    .await;

    let text = within("depths in /metrics", async {
        loop {
            let (status, body) = call(&state, Method::GET, "/metrics", None).await;
            assert_eq!(status, StatusCode::OK);
            let text = body.as_str().unwrap().to_owned();
            if sample(&text, "thingmq_session_queued_messages") == 3.0
                && sample(&text, "thingmq_session_inflight_messages") == 2.0
            {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(sample(&text, "thingmq_session_queued_messages_max"), 3.0);
    assert_eq!(sample(&text, "thingmq_sessions_queueing"), 1.0);
    assert_eq!(sample(&text, "thingmq_session_inflight_messages_max"), 2.0);
    // One HELP/TYPE for the family, one sample per QoS.
    assert_eq!(
        text.matches("# TYPE thingmq_publish_received_total counter\n")
            .count(),
        1
    );
    assert_eq!(
        sample(&text, "thingmq_publish_received_total{qos=\"0\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "thingmq_publish_received_total{qos=\"1\"}"),
        5.0
    );
    assert_eq!(
        sample(&text, "thingmq_publish_received_total{qos=\"2\"}"),
        0.0
    );
    assert_eq!(sample(&text, "thingmq_publish_sent_total{qos=\"1\"}"), 2.0);
    // Every acknowledged QoS 1 publish was a store write first (sync = "always").
    assert!(text.contains("# TYPE thingmq_store_write_seconds histogram\n"));
    let writes = sample(&text, "thingmq_store_write_seconds_count");
    assert!(writes >= 3.0, "{text}");
    assert_eq!(
        sample(&text, "thingmq_store_write_seconds_bucket{le=\"+Inf\"}"),
        writes
    );
    assert!(sample(&text, "thingmq_store_write_seconds_sum") > 0.0);
    let first = sample(&text, "thingmq_store_write_seconds_bucket{le=\"0.00005\"}");
    assert!(first <= sample(&text, "thingmq_store_write_seconds_bucket{le=\"1\"}"));

    // The client list shows each session's depths too.
    let (_, list) = call(&state, Method::GET, "/api/v1/clients", None).await;
    let items = list["items"].as_array().unwrap();
    let find = |id: &str| items.iter().find(|c| c["client_id"] == id).unwrap().clone();
    assert_eq!(find("queued-sub")["queued"], 3);
    assert_eq!(find("no-ack")["inflight"], 2);

    slow_task.abort();
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn api_keys_are_required_and_roles_limit_what_they_may_do() {
    let (server, _) = start().await;
    let (admin_key, admin_line) = generate("ops", Role::Admin);
    let (viewer_key, viewer_line) = generate("grafana", Role::Viewer);
    let keys = ApiKeys::parse(&format!("{admin_line}\n{viewer_line}\n")).unwrap();
    let state = ApiState::new(server.admin(), Access::new(keys, Default::default()));
    let publish = json!({"topic": "t", "payload": "x"});

    let (status, body) = call(&state, Method::GET, "/api/v1/overview", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    let (status, _) = call_with(&state, Method::GET, "/metrics", None, Some("tmq_forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = call_with(
        &state,
        Method::GET,
        "/api/v1/overview",
        None,
        Some(&viewer_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call_with(
        &state,
        Method::POST,
        "/api/v1/publish",
        Some(publish.clone()),
        Some(&viewer_key),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "forbidden");

    let (status, _) = call_with(
        &state,
        Method::POST,
        "/api/v1/publish",
        Some(publish),
        Some(&admin_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let (server, _) = start().await;
    let (status, body) = call(&open(&server), Method::GET, "/api/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    within("shutdown", server.shutdown()).await;
}
