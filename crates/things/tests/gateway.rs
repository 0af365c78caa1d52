//! Gateways and sub-devices end to end: a real broker, the platform with SQLite, and a gateway
//! played by rumqttc that adds its sub-device with `thing/topo/add`, logs it in with
//! `combine/login` (or several with `combine/batch_login`), speaks for it on the sub-device's
//! own topics, hears of registry changes on `thing/topo/change` and registers sub-devices with
//! `thing/sub/register`. Signatures are computed by Python's `hmac` and `hashlib` modules, not
//! by our code.

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

/// `signmethod=sha256` computed by Python: the digest of the content with the secret appended.
fn python_sha256(secret: &str, content: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys; print(hashlib.sha256((sys.argv[2] + sys.argv[1]).encode()).hexdigest())",
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
        Self::connect_as(server, "gw", "g1", secret).await
    }

    /// Device `pk`/`dn` (not necessarily a gateway) on its topo, sub and session topics.
    async fn connect_as(server: &ServerHandle, pk: &str, dn: &str, secret: &str) -> Gateway {
        let addr = server.local_addrs()[0];
        let mut o = MqttOptions::new(format!("{pk}-{dn}"), addr.ip().to_string(), addr.port());
        o.set_credentials(format!("{dn}&{pk}"), secret);
        // A 51-device batch (and its echo on the gateway's own subscription) is over rumqttc's
        // 10 KiB default.
        o.set_max_packet_size(1 << 20, 1 << 20);
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
        for f in [
            format!("/sys/{pk}/{dn}/thing/topo/#"),
            format!("/sys/{pk}/{dn}/thing/sub/#"),
            format!("/ext/session/{pk}/{dn}/combine/#"),
        ] {
            gw.client.subscribe(&f, QoS::AtLeastOnce).await.unwrap();
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

/// A broker with the platform on SQLite and the products `gw` (gateway), [`SUB`] and `dynsub`
/// (sub-devices; only `dynsub` allows `thing/sub/register`) and `direct`.
struct Env {
    server: ServerHandle,
    platform: Platform,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
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
        dynamic_register: pk == "dynsub",
        created_ms: 0,
    };
    let gateway_tsl = include_str!("../../../examples/things/gateway.json");
    let thermostat_tsl = include_str!("../../../examples/things/thermostat.json");
    for p in [
        product("gw", NodeType::Gateway, gateway_tsl),
        product(SUB, NodeType::SubDevice, thermostat_tsl),
        product("dynsub", NodeType::SubDevice, thermostat_tsl),
        product("direct", NodeType::Direct, thermostat_tsl),
    ] {
        platform.put_product(p, false).await.unwrap();
    }
    Env {
        server,
        platform,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_gateway_adds_logs_in_and_speaks_for_its_sub_device() {
    let Env {
        server,
        platform,
        _dir,
    } = start().await;
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

/// The status and sub-devices of the next `thing/topo/change` the gateway receives.
async fn topo_change(g: &mut Gateway) -> (i64, Value) {
    let n = g.expect("/sys/gw/g1/thing/topo/change").await;
    assert_eq!(n["method"], "thing.topo.change", "{n}");
    assert!(n["id"].as_str().unwrap().parse::<u64>().is_ok(), "{n}");
    (
        n["params"]["status"].as_i64().unwrap(),
        n["params"]["subList"].clone(),
    )
}

fn ident(pk: &str, dn: &str) -> Value {
    json!({"productKey": pk, "deviceName": dn})
}

#[tokio::test]
async fn a_gateway_logs_sub_devices_in_and_out_in_batches_all_or_none() {
    let Env {
        server,
        platform,
        _dir,
    } = start().await;
    let gw = platform.create_device("gw", "g1").await.unwrap();
    let mut g = Gateway::connect(&server, &gw.device_secret).await;
    let mut subs = Vec::new();
    for dn in ["s1", "s2", "s3"] {
        subs.push(platform.create_device(SUB, dn).await.unwrap());
    }
    let gw_key = Some(("gw".to_string(), "g1".to_string()));
    // Attached through the registry: the gateway is told (status 0, created).
    for dn in ["s1", "s2"] {
        platform
            .set_device_gateway(SUB, dn, gw_key.clone())
            .await
            .unwrap();
        assert_eq!(topo_change(&mut g).await, (0, json!([ident(SUB, dn)])));
    }
    let (s1, s2) = (&subs[0].device_secret, &subs[1].device_secret);
    let batch = "/ext/session/gw/g1/combine/batch_login";

    // One wrong signature and one sub-device of no gateway: nobody goes online, and `data`
    // names each failure.
    let r = g
        .request(
            batch,
            "1",
            json!({"deviceList": [sub_sign(s1, "s1"), sub_sign(s1, "s2"), sub_sign(&subs[2].device_secret, "s3")]}),
        )
        .await;
    assert_eq!(r["code"], 401, "{r}");
    assert_eq!(r["data"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        (&r["data"][0]["deviceName"], &r["data"][0]["code"]),
        (&json!("s2"), &json!(401)),
        "{r}"
    );
    assert_eq!(
        (&r["data"][1]["deviceName"], &r["data"][1]["code"]),
        (&json!("s3"), &json!(6401)),
        "{r}"
    );
    assert!(!platform.device(SUB, "s1").unwrap().online);

    // Malformed batches.
    for (id, params) in [
        ("2", json!([sub_sign(s1, "s1")])),
        ("3", json!({"deviceList": []})),
        ("4", json!({"deviceList": vec![sub_sign(s1, "s1"); 51]})),
        (
            "5",
            json!({"deviceList": [{"productKey": SUB, "deviceName": "s1"}]}),
        ),
    ] {
        let r = g.request(batch, id, params).await;
        assert_eq!(r["code"], 460, "{id}: {r}");
    }

    // All good: s1 signed with plain sha256 (the batch's method), s2 with its own hmacsha256.
    let ts = "1700000000000";
    let content = format!("clientId{SUB}.s1deviceNames1productKey{SUB}timestamp{ts}");
    let s1_sha = json!({"productKey": SUB, "deviceName": "s1", "clientId": format!("{SUB}.s1"),
                        "timestamp": ts, "sign": python_sha256(s1, &content).to_uppercase()});
    // (s1 twice: a sub-device named again is logged in once.)
    let r = g
        .request(
            batch,
            "6",
            json!({"signMethod": "sha256", "deviceList": [s1_sha.clone(), sub_sign(s2, "s2"), s1_sha]}),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"], json!([ident(SUB, "s1"), ident(SUB, "s2")]));
    wait_online(&platform, "s1", true).await;
    wait_online(&platform, "s2", true).await;

    // batch_logout: one unknown to this gateway refuses the whole batch.
    let out = "/ext/session/gw/g1/combine/batch_logout";
    let r = g
        .request(
            out,
            "7",
            json!([ident(SUB, "s1"), ident(SUB, "s3"), ident(SUB, "nobody")]),
        )
        .await;
    assert_eq!(r["code"], 6401, "{r}");
    assert_eq!(
        r["data"],
        json!([
            {"productKey": SUB, "deviceName": "s3", "code": 6401,
             "message": format!("{SUB}/s3 is not a sub-device of this gateway")},
            {"productKey": SUB, "deviceName": "nobody", "code": 6100,
             "message": format!("sub-device {SUB}/nobody not found")},
        ])
    );
    assert!(platform.device(SUB, "s1").unwrap().online);
    let r = g.request(out, "8", ident(SUB, "s1")).await;
    assert_eq!(r["code"], 460, "params must be an array: {r}");
    let r = g.request(out, "9", json!([])).await;
    assert_eq!(r["code"], 460, "{r}");
    let r = g
        .request(
            out,
            "10",
            json!([ident(SUB, "s1"), ident(SUB, "s2"), ident(SUB, "s1")]),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"], json!([ident(SUB, "s1"), ident(SUB, "s2")]));
    wait_online(&platform, "s1", false).await;
    wait_online(&platform, "s2", false).await;

    // Disabling and enabling through the registry: status 8, then 2; a disabled sub-device
    // cannot log in (6204).
    platform.set_device_enabled(SUB, "s2", false).await.unwrap();
    assert_eq!(topo_change(&mut g).await, (8, json!([ident(SUB, "s2")])));
    let r = g
        .request(batch, "11", json!({"deviceList": [sub_sign(s2, "s2")]}))
        .await;
    assert_eq!(r["code"], 6204, "{r}");
    platform.set_device_enabled(SUB, "s2", true).await.unwrap();
    assert_eq!(topo_change(&mut g).await, (2, json!([ident(SUB, "s2")])));
    // Enabling an enabled device changes nothing and tells nobody; the next notice is the
    // deletion's (status 1).
    platform.set_device_enabled(SUB, "s2", true).await.unwrap();
    platform.delete_device(SUB, "s2").await.unwrap();
    assert_eq!(topo_change(&mut g).await, (1, json!([ident(SUB, "s2")])));
    // The platform detaching s1 (status 1) ends its session too.
    let r = g
        .request(batch, "12", json!({"deviceList": [sub_sign(s1, "s1")]}))
        .await;
    assert_eq!(r["code"], 200, "{r}");
    wait_online(&platform, "s1", true).await;
    platform.set_device_gateway(SUB, "s1", None).await.unwrap();
    assert_eq!(topo_change(&mut g).await, (1, json!([ident(SUB, "s1")])));
    wait_online(&platform, "s1", false).await;

    // A sub-device moved to another gateway by topo/add: the old gateway is told (status 1).
    platform
        .set_device_gateway(SUB, "s1", gw_key.clone())
        .await
        .unwrap();
    assert_eq!(topo_change(&mut g).await, (0, json!([ident(SUB, "s1")])));
    let gw2 = platform.create_device("gw", "g2").await.unwrap();
    let addr = server.local_addrs()[0];
    let mut o = MqttOptions::new("gw-g2", addr.ip().to_string(), addr.port());
    o.set_credentials("g2&gw", &gw2.device_secret);
    let (g2, mut g2_loop) = AsyncClient::new(o, 10);
    let g2_task = tokio::spawn(async move { while g2_loop.poll().await.is_ok() {} });
    g2.publish(
        "/sys/gw/g2/thing/topo/add",
        QoS::AtLeastOnce,
        false,
        json!({"id": "1", "params": [sub_sign(s1, "s1")]}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(topo_change(&mut g).await, (1, json!([ident(SUB, "s1")])));
    g2_task.abort();
    drop(g);

    platform.flush().await.unwrap();
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
            (false, "topo_deleted".to_string()),
        ]
    );
    platform.shutdown().await;
    within("shutdown", server.shutdown()).await;
}

#[tokio::test]
async fn a_gateway_registers_sub_devices_of_products_that_allow_it() {
    let Env {
        server,
        platform,
        _dir,
    } = start().await;
    let gw = platform.create_device("gw", "g1").await.unwrap();
    let mut g = Gateway::connect(&server, &gw.device_secret).await;
    let register = "/sys/gw/g1/thing/sub/register";

    // (n1 twice: registered once, answered once.)
    let r = g
        .request(
            register,
            "1",
            json!([
                ident("dynsub", "n1"),
                ident("dynsub", "n2"),
                ident("dynsub", "n1")
            ]),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{r}");
    assert_eq!(
        (&data[0]["productKey"], &data[0]["deviceName"]),
        (&json!("dynsub"), &json!("n1"))
    );
    let secret = data[0]["deviceSecret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 32, "{r}");
    assert_eq!(
        platform
            .device("dynsub", "n1")
            .unwrap()
            .device
            .device_secret,
        secret
    );
    // Registering again answers the same secret; nothing is created twice.
    let r = g
        .request(register, "2", json!([ident("dynsub", "n1")]))
        .await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"][0]["deviceSecret"], json!(secret));

    // The secret works: the gateway attaches and logs in the new sub-device with it.
    let r = g
        .request(
            "/sys/gw/g1/thing/topo/add",
            "3",
            json!([signed("dynsub", &secret, "n1")]),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");
    let r = g
        .request(
            "/ext/session/gw/g1/combine/login",
            "4",
            signed("dynsub", &secret, "n1"),
        )
        .await;
    assert_eq!(r["code"], 200, "{r}");

    // Refusals, each applied whole: nothing of the request is created.
    let other_gw = platform.create_device("gw", "g2").await.unwrap();
    platform.create_device("dynsub", "taken").await.unwrap();
    platform
        .set_device_gateway("dynsub", "taken", Some(("gw".into(), other_gw.device_name)))
        .await
        .unwrap();
    platform.create_device("dynsub", "off").await.unwrap();
    platform
        .set_device_enabled("dynsub", "off", false)
        .await
        .unwrap();
    for (id, params, code) in [
        ("5", json!([ident("dynsub", "m1"), ident(SUB, "x")]), 401),
        (
            "6",
            json!([ident("dynsub", "m1"), ident("nope", "x")]),
            6250,
        ),
        ("7", json!([ident("direct", "x")]), 460),
        ("8", json!([ident("gw", "g1")]), 6402),
        ("9", json!([ident("dynsub", "a/b")]), 460),
        ("10", json!("x"), 460),
        ("11", json!([]), 460),
        (
            "12",
            json!([ident("dynsub", "m1"), ident("dynsub", "taken")]),
            401,
        ),
        ("13", json!([ident("dynsub", "off")]), 6204),
    ] {
        let r = g.request(register, id, params).await;
        assert_eq!(r["code"], code, "{id}: {r}");
    }
    assert!(platform.device("dynsub", "m1").is_none());
    assert!(platform.device(SUB, "x").is_none());

    // A device of a direct product may neither register nor batch-log-in sub-devices.
    let d1 = platform.create_device("direct", "d1").await.unwrap();
    let mut d = Gateway::connect_as(&server, "direct", "d1", &d1.device_secret).await;
    let r = d
        .request(
            "/sys/direct/d1/thing/sub/register",
            "1",
            json!([ident("dynsub", "m1")]),
        )
        .await;
    assert_eq!(r["code"], 460, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("not a gateway"),
        "{r}"
    );
    let r = d
        .request(
            "/ext/session/direct/d1/combine/batch_login",
            "2",
            json!({"deviceList": [signed("dynsub", &secret, "n1")]}),
        )
        .await;
    assert_eq!(r["code"], 460, "{r}");
    let r = d
        .request(
            "/ext/session/direct/d1/combine/batch_logout",
            "3",
            json!([ident("dynsub", "n1")]),
        )
        .await;
    assert_eq!(r["code"], 460, "{r}");
    assert!(platform.device("dynsub", "m1").is_none());
    drop(d);

    drop(g);
    platform.shutdown().await;
    within("shutdown", server.shutdown()).await;
    // Registered devices are in the store, not only in memory.
    let url = format!("sqlite://{}?mode=rwc", _dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    let n1 = store.device("dynsub", "n1").await.unwrap().unwrap();
    assert_eq!(n1.device_secret, secret);
    assert!(store.device("dynsub", "m1").await.unwrap().is_none());
}

#[tokio::test]
async fn registry_changes_read_on_reload_reach_the_gateway_on_topo_change() {
    let Env {
        server,
        platform,
        _dir,
    } = start().await;
    let gw = platform.create_device("gw", "g1").await.unwrap();
    let mut g = Gateway::connect(&server, &gw.device_secret).await;
    let gw_key = Some(("gw".to_string(), "g1".to_string()));
    for dn in ["r1", "r2", "r3"] {
        platform.create_device(SUB, dn).await.unwrap();
        platform
            .set_device_gateway(SUB, dn, gw_key.clone())
            .await
            .unwrap();
        assert_eq!(topo_change(&mut g).await, (0, json!([ident(SUB, dn)])));
    }
    // Another process (the offline CLI) changes the database: r1 disabled, r2 deleted, r3
    // detached.
    let url = format!("sqlite://{}?mode=rwc", _dir.path().join("t.db").display());
    let cli = Store::connect(&url).await.unwrap();
    let mut r1 = platform.device(SUB, "r1").unwrap().device;
    r1.enabled = false;
    cli.put_device(&r1).await.unwrap();
    assert!(cli.delete_device(SUB, "r2").await.unwrap());
    let mut r3 = platform.device(SUB, "r3").unwrap().device;
    r3.gateway = None;
    cli.put_device(&r3).await.unwrap();
    cli.close().await;

    let report = platform.reload_registry().await.unwrap();
    assert_eq!((report.removed, report.changed), (1, 2), "{report:?}");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(topo_change(&mut g).await);
    }
    got.sort_by_key(|(status, _)| *status);
    assert_eq!(
        got,
        [
            (1, json!([ident(SUB, "r2")])),
            (1, json!([ident(SUB, "r3")])),
            (8, json!([ident(SUB, "r1")])),
        ]
    );
    platform.shutdown().await;
    within("shutdown", server.shutdown()).await;
}
