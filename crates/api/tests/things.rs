//! The device routes (`/api/v1/products`, `/api/v1/devices/…`) with `oneshot` over a real
//! broker and device layer (SQLite in a temp dir); rumqttc plays an online device.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thingmq_api::{app, Access, ApiState};
use thingmq_server::{Config, Server, ServerHandle};
use thingmq_things::runtime::{Platform, PlatformConfig};
use thingmq_things::store::Store;
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

struct Harness {
    server: Option<ServerHandle>,
    state: ApiState,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let config = Config::from_toml(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
        )
        .unwrap();
        let server = within("server", Server::start(config)).await.unwrap();
        let store = Store::connect(&url).await.unwrap();
        let platform = Platform::start(
            store,
            server.local_linker(),
            server.admin(),
            PlatformConfig {
                call_timeout: Duration::from_millis(800),
                ..PlatformConfig::default()
            },
        )
        .await
        .unwrap();
        server.add_access_hook(Arc::new(platform.access_hook()));
        let mut state = ApiState::new(server.admin(), Access::open());
        state.platform = Some(platform);
        Harness {
            server: Some(server),
            state,
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(&self.state, method, uri, body).await
    }

    async fn stop(mut self) {
        if let Some(p) = &self.state.platform {
            p.shutdown().await;
        }
        if let Some(s) = self.server.take() {
            within("shutdown", s.shutdown()).await;
        }
    }
}

async fn call(
    state: &ApiState,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1");
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
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn thermostat() -> Value {
    serde_json::from_str(include_str!("../../../examples/things/thermostat.json")).unwrap()
}

#[tokio::test]
async fn products_are_created_listed_exported_replaced_and_deleted() {
    let h = Harness::start().await;
    let body = json!({"productKey": "thermostat", "name": "Thermostat", "tsl": thermostat()});
    let (status, created) = h
        .call(Method::POST, "/api/v1/products", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["properties"], 6);
    let (status, _) = h.call(Method::POST, "/api/v1/products", Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let mut bad = thermostat();
    bad["properties"][0]["dataType"]["specs"]["max"] = json!("-100");
    let (status, err) = h
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({"productKey": "bad", "tsl": bad})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().contains("properties[0]"),
        "{err}"
    );
    let (status, err) = h
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({"productKey": "x", "tsl": thermostat(), "validation": "loose"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().starts_with("validation"),
        "{err}"
    );

    let (_, list) = h.call(Method::GET, "/api/v1/products", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, one) = h
        .call(Method::GET, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["tsl"]["properties"].as_array().unwrap().len(), 6);
    let (status, replaced) = h
        .call(
            Method::PUT,
            "/api/v1/products/thermostat",
            Some(json!({"name": "New", "validation": "weak", "tsl": thermostat()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["validation"], "weak");
    assert_eq!(replaced["dynamicRegister"], false, "off by default");

    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/products/thermostat/devices",
            Some(json!({"deviceName": "d1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = h
        .call(Method::DELETE, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a product with devices stays");
    let (status, _) = h
        .call(Method::DELETE, "/api/v1/devices/thermostat/d1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .call(Method::DELETE, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .call(Method::GET, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

#[tokio::test]
async fn devices_offline_commands_become_desired_values_and_bad_input_is_named() {
    let h = Harness::start().await;
    h.call(
        Method::POST,
        "/api/v1/products",
        Some(json!({"productKey": "thermostat", "tsl": thermostat()})),
    )
    .await;
    let (status, created) = h
        .call(
            Method::POST,
            "/api/v1/products/thermostat/devices",
            Some(json!({"deviceName": "t1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["deviceSecret"].as_str().unwrap().len(), 32);
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/products/thermostat/devices",
            Some(json!({"deviceName": "bad name"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/products/nope/devices",
            Some(json!({"deviceName": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/devices?product=thermostat&online=false",
            None,
        )
        .await;
    assert_eq!(list["total"], 1);
    assert!(
        list["items"][0].get("deviceSecret").is_none(),
        "lists never show secrets"
    );
    let (status, creds) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t1/credentials",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(creds["deviceSecret"], created["deviceSecret"]);

    let (status, answer) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t1/properties",
            Some(json!({"TargetTemperature": 21.0})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["desired"]["TargetTemperature"], 1);
    let (_, shadow) = h
        .call(Method::GET, "/api/v1/devices/thermostat/t1/shadow", None)
        .await;
    assert_eq!(shadow["desired"]["TargetTemperature"]["value"], 21.0);
    assert_eq!(shadow["delta"]["TargetTemperature"], 21.0);

    let (status, err) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t1/properties",
            Some(json!({"Humidity": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "read-only: {err}");
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t1/services/Boost",
            Some(json!({"Minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "offline");
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t1/services/Nope",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, history) = h
        .call(
            Method::GET,
            "/api/v1/devices/thermostat/t1/properties/Humidity/history",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["points"], json!([]));
    let (status, err) = h
        .call(
            Method::GET,
            "/api/v1/devices/thermostat/t1/properties/Humidity/history?from=10&to=5",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["message"].as_str().unwrap().starts_with("from"));
    let (status, _) = h
        .call(
            Method::GET,
            "/api/v1/devices/thermostat/t1/events?type=fatal",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, patched) = h
        .call(
            Method::PATCH,
            "/api/v1/devices/thermostat/t1",
            Some(json!({"enabled": false, "tags": {"room": "hall"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            patched["enabled"].as_bool(),
            patched["tags"]["room"].as_str()
        ),
        (Some(false), Some("hall"))
    );
    h.stop().await;
}

#[tokio::test]
async fn an_online_device_answers_sets_reports_history_and_a_silent_one_times_out() {
    let h = Harness::start().await;
    h.call(
        Method::POST,
        "/api/v1/products",
        Some(json!({"productKey": "thermostat", "tsl": thermostat()})),
    )
    .await;
    let (_, created) = h
        .call(
            Method::POST,
            "/api/v1/products/thermostat/devices",
            Some(json!({"deviceName": "t2"})),
        )
        .await;
    let addr = h.server.as_ref().unwrap().local_addrs()[0];
    let mut o = MqttOptions::new("t2-dev", addr.ip().to_string(), addr.port());
    o.set_credentials("t2&thermostat", created["deviceSecret"].as_str().unwrap());
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (tx, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(e) = eventloop.poll().await {
            if let Event::Incoming(p) = e {
                let _ = tx.send(p);
            }
        }
    });
    client
        .subscribe("/sys/thermostat/t2/thing/service/#", QoS::AtMostOnce)
        .await
        .unwrap();
    within("SUBACK", async {
        while !matches!(incoming.recv().await, Some(Packet::SubAck(_))) {}
    })
    .await;
    client
        .publish(
            "/sys/thermostat/t2/thing/event/property/post",
            QoS::AtLeastOnce,
            false,
            json!({"id": "1", "params": {"Humidity": 55}, "sys": {"ack": 0}}).to_string(),
        )
        .await
        .unwrap();
    within("online", async {
        loop {
            let (_, d) = h
                .call(Method::GET, "/api/v1/devices/thermostat/t2", None)
                .await;
            if d["online"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let state = h.state.clone();
    let set = tokio::spawn(async move {
        call(
            &state,
            Method::POST,
            "/api/v1/devices/thermostat/t2/properties",
            Some(json!({"Mode": 3})),
        )
        .await
    });
    let request = within("set request", async {
        loop {
            if let Some(Packet::Publish(p)) = incoming.recv().await {
                return serde_json::from_slice::<Value>(&p.payload).unwrap();
            }
        }
    })
    .await;
    client
        .publish(
            "/sys/thermostat/t2/thing/service/property/set_reply",
            QoS::AtMostOnce,
            false,
            json!({"id": request["id"], "code": 200, "data": {}}).to_string(),
        )
        .await
        .unwrap();
    let (status, answer) = within("set answer", set).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"]["code"], 200);

    // A live get: the device answers get_reply with the values.
    let state = h.state.clone();
    let get = tokio::spawn(async move {
        call(
            &state,
            Method::GET,
            "/api/v1/devices/thermostat/t2/properties?identifiers=Mode,Humidity",
            None,
        )
        .await
    });
    let request = within("get request", async {
        loop {
            // The device also hears its own set_reply (it subscribed to thing/service/#).
            if let Some(Packet::Publish(p)) = incoming.recv().await {
                if p.topic.ends_with("/property/get") {
                    return serde_json::from_slice::<Value>(&p.payload).unwrap();
                }
            }
        }
    })
    .await;
    assert_eq!(request["method"], "thing.service.property.get");
    assert_eq!(request["params"], json!(["Mode", "Humidity"]));
    client
        .publish(
            "/sys/thermostat/t2/thing/service/property/get_reply",
            QoS::AtMostOnce,
            false,
            json!({"id": request["id"], "code": 200, "data": {"Mode": 3, "Humidity": 55}})
                .to_string(),
        )
        .await
        .unwrap();
    let (status, answer) = within("get answer", get).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"]["data"]["Mode"], 3);

    // A sync service nobody answers: 504.
    let (status, err) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/t2/services/Boost",
            Some(json!({"Minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{err}");

    h.state.platform.as_ref().unwrap().flush().await.unwrap();
    let (_, history) = h
        .call(
            Method::GET,
            "/api/v1/devices/thermostat/t2/properties/Humidity/history?from=0",
            None,
        )
        .await;
    assert_eq!(history["points"][0]["value"], 55);
    let metrics = {
        let req = Request::builder()
            .uri("/metrics")
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        let resp = app(h.state.clone()).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    assert!(
        metrics.contains("\nthingmq_things_devices_online 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE thingmq_things_history_rows_written_total counter"));
    assert!(metrics.contains("# TYPE thingmq_things_history_queued_records gauge\n"));
    // The history above was read after a batch was committed: it was timed.
    let batches = metrics
        .lines()
        .find_map(|l| l.strip_prefix("thingmq_things_history_batch_seconds_count "))
        .expect("batch histogram");
    assert!(batches.parse::<u64>().unwrap() >= 1, "{metrics}");
    let (_, log) = h
        .call(
            Method::GET,
            "/api/v1/devices/thermostat/t2/log?from=0",
            None,
        )
        .await;
    assert_eq!(log["status"][0]["online"], true);
    let statuses: Vec<&str> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "timeout"]);
    task.abort();
    h.stop().await;
}

#[tokio::test]
async fn device_routes_answer_503_when_the_device_layer_is_off() {
    let config =
        Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n")
            .unwrap();
    let server = Server::start(config).await.unwrap();
    let state = ApiState::new(server.admin(), Access::open());
    let (status, err) = call(&state, Method::GET, "/api/v1/devices", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(err["message"].as_str().unwrap().contains("[things]"));
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn put_replaces_a_products_model_and_refuses_unknown_products_other_keys_and_bad_models() {
    let h = Harness::start().await;
    h.call(
        Method::POST,
        "/api/v1/products",
        Some(json!({"productKey": "thermostat", "tsl": thermostat()})),
    )
    .await;
    let (_, before) = h
        .call(Method::GET, "/api/v1/products/thermostat", None)
        .await;

    let mut smaller = thermostat();
    smaller["properties"].as_array_mut().unwrap().pop();
    let (status, replaced) = h
        .call(
            Method::PUT,
            "/api/v1/products/thermostat",
            Some(json!({"productKey": "thermostat", "name": "Hall thermostat", "tsl": smaller})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["properties"], 5);
    let (_, after) = h
        .call(Method::GET, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(after["name"], "Hall thermostat");
    assert_eq!(after["tsl"]["properties"].as_array().unwrap().len(), 5);
    assert_eq!(
        after["createdMs"], before["createdMs"],
        "creation time kept"
    );

    let mut bad = thermostat();
    bad["properties"][1]["dataType"]["type"] = json!("nonsense");
    let (status, err) = h
        .call(
            Method::PUT,
            "/api/v1/products/thermostat",
            Some(json!({"tsl": bad})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "invalid_input");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("properties[1]"), "names the path: {err}");
    let (_, unchanged) = h
        .call(Method::GET, "/api/v1/products/thermostat", None)
        .await;
    assert_eq!(
        unchanged["tsl"], after["tsl"],
        "a refused model changes nothing"
    );

    let (status, err) = h
        .call(
            Method::PUT,
            "/api/v1/products/thermostat",
            Some(json!({"productKey": "other", "tsl": thermostat()})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().starts_with("productKey"),
        "{err}"
    );
    let (status, err) = h
        .call(
            Method::PUT,
            "/api/v1/products/nope",
            Some(json!({"tsl": thermostat()})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    // dynamicRegister: set by a PUT that names it, kept by one that does not.
    for (body, expected) in [
        (
            json!({"tsl": thermostat(), "nodeType": "sub-device", "dynamicRegister": true}),
            true,
        ),
        (json!({"tsl": thermostat(), "nodeType": "sub-device"}), true),
        (
            json!({"tsl": thermostat(), "dynamicRegister": false}),
            false,
        ),
    ] {
        let (status, replaced) = h
            .call(Method::PUT, "/api/v1/products/thermostat", Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{replaced}");
        assert_eq!(replaced["dynamicRegister"], expected, "{replaced}");
        let (_, listed) = h.call(Method::GET, "/api/v1/products", None).await;
        assert_eq!(listed[0]["dynamicRegister"], expected, "{listed}");
    }
    h.stop().await;
}

/// Connects as device `dn` of the thermostat; whether the broker accepted, and the client.
async fn device_connects(
    h: &Harness,
    dn: &str,
    secret: &str,
) -> (bool, AsyncClient, rumqttc::EventLoop) {
    let addr = h.server.as_ref().unwrap().local_addrs()[0];
    let mut o = MqttOptions::new(format!("{dn}-dev"), addr.ip().to_string(), addr.port());
    o.set_credentials(format!("{dn}&thermostat"), secret);
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    let accepted = within("CONNACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    (accepted, client, eventloop)
}

#[tokio::test]
async fn a_reset_secret_disconnects_the_device_and_only_the_new_secret_connects() {
    let h = Harness::start().await;
    h.call(
        Method::POST,
        "/api/v1/products",
        Some(json!({"productKey": "thermostat", "tsl": thermostat()})),
    )
    .await;
    let (_, created) = h
        .call(
            Method::POST,
            "/api/v1/products/thermostat/devices",
            Some(json!({"deviceName": "r1"})),
        )
        .await;
    let old = created["deviceSecret"].as_str().unwrap().to_owned();
    let (accepted, _client, mut eventloop) = device_connects(&h, "r1", &old).await;
    assert!(accepted);

    let (status, reset) = h
        .call(Method::POST, "/api/v1/devices/thermostat/r1/secret", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let new = reset["deviceSecret"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 32);
    assert_ne!(new, old);
    within("the old connection to be closed", async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    assert!(
        !device_connects(&h, "r1", &old).await.0,
        "the old secret is refused"
    );
    assert!(device_connects(&h, "r1", &new).await.0, "the new one works");
    let (_, creds) = h
        .call(
            Method::POST,
            "/api/v1/devices/thermostat/r1/credentials",
            None,
        )
        .await;
    assert_eq!(creds["deviceSecret"], new.as_str());

    let (status, err) = h
        .call(Method::POST, "/api/v1/devices/thermostat/nope/secret", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    h.stop().await;
}
