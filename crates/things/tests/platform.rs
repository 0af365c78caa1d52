//! The device platform end to end: a real broker, the platform on its in-process link with
//! SQLite, and devices played by rumqttc (an MQTT client we did not write) speaking Alink.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thingmq_server::{Config, Server, ServerHandle};
use thingmq_things::runtime::{Platform, PlatformConfig, PlatformError, ServiceCall, SetOutcome};
use thingmq_things::store::Store;
use thingmq_things::{NodeType, Product, ThingModel, ValidationMode};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

struct Harness {
    server: Option<ServerHandle>,
    addr: SocketAddr,
    platform: Platform,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(validation: ValidationMode) -> Harness {
        Self::start_with(
            validation,
            PlatformConfig {
                call_timeout: Duration::from_secs(2),
                ..PlatformConfig::default()
            },
        )
        .await
    }

    async fn start_with(validation: ValidationMode, platform_config: PlatformConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("things.db").display()
        );
        let config = Config::from_toml(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
        )
        .unwrap();
        let server = within("server", Server::start(config)).await.unwrap();
        let store = within("store", Store::connect(&url)).await.unwrap();
        let platform = within(
            "platform",
            Platform::start(
                store,
                server.local_linker(),
                server.admin(),
                platform_config,
            ),
        )
        .await
        .unwrap();
        server.add_access_hook(Arc::new(platform.access_hook()));
        let model = ThingModel::from_json(include_str!("../../../examples/things/thermostat.json"))
            .unwrap();
        let product = Product {
            product_key: "thermostat".into(),
            name: "Thermostat".into(),
            node_type: NodeType::Direct,
            validation,
            model,
            dynamic_register: false,
            created_ms: 0,
        };
        platform.put_product(product, false).await.unwrap();
        let addr = server.local_addrs()[0];
        Harness {
            server: Some(server),
            addr,
            platform,
            _dir: dir,
        }
    }

    async fn device(&self, name: &str) -> (Device, String) {
        let d = self
            .platform
            .create_device("thermostat", name)
            .await
            .unwrap();
        let secret = d.device_secret.clone();
        let device = Device::connect(self.addr, name, &secret).await.unwrap();
        (device, secret)
    }

    async fn stop(mut self) {
        self.platform.shutdown().await;
        if let Some(s) = self.server.take() {
            within("shutdown", s.shutdown()).await;
        }
    }
}

/// A device: rumqttc v3.1.1 with the plain `deviceName&productKey` + deviceSecret scheme.
struct Device {
    client: AsyncClient,
    incoming: tokio::sync::mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
    name: String,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Device {
    /// Connects; `Err` carries the CONNACK code of a refusal.
    async fn connect(addr: SocketAddr, name: &str, secret: &str) -> Result<Device, String> {
        let mut o = MqttOptions::new(format!("dev-{name}"), addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_credentials(format!("{name}&thermostat"), secret);
        let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(o, 100);
        let (tx, mut incoming) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Packet::Disconnect);
                        tracing::debug!("device connection ended: {e}");
                        break;
                    }
                }
            }
        });
        let first = within("CONNACK", incoming.recv()).await;
        match first {
            Some(Packet::ConnAck(a)) if a.code == rumqttc::ConnectReturnCode::Success => {}
            other => {
                task.abort();
                return Err(format!("{other:?}"));
            }
        }
        let mut device = Device {
            client,
            incoming,
            task,
            name: name.to_string(),
        };
        device
            .client
            .subscribe(format!("/sys/thermostat/{name}/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        // Messages may already be on their way (desired values on connect): keep them.
        let mut early = Vec::new();
        within("SUBACK", async {
            loop {
                match device.incoming.recv().await {
                    Some(Packet::SubAck(_)) => return,
                    Some(p @ Packet::Publish(_)) => early.push(p),
                    Some(_) => {}
                    None => panic!("closed before SUBACK"),
                }
            }
        })
        .await;
        if !early.is_empty() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for p in early {
                let _ = tx.send(p);
            }
            let mut old = std::mem::replace(&mut device.incoming, rx);
            tokio::spawn(async move {
                while let Some(p) = old.recv().await {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(device)
    }

    fn topic(&self, rest: &str) -> String {
        format!("/sys/thermostat/{}/{rest}", self.name)
    }

    async fn publish(&self, rest: &str, payload: Value) {
        self.client
            .publish(
                self.topic(rest),
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .await
            .unwrap();
    }

    /// The next PUBLISH whose topic ends with `suffix`, as JSON.
    async fn expect(&mut self, suffix: &str) -> (String, Value) {
        within(suffix, async {
            loop {
                match self.incoming.recv().await {
                    Some(Packet::Publish(p)) if p.topic.ends_with(suffix) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap();
                        return (p.topic, v);
                    }
                    Some(Packet::Disconnect) | None => {
                        panic!("disconnected while waiting for {suffix}")
                    }
                    Some(_) => {}
                }
            }
        })
        .await
    }

    async fn expect_closed(&mut self) {
        within("disconnect", async {
            loop {
                match self.incoming.recv().await {
                    Some(Packet::Disconnect) | None => return,
                    Some(_) => {}
                }
            }
        })
        .await
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn wait_online(h: &Harness, name: &str, online: bool) {
    within("online state", async {
        while h.platform.device("thermostat", name).unwrap().online != online {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn reported_properties_are_acknowledged_and_reach_the_shadow_and_history() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, _) = h.device("t1").await;
    d.publish(
        "thing/event/property/post",
        json!({"id": "41", "version": "1.0", "params": {"CurrentTemperature": 21.5,
               "Humidity": {"value": 40, "time": 1_700_000_000_000_i64}},
               "method": "thing.event.property.post"}),
    )
    .await;
    let (_, reply) = d.expect("thing/event/property/post_reply").await;
    assert_eq!(reply["id"], "41");
    assert_eq!(reply["code"], 200, "{reply}");

    h.platform.flush().await.unwrap();
    let shadow = h.platform.shadow("thermostat", "t1").unwrap();
    assert_eq!(shadow.reported["CurrentTemperature"].value, json!(21.5));
    assert_eq!(shadow.reported["Humidity"].time, 1_700_000_000_000);
    let history = h
        .platform
        .property_history("thermostat", "t1", "Humidity", 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].value, json!(40));
    h.stop().await;
}

#[tokio::test]
async fn strict_mode_rejects_a_bad_report_with_460_naming_the_rule_and_stores_nothing() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, _) = h.device("t2").await;
    d.publish(
        "thing/event/property/post",
        json!({"id": "7", "params": {"CurrentTemperature": 99.0}}),
    )
    .await;
    let (_, reply) = d.expect("post_reply").await;
    assert_eq!(reply["code"], 460);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("CurrentTemperature"),
        "{reply}"
    );
    h.platform.flush().await.unwrap();
    assert!(h
        .platform
        .shadow("thermostat", "t2")
        .unwrap()
        .reported
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn weak_mode_stores_what_passes_and_reports_check_failed_data() {
    let h = Harness::start(ValidationMode::Weak).await;
    let (mut d, _) = h.device("t3").await;
    d.publish(
        "thing/event/property/post",
        json!({"id": "8", "params": {"CurrentTemperature": "warm", "Humidity": 50}}),
    )
    .await;
    let (_, reply) = d.expect("post_reply").await;
    assert_eq!(reply["code"], 200);
    assert!(
        reply["data"]["checkFailedData"]["CurrentTemperature"].is_object(),
        "{reply}"
    );
    h.platform.flush().await.unwrap();
    let shadow = h.platform.shadow("thermostat", "t3").unwrap();
    assert!(shadow.reported.contains_key("Humidity"));
    assert!(!shadow.reported.contains_key("CurrentTemperature"));
    h.stop().await;
}

#[tokio::test]
async fn devices_authenticate_with_their_secret_and_stay_on_their_own_topics() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (d, secret) = h.device("t4").await;
    h.platform.create_device("thermostat", "t5").await.unwrap();
    assert!(Device::connect(h.addr, "t5", "wrong").await.is_err());
    assert!(Device::connect(h.addr, "ghost", &secret).await.is_err());
    // Another device's subtree is refused (SUBACK 0x80).
    d.client
        .subscribe("/sys/thermostat/t5/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let mut d = d;
    within("SUBACK", async {
        loop {
            if let Some(Packet::SubAck(a)) = d.incoming.recv().await {
                assert_eq!(a.return_codes, vec![rumqttc::SubscribeReasonCode::Failure]);
                return;
            }
        }
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn property_set_reaches_an_online_device_and_waits_for_its_answer() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, _) = h.device("t6").await;
    wait_online(&h, "t6", true).await;
    let platform = h.platform.clone();
    let call = tokio::spawn(async move {
        platform
            .set_properties("thermostat", "t6", obj(json!({"TargetTemperature": 22.5})))
            .await
    });
    let (_, req) = d.expect("thing/service/property/set").await;
    assert_eq!(req["params"]["TargetTemperature"], 22.5);
    assert_eq!(req["method"], "thing.service.property.set");
    d.publish(
        "thing/service/property/set_reply",
        json!({"id": req["id"], "code": 200, "data": {}}),
    )
    .await;
    let outcome = within("set outcome", call).await.unwrap().unwrap();
    let SetOutcome::Answered(reply) = outcome else {
        panic!("expected an answer, got {outcome:?}")
    };
    assert_eq!(reply.code, 200);

    // Read-only properties and out-of-range values are refused before anything is sent.
    let err = h
        .platform
        .set_properties("thermostat", "t6", obj(json!({"Humidity": 3})))
        .await
        .unwrap_err();
    assert!(matches!(err, PlatformError::Invalid(_)), "{err}");
    h.stop().await;
}

#[tokio::test]
async fn property_set_while_offline_is_delivered_as_desired_on_connect() {
    let h = Harness::start(ValidationMode::Strict).await;
    let device = h.platform.create_device("thermostat", "t7").await.unwrap();
    let outcome = h
        .platform
        .set_properties("thermostat", "t7", obj(json!({"Mode": 2})))
        .await
        .unwrap();
    assert_eq!(outcome, SetOutcome::Desired(vec![("Mode".into(), 1)]));
    let mut d = Device::connect(h.addr, "t7", &device.device_secret)
        .await
        .unwrap();
    // The desired values come with the device's first message after it connects.
    d.publish(
        "thing/event/property/post",
        json!({"id": "8", "params": {"Mode": 0}, "sys": {"ack": 0}}),
    )
    .await;
    let (_, req) = d.expect("thing/service/property/set").await;
    assert_eq!(req["params"], json!({"Mode": 2}));
    // The device reads and then clears its desired values.
    d.publish(
        "thing/property/desired/get",
        json!({"id": "9", "params": {"properties": ["Mode"]}}),
    )
    .await;
    let (_, reply) = d.expect("thing/property/desired/get_reply").await;
    assert_eq!(reply["data"]["Mode"], json!({"value": 2, "version": 1}));
    d.publish(
        "thing/property/desired/delete",
        json!({"id": "10", "params": {"properties": {"Mode": {"version": 1}}}}),
    )
    .await;
    d.expect("thing/property/desired/delete_reply").await;
    h.platform.flush().await.unwrap();
    assert!(h
        .platform
        .shadow("thermostat", "t7")
        .unwrap()
        .desired
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn sync_service_goes_over_rrpc_and_times_out_without_an_answer() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, _) = h.device("t8").await;
    wait_online(&h, "t8", true).await;
    let platform = h.platform.clone();
    let call = tokio::spawn(async move {
        platform
            .call_service("thermostat", "t8", "Boost", obj(json!({"Minutes": 30})))
            .await
    });
    let (topic, req) = d.expect("").await;
    let message_id = topic.rsplit('/').next().unwrap().to_string();
    assert!(topic.contains("/rrpc/request/"), "{topic}");
    assert_eq!(req["method"], "thing.service.Boost");
    d.client
        .publish(
            d.topic(&format!("rrpc/response/{message_id}")),
            QoS::AtMostOnce,
            false,
            json!({"id": req["id"], "code": 200, "data": {"EndsAt": "1700000000000"}}).to_string(),
        )
        .await
        .unwrap();
    let result = within("service result", call).await.unwrap().unwrap();
    let ServiceCall::Answered(reply) = result else {
        panic!("{result:?}")
    };
    assert_eq!(reply.data["EndsAt"], "1700000000000");

    // No answer: a timeout, logged as such.
    let err = h
        .platform
        .call_service("thermostat", "t8", "Boost", obj(json!({"Minutes": 5})))
        .await
        .unwrap_err();
    assert!(matches!(err, PlatformError::Timeout(_)), "{err}");
    h.platform.flush().await.unwrap();
    let calls = h
        .platform
        .service_calls("thermostat", "t8", 0, i64::MAX)
        .await
        .unwrap();
    let statuses: Vec<&str> = calls.iter().map(|c| c.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "timeout"]);
    h.stop().await;
}

#[tokio::test]
async fn events_and_online_state_are_recorded() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, _) = h.device("t9").await;
    wait_online(&h, "t9", true).await;
    d.publish(
        "thing/event/FrostWarning/post",
        json!({"id": "11", "params": {"value": {"Temperature": 2.5}}}),
    )
    .await;
    let (_, reply) = d.expect("thing/event/FrostWarning/post_reply").await;
    assert_eq!(reply["code"], 200, "{reply}");
    d.client.disconnect().await.unwrap();
    wait_online(&h, "t9", false).await;
    h.platform.flush().await.unwrap();
    let events = h
        .platform
        .events("thermostat", "t9", Some("alert"), 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].output["Temperature"], 2.5);
    let changes = h
        .platform
        .status_changes("thermostat", "t9", 0, i64::MAX)
        .await
        .unwrap();
    let online: Vec<bool> = changes.iter().map(|c| c.online).collect();
    assert_eq!(online, [true, false]);
    assert_eq!(changes[0].ip.as_deref(), Some("127.0.0.1"));
    let reasons: Vec<&str> = changes.iter().map(|c| c.reason.as_str()).collect();
    assert_eq!(reasons, ["connect", "normal"]);

    // Gone without a DISCONNECT: the log says the connection was lost.
    let (d, _) = h.device("t9b").await;
    wait_online(&h, "t9b", true).await;
    drop(d);
    wait_online(&h, "t9b", false).await;
    h.platform.flush().await.unwrap();
    let changes = h
        .platform
        .status_changes("thermostat", "t9b", 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        changes.last().map(|c| c.reason.as_str()),
        Some("connection_lost")
    );
    h.stop().await;
}

#[tokio::test]
async fn disabling_a_device_disconnects_it_and_refuses_it() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut d, secret) = h.device("t10").await;
    wait_online(&h, "t10", true).await;
    h.platform
        .set_device_enabled("thermostat", "t10", false)
        .await
        .unwrap();
    d.expect_closed().await;
    assert!(Device::connect(h.addr, "t10", &secret).await.is_err());
    h.platform
        .set_device_enabled("thermostat", "t10", true)
        .await
        .unwrap();
    assert!(Device::connect(h.addr, "t10", &secret).await.is_ok());
    h.stop().await;
}

#[tokio::test]
async fn a_registry_reload_applies_changes_made_in_the_database_by_another_process() {
    let h = Harness::start(ValidationMode::Strict).await;
    let (mut disabled, _) = h.device("r-disabled").await;
    let (mut rekeyed, old_secret) = h.device("r-rekeyed").await;
    let (mut deleted, _) = h.device("r-deleted").await;
    let (_tagged, _) = h.device("r-tagged").await;
    for name in ["r-disabled", "r-rekeyed", "r-deleted", "r-tagged"] {
        wait_online(&h, name, true).await;
    }

    // What `thingmq device …` does: a second connection to the same database file.
    let url = format!(
        "sqlite://{}?mode=rwc",
        h._dir.path().join("things.db").display()
    );
    let cli = Store::connect(&url).await.unwrap();
    let get = |name: &str| h.platform.device("thermostat", name).unwrap().device;
    let mut d = get("r-disabled");
    d.enabled = false;
    cli.put_device(&d).await.unwrap();
    let mut d = get("r-rekeyed");
    d.device_secret = "a-new-secret".into();
    cli.put_device(&d).await.unwrap();
    let mut d = get("r-tagged");
    d.tags.insert("room".into(), "kitchen".into());
    cli.put_device(&d).await.unwrap();
    assert!(cli.delete_device("thermostat", "r-deleted").await.unwrap());
    let added = thingmq_things::registry::Device::new("thermostat", "r-added", 0);
    cli.put_device(&added).await.unwrap();
    let plug = Product {
        product_key: "plug".into(),
        name: "Plug".into(),
        node_type: NodeType::Direct,
        validation: ValidationMode::Weak,
        dynamic_register: false,
        model: ThingModel::from_json(include_str!("../../../examples/things/smart-plug.json"))
            .unwrap(),
        created_ms: 0,
    };
    cli.put_product(&plug).await.unwrap();
    cli.close().await;
    // Nothing changes before the reload.
    assert!(Device::connect(h.addr, "r-added", &added.device_secret)
        .await
        .is_err());
    assert!(h.platform.product("plug").is_none());

    let report = h.platform.reload_registry().await.unwrap();
    assert_eq!(
        report,
        thingmq_things::runtime::RegistryReload {
            products: 2,
            devices: 4,
            added: 1,
            removed: 1,
            changed: 3,
            disconnected: 3,
        }
    );
    disabled.expect_closed().await;
    rekeyed.expect_closed().await;
    deleted.expect_closed().await;
    assert!(Device::connect(h.addr, "r-rekeyed", &old_secret)
        .await
        .is_err());
    assert!(Device::connect(h.addr, "r-rekeyed", "a-new-secret")
        .await
        .is_ok());
    assert!(Device::connect(h.addr, "r-added", &added.device_secret)
        .await
        .is_ok());
    assert!(h.platform.device("thermostat", "r-deleted").is_none());
    assert!(h.platform.product("plug").is_some());
    // A change that takes no right away leaves the device connected.
    let tagged = h.platform.device("thermostat", "r-tagged").unwrap();
    assert!(tagged.online);
    assert_eq!(tagged.device.tags["room"], "kitchen");
    // A second reload finds nothing to do.
    let again = h.platform.reload_registry().await.unwrap();
    assert_eq!(
        (
            again.added,
            again.removed,
            again.changed,
            again.disconnected
        ),
        (0, 0, 0, 0)
    );
    h.stop().await;
}

#[tokio::test]
async fn registry_and_shadows_survive_a_platform_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("things.db").display()
    );
    let config = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
    )
    .unwrap();
    let server = Server::start(config).await.unwrap();
    let start = || async {
        let store = Store::connect(&url).await.unwrap();
        Platform::start(
            store,
            server.local_linker(),
            server.admin(),
            PlatformConfig::default(),
        )
        .await
        .unwrap()
    };
    let platform = start().await;
    let model =
        ThingModel::from_json(include_str!("../../../examples/things/thermostat.json")).unwrap();
    platform
        .put_product(
            Product {
                product_key: "thermostat".into(),
                name: "T".into(),
                node_type: NodeType::Direct,
                validation: ValidationMode::Strict,
                model,
                dynamic_register: false,
                created_ms: 0,
            },
            false,
        )
        .await
        .unwrap();
    let device = platform.create_device("thermostat", "r1").await.unwrap();
    platform
        .set_properties("thermostat", "r1", obj(json!({"Mode": 1})))
        .await
        .unwrap();
    platform.shutdown().await;
    drop(platform);

    let platform = start().await;
    assert_eq!(platform.products().len(), 1);
    let again = platform.device("thermostat", "r1").unwrap();
    assert_eq!(again.device.device_secret, device.device_secret);
    assert_eq!(
        platform.shadow("thermostat", "r1").unwrap().desired["Mode"].value,
        json!(1)
    );
    platform.shutdown().await;
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_gateway_reports_for_its_registered_sub_devices_in_one_pack() {
    let h = Harness::start(ValidationMode::Strict).await;
    let gateway_model =
        ThingModel::from_json(include_str!("../../../examples/things/gateway.json")).unwrap();
    h.platform
        .put_product(
            Product {
                product_key: "gw".into(),
                name: "Gateway".into(),
                node_type: NodeType::Gateway,
                validation: ValidationMode::Strict,
                model: gateway_model,
                dynamic_register: false,
                created_ms: 0,
            },
            false,
        )
        .await
        .unwrap();
    let gw = h.platform.create_device("gw", "g1").await.unwrap();
    h.platform
        .create_device("thermostat", "sub1")
        .await
        .unwrap();
    h.platform
        .create_device("thermostat", "stranger")
        .await
        .unwrap();
    h.platform
        .set_device_gateway("thermostat", "sub1", Some(("gw".into(), "g1".into())))
        .await
        .unwrap();

    // The gateway connects as a device of product gw.
    let mut o = MqttOptions::new("gw-g1", h.addr.ip().to_string(), h.addr.port());
    o.set_credentials("g1&gw", gw.device_secret.clone());
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (tx, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(e) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                let _ = tx.send(serde_json::from_slice::<Value>(&p.payload).unwrap());
            }
        }
    });
    client
        .subscribe(
            "/sys/gw/g1/thing/event/property/pack/post_reply",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    // SUBSCRIBE and then PUBLISH on one connection: the broker handles them in that order.
    let pack = |id: &str, sub: &str| {
        json!({"id": id, "params": {
            "properties": {"Uptime": 120},
            "subDevices": [{"identity": {"productKey": "thermostat", "deviceName": sub},
                            "properties": {"CurrentTemperature": 19.5}}]}})
        .to_string()
    };
    let topic = "/sys/gw/g1/thing/event/property/pack/post";
    client
        .publish(topic, QoS::AtLeastOnce, false, pack("1", "sub1"))
        .await
        .unwrap();
    let reply = within("pack reply", incoming.recv()).await.unwrap();
    assert_eq!(
        (reply["id"].as_str(), reply["code"].as_i64()),
        (Some("1"), Some(200)),
        "{reply}"
    );
    client
        .publish(topic, QoS::AtLeastOnce, false, pack("2", "stranger"))
        .await
        .unwrap();
    let reply = within("pack reply", incoming.recv()).await.unwrap();
    assert_eq!(reply["code"], 460, "{reply}");
    task.abort();

    h.platform.flush().await.unwrap();
    let sub = h.platform.shadow("thermostat", "sub1").unwrap();
    assert_eq!(sub.reported["CurrentTemperature"].value, json!(19.5));
    assert!(h
        .platform
        .shadow("thermostat", "stranger")
        .unwrap()
        .reported
        .is_empty());
    assert_eq!(
        h.platform.shadow("gw", "g1").unwrap().reported["Uptime"].value,
        json!(120)
    );
    h.stop().await;
}

#[tokio::test]
async fn history_posts_store_earlier_data_without_rolling_the_shadow_back() {
    let h = Harness::start(ValidationMode::Strict).await;
    h.platform
        .create_device("thermostat", "other")
        .await
        .unwrap();
    let (mut d, _) = h.device("h1").await;
    d.publish(
        "thing/event/property/post",
        json!({"id": "1", "params": {"CurrentTemperature": 22.0}}),
    )
    .await;
    let (_, reply) = d.expect("thing/event/property/post_reply").await;
    assert_eq!(reply["code"], 200, "{reply}");

    // Recorded while the device was offline, uploaded now: two snapshots and an event.
    let t0 = 1_700_000_000_000_i64;
    let ident = json!({"productKey": "thermostat", "deviceName": "h1"});
    d.publish(
        "thing/event/property/history/post",
        json!({"id": "2", "version": "1.0", "method": "thing.event.property.history.post",
               "params": [{"identity": ident,
                 "properties": [
                   {"CurrentTemperature": {"value": 18.0, "time": t0}, "Humidity": {"value": 40, "time": t0}},
                   {"CurrentTemperature": {"value": 19.5, "time": t0 + 60_000}}],
                 "events": [{"FrostWarning": {"value": {"Temperature": 1.5}, "time": t0 + 30_000}}]}]}),
    )
    .await;
    let (topic, reply) = d.expect("thing/event/property/history/post_reply").await;
    assert_eq!(
        topic,
        "/sys/thermostat/h1/thing/event/property/history/post_reply"
    );
    assert_eq!(
        (reply["id"].as_str(), reply["code"].as_i64()),
        (Some("2"), Some(200)),
        "{reply}"
    );

    // Strict mode: one bad value refuses the whole upload.
    d.publish(
        "thing/event/property/history/post",
        json!({"id": "3", "params": [{"identity": ident, "properties": [
            {"CurrentTemperature": {"value": 17.0, "time": t0 + 1}},
            {"Humidity": {"value": 400, "time": t0 + 2}}]}]}),
    )
    .await;
    let (_, reply) = d.expect("thing/event/property/history/post_reply").await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("Humidity"),
        "{reply}"
    );

    // Another direct device's history is not this device's to upload.
    let other = json!({"productKey": "thermostat", "deviceName": "other"});
    d.publish(
        "thing/event/property/history/post",
        json!({"id": "4", "params": [{"identity": other, "properties": [
            {"CurrentTemperature": {"value": 17.0, "time": t0}}]}]}),
    )
    .await;
    let (_, reply) = d.expect("thing/event/property/history/post_reply").await;
    assert_eq!(reply["code"], 460, "{reply}");

    h.platform.flush().await.unwrap();
    let temps: Vec<(i64, Value)> = h
        .platform
        .property_history("thermostat", "h1", "CurrentTemperature", 0, i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.time, p.value))
        .collect();
    assert_eq!(temps.len(), 3, "{temps:?}");
    assert_eq!(temps[0], (t0, json!(18.0)));
    assert_eq!(temps[1], (t0 + 60_000, json!(19.5)));
    assert_eq!(temps[2].1, json!(22.0));
    let events = h
        .platform
        .events("thermostat", "h1", Some("alert"), 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].time, t0 + 30_000);
    // The live value stays the latest; the older humidity fills a gap in the shadow.
    let shadow = h.platform.shadow("thermostat", "h1").unwrap();
    assert_eq!(shadow.reported["CurrentTemperature"].value, json!(22.0));
    assert_eq!(shadow.reported["Humidity"].time, t0);
    assert!(h
        .platform
        .property_history("thermostat", "other", "CurrentTemperature", 0, i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_device_sending_faster_than_its_quota_gets_429_and_its_excess_is_not_stored() {
    let h = Harness::start_with(
        ValidationMode::Strict,
        PlatformConfig {
            call_timeout: Duration::from_secs(2),
            max_uplinks_per_sec: 1,
            uplink_burst: 2,
            ..PlatformConfig::default()
        },
    )
    .await;
    let (mut d, _) = h.device("fast").await;
    for i in 1..=4 {
        d.publish(
            "thing/event/property/post",
            json!({"id": i.to_string(), "params": {"Humidity": i}}),
        )
        .await;
    }
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let (_, reply) = d.expect("thing/event/property/post_reply").await;
        codes.insert(
            reply["id"].as_str().unwrap().to_string(),
            reply["code"].clone(),
        );
    }
    assert_eq!(
        codes.values().filter(|c| **c == 200).count(),
        2,
        "a burst of 2 passes: {codes:?}"
    );
    assert_eq!(
        codes.values().filter(|c| **c == 429).count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        h.platform
            .stats()
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // An answer to the platform's own request is never throttled, even with the bucket empty.
    let platform = h.platform.clone();
    let set = tokio::spawn(async move {
        platform
            .set_properties(
                "thermostat",
                "fast",
                obj(json!({"TargetTemperature": 21.0})),
            )
            .await
    });
    let (_, req) = d.expect("thing/service/property/set").await;
    d.publish(
        "thing/service/property/set_reply",
        json!({"id": req["id"], "code": 200, "data": {}}),
    )
    .await;
    let outcome = within("set answer", set).await.unwrap().unwrap();
    assert!(matches!(outcome, SetOutcome::Answered(r) if r.code == 200));

    h.platform.flush().await.unwrap();
    let stored = h
        .platform
        .property_history("thermostat", "fast", "Humidity", 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    h.stop().await;
}
