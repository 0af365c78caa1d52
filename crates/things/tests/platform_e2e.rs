//! The device layer in a real MQTT loop: a broker on 127.0.0.1:0 with `DeviceAuth` as its
//! access hook, the `Platform` linked to it by an ordinary MQTT client (a stand-in for the
//! in-process link the server will provide), and a rumqttc device whose Alink signature Python
//! computes. Online/offline comes from the broker's `$SYS/brokers/clients/…` events. Covers
//! property post (ok and 460), event post, property set and its reply, a sync RRPC call, and
//! desired values delivered when the device reconnects.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use thingmq_auth::{Authenticator, ClientInfo, Refusal};
use thingmq_broker::AccessPolicy;
use thingmq_server::access::AccessHook;
use thingmq_server::{Config, Server};
use thingmq_things::platform::{CallResult, Platform, SetOutcome};
use thingmq_things::registry::{Device, NodeType, Product};
use thingmq_things::store::{Store, WriterConfig};
use thingmq_things::tsl::ThingModel;
use thingmq_things::validate::ValidationMode;
use thingmq_things::DeviceAuth;

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug)]
struct DeviceHook(Arc<DeviceAuth>);

impl AccessHook for DeviceHook {
    fn authenticate(
        &self,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Option<Result<(), Refusal>> {
        self.0
            .claims(client)
            .then(|| self.0.authenticate(client, password))
    }
    fn policy(&self, client: &ClientInfo) -> Option<Arc<dyn AccessPolicy>> {
        self.0
            .policy(client)
            .map(|p| Arc::new(p) as Arc<dyn AccessPolicy>)
    }
}

fn python_hmac_sha256(secret: &str, content: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())",
            secret,
            content,
        ])
        .output()
        .expect("python3 must be installed for this test");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An MQTT client whose incoming publishes arrive on a channel.
struct Client {
    client: AsyncClient,
    publishes: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `creds` makes a device client: it keeps its session (clean session off) so its
/// subscriptions are in place the moment it reconnects, when the platform sends its desired
/// values.
async fn client(
    addr: SocketAddr,
    id: &str,
    creds: Option<(&str, &str)>,
    filters: &[&str],
) -> Client {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(creds.is_none());
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    for f in filters {
        client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
    }
    let (tx, publishes) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let want = filters.len();
    let task = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut acks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks == want {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic, p.payload.to_vec())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    within("subscriptions", ready).await.unwrap();
    Client {
        client,
        publishes,
        task,
    }
}

impl Client {
    async fn publish(&self, topic: &str, payload: Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }

    /// The next publish on `topic` (others are skipped).
    async fn next_on(&mut self, topic: &str) -> Value {
        within(topic, async {
            loop {
                let (t, p) = self.publishes.recv().await.expect("connection ended");
                if t == topic {
                    return serde_json::from_slice(&p).unwrap();
                }
            }
        })
        .await
    }

    /// The next publish whose topic starts with `prefix`.
    async fn next_under(&mut self, prefix: &str) -> (String, Value) {
        within(prefix, async {
            loop {
                let (t, p) = self.publishes.recv().await.expect("connection ended");
                if t.starts_with(prefix) {
                    return (t, serde_json::from_slice(&p).unwrap());
                }
            }
        })
        .await
    }
}

async fn wait_online(platform: &Platform, online: bool) {
    within("the device's online state", async {
        while platform.is_online("pkPlug", "plug-1").await != online {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reports_is_commanded_and_answers_through_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}/things.db?mode=rwc",
        dir.path().display()
    ))
    .await
    .unwrap();
    store
        .put_product(&Product {
            product_key: "pkPlug".into(),
            name: "plug".into(),
            node_type: NodeType::Direct,
            validation: ValidationMode::Strict,
            model: ThingModel::from_value(&json!({
                "properties": [
                    {"identifier": "power", "accessMode": "rw", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
                    {"identifier": "watts", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "0", "max": "3680"}}}
                ],
                "events": [{"identifier": "overload", "type": "alert", "outputData": [
                    {"identifier": "watts", "dataType": {"type": "double", "specs": {"min": "0", "max": "10000"}}}]}],
                "services": [{"identifier": "reboot", "callType": "sync", "inputData": [], "outputData": [
                    {"identifier": "uptime", "dataType": {"type": "int"}}]}]
            }))
            .unwrap(),
            created_ms: 0,
        })
        .await
        .unwrap();
    let plug = Device::new("pkPlug", "plug-1", 0);
    store.insert_device(&plug).await.unwrap();

    let config = Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = true\n[sys]\ninterval_secs = 0\n").unwrap();
    let server = within("server start", Server::start(config)).await.unwrap();
    let addr = server.local_addrs()[0];
    server.add_access_hook(Arc::new(DeviceHook(Arc::new(DeviceAuth::new(
        store.credentials().await.unwrap(),
    )))));

    // The platform and its link: messages in, outbox out.
    let writer = WriterConfig {
        queue_capacity: 1000,
        batch_rows: 100,
        flush_interval: Duration::from_millis(20),
    };
    let (platform, mut outbox) = Platform::start(store.clone(), writer, 100);
    let mut link = client(
        addr,
        "platform-link",
        None,
        &[
            "/sys/+/+/thing/#",
            "/sys/+/+/rrpc/response/+",
            "$SYS/brokers/clients/+",
        ],
    )
    .await;
    let link_out = link.client.clone();
    let pumping = tokio::spawn(async move {
        while let Some(p) = outbox.recv().await {
            link_out
                .publish(p.topic, QoS::AtLeastOnce, false, p.payload)
                .await
                .unwrap();
        }
    });
    let (p2, mut incoming) = (
        platform.clone(),
        std::mem::replace(
            &mut link.publishes,
            tokio::sync::mpsc::unbounded_channel().1,
        ),
    );
    let feeding = tokio::spawn(async move {
        while let Some((topic, payload)) = incoming.recv().await {
            if topic.starts_with("$SYS/") {
                p2.handle_client_event(&topic, &payload, now_ms())
                    .await
                    .unwrap();
            } else {
                p2.handle_message(&topic, &payload, now_ms()).await.unwrap();
            }
        }
    });

    // The device, signed by Python.
    let ts = now_ms().to_string();
    let password = python_hmac_sha256(
        &plug.device_secret,
        &format!("clientIdplug-sn-1deviceNameplug-1productKeypkPlugtimestamp{ts}"),
    );
    let client_id = format!("plug-sn-1|securemode=3,signmethod=hmacsha256,timestamp={ts}|");
    let device = |addr| {
        let (client_id, password) = (client_id.clone(), password.clone());
        async move {
            client(
                addr,
                &client_id,
                Some(("plug-1&pkPlug", &password)),
                &[
                    "/sys/pkPlug/plug-1/thing/#",
                    "/sys/pkPlug/plug-1/rrpc/request/+",
                ],
            )
            .await
        }
    };
    let mut dev = device(addr).await;
    // The broker's client event tells the platform the device is online.
    wait_online(&platform, true).await;

    // property post: accepted, then one out of range (strict: 460)
    dev.publish("/sys/pkPlug/plug-1/thing/event/property/post", json!({"id": "1", "version": "1.0", "params": {"watts": 1200.5, "power": 1}, "method": "thing.event.property.post"})).await;
    let reply = dev
        .next_on("/sys/pkPlug/plug-1/thing/event/property/post_reply")
        .await;
    assert_eq!(
        (reply["id"].as_str(), reply["code"].as_u64()),
        (Some("1"), Some(200))
    );
    dev.publish(
        "/sys/pkPlug/plug-1/thing/event/property/post",
        json!({"id": "2", "params": {"watts": 5000.0}}),
    )
    .await;
    let reply = dev
        .next_on("/sys/pkPlug/plug-1/thing/event/property/post_reply")
        .await;
    assert_eq!(reply["code"], 460);
    assert_eq!(
        reply["message"],
        "invalid params: watts: must be <= max 3680"
    );
    assert_eq!(
        platform.shadow("pkPlug", "plug-1").await.unwrap().reported["watts"].value,
        json!(1200.5)
    );

    // event post
    dev.publish(
        "/sys/pkPlug/plug-1/thing/event/overload/post",
        json!({"id": "3", "params": {"value": {"watts": 3900.0}}}),
    )
    .await;
    assert_eq!(
        dev.next_on("/sys/pkPlug/plug-1/thing/event/overload/post_reply")
            .await["code"],
        200
    );

    // property set from the platform, answered by the device
    let mut values = Map::new();
    values.insert("power".into(), json!(0));
    let SetOutcome::Sent(set_id) = platform
        .set_properties("pkPlug", "plug-1", values, now_ms())
        .await
        .unwrap()
    else {
        panic!("online")
    };
    let set = dev
        .next_on("/sys/pkPlug/plug-1/thing/service/property/set")
        .await;
    assert_eq!(
        (set["id"].as_str(), &set["params"]),
        (Some(set_id.as_str()), &json!({"power": 0}))
    );
    dev.publish(
        "/sys/pkPlug/plug-1/thing/service/property/set_reply",
        json!({"id": set_id, "code": 200, "data": {}}),
    )
    .await;

    // a sync call over RRPC
    let (call_id, result) = platform
        .call_service(
            "pkPlug",
            "plug-1",
            "reboot",
            Map::new(),
            now_ms(),
            Duration::from_secs(8),
        )
        .await
        .unwrap();
    let (topic, req) = dev.next_under("/sys/pkPlug/plug-1/rrpc/request/").await;
    assert_eq!(topic, format!("/sys/pkPlug/plug-1/rrpc/request/{call_id}"));
    assert_eq!(req["method"], "thing.service.reboot");
    dev.publish(
        &format!("/sys/pkPlug/plug-1/rrpc/response/{call_id}"),
        json!({"id": call_id, "code": 200, "data": {"uptime": 42}}),
    )
    .await;
    let CallResult::Replied(reply) = within("the RRPC result", result).await.unwrap() else {
        panic!("timed out")
    };
    assert_eq!(reply.data, json!({"uptime": 42}));

    // offline (the connection drops): the set becomes desired and is delivered on reconnect
    drop(dev);
    wait_online(&platform, false).await;
    let mut values = Map::new();
    // (the device last *reported* power 1; the set to 0 above is not a report)
    values.insert("power".into(), json!(0));
    assert_eq!(
        platform
            .set_properties("pkPlug", "plug-1", values, now_ms())
            .await
            .unwrap(),
        SetOutcome::Desired(vec![("power".into(), 1)])
    );
    let mut dev = device(addr).await;
    let set = dev
        .next_on("/sys/pkPlug/plug-1/thing/service/property/set")
        .await;
    assert_eq!(set["params"], json!({"power": 0}));

    // what was stored
    platform.writer().flush().await;
    let from = now_ms() - 60_000;
    let to = now_ms() + 60_000;
    assert_eq!(
        store
            .property_history("pkPlug", "plug-1", "watts", from, to, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let events = store
        .events("pkPlug", "plug-1", Some("alert"), from, to, 10)
        .await
        .unwrap();
    assert_eq!(events[0].output, json!({"watts": 3900.0}));
    let calls = store
        .service_calls("pkPlug", "plug-1", from, to)
        .await
        .unwrap();
    let logged: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.service.as_str(), c.status.as_str()))
        .collect();
    assert!(logged.contains(&("set", "ok")), "{logged:?}");
    assert!(logged.contains(&("reboot", "ok")), "{logged:?}");

    pumping.abort();
    feeding.abort();
    drop((dev, link));
    within("shutdown", server.shutdown()).await;
}
