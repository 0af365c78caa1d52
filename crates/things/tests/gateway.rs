//! Gateways and sub-devices end to end: a real broker, the platform with SQLite, and a gateway
//! played by rumqttc that adds its sub-device with `thing/topo/add`, logs it in with
//! `combine/login` and speaks for it on the sub-device's own topics. Signatures are computed by
//! Python's `hmac` module, not by our code.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thingmq_server::{Config, Server, ServerHandle};
use thingmq_things::runtime::{Platform, PlatformConfig, SetOutcome};
use thingmq_things::store::Store;
use thingmq_things::{NodeType, Product, ThingModel, ValidationMode};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// HMAC hex computed by Python, not by us.
fn python_hmac(secret: &str, content: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())",
            secret,
            content,
        ])
        .output()
        .expect("python3 must be installed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The sign a gateway sends for sub-device `dn` of product [`SUB`].
fn sub_sign(secret: &str, dn: &str) -> Value {
    signed(SUB, secret, dn)
}

fn signed(pk: &str, secret: &str, dn: &str) -> Value {
    let (client_id, ts) = (format!("{pk}.{dn}"), "1700000000000");
    let content = format!("clientId{client_id}deviceName{dn}productKey{pk}timestamp{ts}");
    json!({"productKey": pk, "deviceName": dn, "clientId": client_id, "timestamp": ts,
           "signmethod": "hmacsha256", "signMethod": "hmacsha256", "sign": python_hmac(secret, &content)})
}

const SUB: &str = "subtherm";

struct Gateway {
    client: AsyncClient,
    incoming: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    async fn connect(server: &ServerHandle, secret: &str) -> Gateway {
        let addr = server.local_addrs()[0];
        let mut o = MqttOptions::new("gw-g1", addr.ip().to_string(), addr.port());
        o.set_credentials("g1&gw", secret);
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        let (tx, incoming) = tokio::sync::mpsc::unbounded_channel();
        let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(e) = eventloop.poll().await {
                match e {
                    Event::Incoming(Packet::Publish(p)) => {
                        let v = serde_json::from_slice::<Value>(&p.payload).unwrap();
                        let _ = tx.send((p.topic, v));
                    }
                    Event::Incoming(Packet::SubAck(a)) => {
                        let _ = acks_tx.send(a);
                    }
                    _ => {}
                }
            }
        });
        let gw = Gateway {
            client,
            incoming,
            task,
        };
        for f in ["/sys/gw/g1/thing/topo/#", "/ext/session/gw/g1/combine/#"] {
            gw.client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
            let ack = within("SUBACK", acks.recv()).await.unwrap();
            assert!(
                matches!(
                    ack.return_codes[..],
                    [rumqttc::SubscribeReasonCode::Success(_)]
                ),
                "{f}: {ack:?}"
            );
        }
        gw
    }

    async fn request(&mut self, topic: &str, id: &str, params: Value) -> Value {
        self.publish(topic, json!({"id": id, "version": "1.0", "params": params}))
            .await;
        self.expect(&format!("{topic}_reply")).await
    }

    async fn publish(&self, topic: &str, payload: Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }

    async fn expect(&mut self, topic: &str) -> Value {
        within(topic, async {
            loop {
                let (t, v) = self.incoming.recv().await.expect("gateway connection");
                if t == topic {
                    return v;
                }
            }
        })
        .await
    }
}

async fn wait_online(p: &Platform, dn: &str, online: bool) {
    within("online state", async {
        while p.device(SUB, dn).unwrap().online != online {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_gateway_adds_logs_in_and_speaks_for_its_sub_device() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let config = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
    )
    .unwrap();
    let server = within("server", Server::start(config)).await.unwrap();
    let store = within("store", Store::connect(&url)).await.unwrap();
    let platform = Platform::start(
        store,
        server.local_linker(),
        server.admin(),
        PlatformConfig {
            call_timeout: Duration::from_secs(3),
            ..PlatformConfig::default()
        },
    )
    .await
    .unwrap();
    server.add_access_hook(Arc::new(platform.access_hook()));
    let product = |pk: &str, node_type, tsl: &str| Product {
        product_key: pk.into(),
        name: pk.into(),
        node_type,
        validation: ValidationMode::Strict,
        model: ThingModel::from_json(tsl).unwrap(),
        created_ms: 0,
    };
    let gateway_tsl = include_str!("../../../examples/things/gateway.json");
    let thermostat_tsl = include_str!("../../../examples/things/thermostat.json");
    platform
        .put_product(product("gw", NodeType::Gateway, gateway_tsl), false)
        .await
        .unwrap();
    platform
        .put_product(product(SUB, NodeType::SubDevice, thermostat_tsl), false)
        .await
        .unwrap();
    platform
        .put_product(product("direct", NodeType::Direct, thermostat_tsl), false)
        .await
        .unwrap();
    let gw = platform.create_device("gw", "g1").await.unwrap();
    let s1 = platform.create_device(SUB, "s1").await.unwrap();
    let s2 = platform.create_device(SUB, "s2").await.unwrap();
    let mut g = Gateway::connect(&server, &gw.device_secret).await;

    // topo/add: a wrong signature is refused, the right one attaches the sub-device.
    let add = "/sys/gw/g1/thing/topo/add";
    let r = g
        .request(add, "1", json!([sub_sign(&s2.device_secret, "s1")]))
        .await;
    assert_eq!(r["code"], 401, "{r}");
    assert!(platform.device(SUB, "s1").unwrap().device.gateway.is_none());
    let r = g
        .request(add, "2", json!([sub_sign(&s1.device_secret, "s1")]))
        .await;
    assert_eq!(
        (r["id"].as_str(), r["code"].as_i64()),
        (Some("2"), Some(200)),
        "{r}"
    );
    assert_eq!(r["data"], json!([{"productKey": SUB, "deviceName": "s1"}]));
    assert_eq!(
        platform.device(SUB, "s1").unwrap().device.gateway,
        Some(("gw".to_string(), "g1".to_string()))
    );
    let r = g.request("/sys/gw/g1/thing/topo/get", "3", json!({})).await;
    assert_eq!(
        r["data"],
        json!([{"productKey": SUB, "deviceName": "s1"}]),
        "{r}"
    );

    // Not logged in yet: the sub-device's topics are closed to the gateway.
    let sub_prefix = format!("/sys/{SUB}/s1/");
    g.publish(
        &format!("{sub_prefix}thing/event/property/post"),
        json!({"id": "4", "params": {"Humidity": 10}}),
    )
    .await;

    // combine/login of a sub-device not attached to this gateway: 6401.
    let login = "/ext/session/gw/g1/combine/login";
    let r = g
        .request(login, "5", sub_sign(&s2.device_secret, "s2"))
        .await;
    assert_eq!(r["code"], 6401, "{r}");
    let r = g
        .request(login, "6", sub_sign(&s1.device_secret, "s1"))
        .await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"], json!({"productKey": SUB, "deviceName": "s1"}));
    wait_online(&platform, "s1", true).await;

    // Online: the gateway subscribes to and publishes on the sub-device's topics.
    g.client
        .subscribe(format!("{sub_prefix}thing/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    g.publish(
        &format!("{sub_prefix}thing/event/property/post"),
        json!({"id": "7", "params": {"Humidity": 55}}),
    )
    .await;
    let r = g
        .expect(&format!("{sub_prefix}thing/event/property/post_reply"))
        .await;
    assert_eq!(
        (r["id"].as_str(), r["code"].as_i64()),
        (Some("7"), Some(200)),
        "{r}"
    );
    let p = platform.clone();
    let set = tokio::spawn(async move {
        p.set_properties(
            SUB,
            "s1",
            json!({"TargetTemperature": 21.5})
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
    });
    let req = g
        .expect(&format!("{sub_prefix}thing/service/property/set"))
        .await;
    assert_eq!(req["params"]["TargetTemperature"], 21.5);
    g.publish(
        &format!("{sub_prefix}thing/service/property/set_reply"),
        json!({"id": req["id"], "code": 200, "data": {}}),
    )
    .await;
    let outcome = within("set", set).await.unwrap().unwrap();
    assert!(matches!(outcome, SetOutcome::Answered(r) if r.code == 200));

    // Logout, then a new login ended by the gateway's disconnection.
    let r = g
        .request(
            "/ext/session/gw/g1/combine/logout",
            "8",
            json!({"productKey": SUB, "deviceName": "s1"}),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    wait_online(&platform, "s1", false).await;
    let r = g
        .request(login, "9", sub_sign(&s1.device_secret, "s1"))
        .await;
    assert_eq!(r["code"], 200, "{r}");
    wait_online(&platform, "s1", true).await;
    drop(g);
    wait_online(&platform, "s1", false).await;

    // topo/delete: the relation is gone, so is the login.
    let mut g = Gateway::connect(&server, &gw.device_secret).await;
    let r = g
        .request(
            "/sys/gw/g1/thing/topo/delete",
            "10",
            json!([{"productKey": SUB, "deviceName": "s1"}]),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    assert!(platform.device(SUB, "s1").unwrap().device.gateway.is_none());
    let r = g
        .request(login, "11", sub_sign(&s1.device_secret, "s1"))
        .await;
    assert_eq!(r["code"], 6401, "{r}");
    // A direct device cannot be made a sub-device, nor a gateway its own; the whole add fails.
    let d1 = platform.create_device("direct", "d1").await.unwrap();
    let both = json!([
        sub_sign(&s1.device_secret, "s1"),
        signed("direct", &d1.device_secret, "d1")
    ]);
    let r = g.request(add, "12", both).await;
    assert_eq!(r["code"], 460, "{r}");
    assert!(r["message"].as_str().unwrap().contains("direct/d1"), "{r}");
    assert!(platform.device(SUB, "s1").unwrap().device.gateway.is_none());
    let r = g
        .request(add, "13", json!([signed("gw", &gw.device_secret, "g1")]))
        .await;
    assert_eq!(r["code"], 6402, "{r}");
    drop(g);

    platform.flush().await.unwrap();
    let history = platform
        .property_history(SUB, "s1", "Humidity", 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        1,
        "only the report sent after login: {history:?}"
    );
    assert_eq!(history[0].value, json!(55));
    let reasons: Vec<(bool, String)> = platform
        .status_changes(SUB, "s1", 0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.online, c.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (true, "login".to_string()),
            (false, "logout".to_string()),
            (true, "login".to_string()),
            (false, "gateway_offline".to_string()),
        ]
    );
    platform.shutdown().await;
    within("shutdown", server.shutdown()).await;
}
