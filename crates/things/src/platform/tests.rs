use serde_json::json;

use super::*;
use crate::registry::{Device, NodeType};
use crate::tsl::ThingModel;
use crate::validate::ValidationMode;

const NOW: i64 = 1_700_000_000_000;

struct Fixture {
    platform: Platform,
    outbox: mpsc::Receiver<Publish>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    store
        .put_product(&Product {
            product_key: "pk".into(),
            name: "plug".into(),
            node_type: NodeType::Direct,
            validation: ValidationMode::Strict,
            model: ThingModel::from_value(&json!({
                "properties": [
                    {"identifier": "power", "accessMode": "rw", "dataType": {"type": "bool"}},
                    {"identifier": "watts", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "0", "max": "3680"}}}
                ],
                "services": [
                    {"identifier": "reboot", "callType": "sync", "inputData": [], "outputData": []},
                    {"identifier": "blink", "callType": "async", "inputData": [{"identifier": "n", "dataType": {"type": "int", "specs": {"min": "1", "max": "5"}}}], "outputData": []}
                ]
            }))
            .unwrap(),
            created_ms: 0,
        })
        .await
        .unwrap();
    store
        .insert_device(&Device::new("pk", "dn", 0))
        .await
        .unwrap();
    let config = WriterConfig {
        queue_capacity: 100,
        batch_rows: 100,
        flush_interval: Duration::from_millis(10),
    };
    let (platform, outbox) = Platform::start(store, config, 16);
    Fixture {
        platform,
        outbox,
        _dir: dir,
    }
}

fn json_of(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap()
}

#[tokio::test]
async fn property_reports_are_answered_stored_and_shadowed() {
    let mut f = fixture().await;
    let payload = br#"{"id":"1","params":{"watts":{"value":1200.5,"time":1699999999000}}}"#;
    f.platform
        .handle_message("/sys/pk/dn/thing/event/property/post", payload, NOW)
        .await
        .unwrap();
    let reply = f.outbox.try_recv().unwrap();
    assert_eq!(reply.topic, "/sys/pk/dn/thing/event/property/post_reply");
    assert_eq!(json_of(&reply)["code"], 200);
    assert_eq!(
        f.platform.shadow("pk", "dn").await.unwrap().reported["watts"].value,
        json!(1200.5)
    );
    assert!(
        f.platform
            .store()
            .shadow("pk", "dn")
            .await
            .unwrap()
            .reported
            .is_empty(),
        "saved on flush, not per report"
    );
    assert_eq!(f.platform.flush_shadows().await.unwrap(), 1);
    let stored = f.platform.store().shadow("pk", "dn").await.unwrap();
    assert_eq!(stored.reported["watts"].time, 1_699_999_999_000);
    assert_eq!(
        f.platform.flush_shadows().await.unwrap(),
        0,
        "nothing changed since"
    );
    f.platform.writer().flush().await;
    let history = f
        .platform
        .store()
        .property_history("pk", "dn", "watts", 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);

    // unknown products and non-Alink topics are ignored
    f.platform
        .handle_message("/sys/nope/dn/thing/event/property/post", payload, NOW)
        .await
        .unwrap();
    f.platform
        .handle_message("some/other/topic", payload, NOW)
        .await
        .unwrap();
    assert!(f.outbox.try_recv().is_err());
    assert_eq!(
        f.platform.stats().unknown_product.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn sets_for_offline_devices_become_desired_and_go_out_on_reconnect() {
    let mut f = fixture().await;
    let mut values = Map::new();
    values.insert("power".into(), json!(1));
    let outcome = f
        .platform
        .set_properties("pk", "dn", values.clone(), NOW)
        .await
        .unwrap();
    assert_eq!(outcome, SetOutcome::Desired(vec![("power".into(), 1)]));
    assert!(f.outbox.try_recv().is_err());

    f.platform
        .device_online("pk", "dn", Some("10.0.0.9"), NOW + 5)
        .await
        .unwrap();
    let set = f.outbox.try_recv().unwrap();
    assert_eq!(set.topic, "/sys/pk/dn/thing/service/property/set");
    assert_eq!(json_of(&set)["params"], json!({"power": 1}));
    let device = f
        .platform
        .store()
        .device("pk", "dn")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.last_ip.as_deref(), Some("10.0.0.9"));

    // online now: sent at once
    let outcome = f
        .platform
        .set_properties("pk", "dn", values, NOW + 6)
        .await
        .unwrap();
    let SetOutcome::Sent(id) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(json_of(&f.outbox.try_recv().unwrap())["id"], id);

    // read-only or out of model: refused
    let mut bad = Map::new();
    bad.insert("watts".into(), json!(5.0));
    assert!(matches!(
        f.platform.set_properties("pk", "dn", bad, NOW).await,
        Err(PlatformError::Invalid(_))
    ));
    assert!(matches!(
        f.platform
            .set_properties("pk", "ghost", Map::new(), NOW)
            .await,
        Err(PlatformError::NotFound(_))
    ));

    f.platform
        .device_offline("pk", "dn", "keepalive-timeout", NOW + 10)
        .await;
    assert!(!f.platform.is_online("pk", "dn").await);
    f.platform.writer().flush().await;
    let changes = f
        .platform
        .store()
        .status_changes("pk", "dn", 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.online, c.reason.as_str()))
            .collect::<Vec<_>>(),
        [(true, "connect"), (false, "keepalive-timeout")]
    );
}

#[tokio::test]
async fn sync_calls_resolve_with_the_rrpc_response_and_are_logged() {
    let mut f = fixture().await;
    assert!(matches!(
        f.platform
            .call_service(
                "pk",
                "dn",
                "reboot",
                Map::new(),
                NOW,
                Duration::from_secs(8)
            )
            .await,
        Err(PlatformError::Offline(_))
    ));
    f.platform
        .device_online("pk", "dn", None, NOW)
        .await
        .unwrap();
    let (id, rx) = f
        .platform
        .call_service(
            "pk",
            "dn",
            "reboot",
            Map::new(),
            NOW,
            Duration::from_secs(8),
        )
        .await
        .unwrap();
    let req = f.outbox.try_recv().unwrap();
    assert_eq!(req.topic, format!("/sys/pk/dn/rrpc/request/{id}"));
    assert_eq!(json_of(&req)["method"], "thing.service.reboot");
    let response = format!(r#"{{"id":"{id}","code":200,"data":{{}}}}"#);
    f.platform
        .handle_message(
            &format!("/sys/pk/dn/rrpc/response/{id}"),
            response.as_bytes(),
            NOW + 40,
        )
        .await
        .unwrap();
    let CallResult::Replied(reply) = rx.await.unwrap() else {
        panic!("timed out")
    };
    assert_eq!(reply.code, 200);
    f.platform.writer().flush().await;
    let log = f
        .platform
        .store()
        .service_calls("pk", "dn", 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        (
            log[0].service.as_str(),
            log[0].status.as_str(),
            log[0].latency_ms
        ),
        ("reboot", "ok", Some(40))
    );
}

#[tokio::test]
async fn calls_without_a_reply_time_out() {
    let mut f = fixture().await;
    f.platform
        .device_online("pk", "dn", None, NOW)
        .await
        .unwrap();
    let mut args = Map::new();
    args.insert("n".into(), json!(3));
    let (id, rx) = f
        .platform
        .call_service(
            "pk",
            "dn",
            "blink",
            args.clone(),
            NOW,
            Duration::from_millis(500),
        )
        .await
        .unwrap();
    assert_eq!(
        f.outbox.try_recv().unwrap().topic,
        "/sys/pk/dn/thing/service/blink"
    );
    assert_eq!(f.platform.expire(NOW + 499).await, Some(NOW + 500));
    assert_eq!(f.platform.expire(NOW + 500).await, None);
    assert_eq!(rx.await.unwrap(), CallResult::TimedOut);
    f.platform.writer().flush().await;
    let log = f
        .platform
        .store()
        .service_calls("pk", "dn", 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        (log[0].call_id.as_str(), log[0].status.as_str()),
        (id.as_str(), "timeout")
    );

    args.insert("n".into(), json!(9));
    assert!(matches!(
        f.platform
            .call_service("pk", "dn", "blink", args, NOW, Duration::from_secs(1))
            .await,
        Err(PlatformError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_full_outbox_drops_and_counts() {
    let f = fixture().await;
    f.platform
        .device_online("pk", "dn", None, NOW)
        .await
        .unwrap();
    let mut values = Map::new();
    values.insert("power".into(), json!(0));
    for _ in 0..16 {
        f.platform
            .set_properties("pk", "dn", values.clone(), NOW)
            .await
            .unwrap();
    }
    assert!(matches!(
        f.platform.set_properties("pk", "dn", values, NOW).await,
        Err(PlatformError::Busy)
    ));
    assert_eq!(f.platform.stats().outbox_dropped.load(Ordering::Relaxed), 1);
    drop(f.outbox);
}

fn client_event(user: &str, connected_at: i64) -> Vec<u8> {
    json!({"clientid": "c", "username": user, "peer": "[::1]:50123", "protocol": 4, "keep_alive": 60, "connected_at": connected_at, "ts": NOW})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn broker_client_events_drive_online_state_and_ignore_taken_over_connections() {
    let f = fixture().await;
    let p = &f.platform;
    let (on, off) = (
        "$SYS/brokers/clients/connected",
        "$SYS/brokers/clients/disconnected",
    );
    p.handle_client_event(on, &client_event("dn&pk", 1), NOW)
        .await
        .unwrap();
    assert!(p.is_online("pk", "dn").await);
    assert_eq!(
        p.store()
            .device("pk", "dn")
            .await
            .unwrap()
            .unwrap()
            .last_ip
            .as_deref(),
        Some("::1")
    );
    // a second connection takes over; the first one's disconnect arrives afterwards
    p.handle_client_event(on, &client_event("dn&pk", 2), NOW + 1)
        .await
        .unwrap();
    p.handle_client_event(off, &client_event("dn&pk", 1), NOW + 2)
        .await
        .unwrap();
    assert!(
        p.is_online("pk", "dn").await,
        "the current connection is still up"
    );
    p.handle_client_event(off, &client_event("dn&pk", 2), NOW + 3)
        .await
        .unwrap();
    assert!(!p.is_online("pk", "dn").await);
    // not devices, not events
    p.handle_client_event(on, &client_event("alice", 5), NOW)
        .await
        .unwrap();
    p.handle_client_event("$SYS/brokers/uptime", b"12", NOW)
        .await
        .unwrap();
    p.handle_client_event(on, b"not json", NOW).await.unwrap();
    p.writer().flush().await;
    let changes = p
        .store()
        .status_changes("pk", "dn", 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        changes.iter().map(|c| c.online).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(peer_ip("10.1.2.3:1883"), "10.1.2.3");
}

#[tokio::test]
async fn gateways_report_for_their_own_sub_devices_only() {
    let mut f = fixture().await;
    let store = f.platform.store().clone();
    store
        .put_product(&Product {
            product_key: "gw".into(),
            name: "gateway".into(),
            node_type: NodeType::Gateway,
            validation: ValidationMode::Strict,
            model: ThingModel::from_value(&json!({"properties": [
                {"identifier": "uptime", "accessMode": "r", "dataType": {"type": "int", "specs": {"min": "0"}}}
            ]}))
            .unwrap(),
            created_ms: 0,
        })
        .await
        .unwrap();
    store
        .insert_device(&Device::new("gw", "g1", 0))
        .await
        .unwrap();
    let attached = |dn: &str, enabled: bool| {
        let mut d = Device::new("pk", dn, 0);
        d.gateway = Some(("gw".into(), "g1".into()));
        d.enabled = enabled;
        d
    };
    store.insert_device(&attached("s1", true)).await.unwrap();
    store.insert_device(&attached("s3", false)).await.unwrap();
    store
        .insert_device(&Device::new("pk", "s2", 0))
        .await
        .unwrap();
    assert_eq!(
        store.device("pk", "s1").await.unwrap().unwrap().gateway,
        Some(("gw".into(), "g1".into()))
    );

    let topic = "/sys/gw/g1/thing/event/property/pack/post";
    let pack = |id: &str, sub: &str, watts: f64| {
        json!({"id": id, "params": {
            "properties": {"uptime": 100},
            "subDevices": [{"identity": {"productKey": "pk", "deviceName": sub},
                            "properties": {"watts": {"value": watts, "time": NOW - 5}}}]
        }})
        .to_string()
    };
    f.platform
        .handle_message(topic, pack("1", "s1", 20.5).as_bytes(), NOW)
        .await
        .unwrap();
    let reply = f.outbox.try_recv().unwrap();
    assert_eq!(
        reply.topic,
        "/sys/gw/g1/thing/event/property/pack/post_reply"
    );
    assert_eq!(json_of(&reply)["code"], 200);
    assert_eq!(
        f.platform.shadow("gw", "g1").await.unwrap().reported["uptime"].value,
        json!(100)
    );
    let s1 = f.platform.shadow("pk", "s1").await.unwrap();
    assert_eq!(
        (
            s1.reported["watts"].value.clone(),
            s1.reported["watts"].time
        ),
        (json!(20.5), NOW - 5)
    );
    assert_eq!(f.platform.flush_shadows().await.unwrap(), 2);
    f.platform.writer().flush().await;
    assert_eq!(
        store
            .property_history("pk", "s1", "watts", 0, i64::MAX, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let cases = [
        (
            pack("2", "s1", 9999.0),
            460,
            "invalid params: pk/s1: watts: must be <= max 3680",
        ),
        (
            pack("3", "s2", 1.0),
            460,
            "pk/s2 is not a sub-device of this gateway",
        ),
        (
            pack("4", "ghost", 1.0),
            6100,
            "sub-device pk/ghost not found",
        ),
        (pack("5", "s3", 1.0), 6204, "sub-device pk/s3 is disabled"),
    ];
    for (payload, code, message) in cases {
        f.platform
            .handle_message(topic, payload.as_bytes(), NOW + 1)
            .await
            .unwrap();
        let r = json_of(&f.outbox.try_recv().unwrap());
        assert_eq!(
            (r["code"].as_u64(), r["message"].as_str()),
            (Some(code), Some(message))
        );
    }
    // nothing from the refused packs was applied, not even the gateway's own part
    assert_eq!(
        f.platform.shadow("pk", "s1").await.unwrap().reported["watts"].value,
        json!(20.5)
    );
    assert_eq!(f.platform.shadow("gw", "g1").await.unwrap().version, 1);
    assert_eq!(f.platform.flush_shadows().await.unwrap(), 0);

    // no ack asked: no reply
    let quiet = json!({"id": "6", "sys": {"ack": 0}, "params": {"properties": {"uptime": 101}}})
        .to_string();
    f.platform
        .handle_message(topic, quiet.as_bytes(), NOW + 2)
        .await
        .unwrap();
    assert!(f.outbox.try_recv().is_err());
    assert_eq!(
        f.platform.shadow("gw", "g1").await.unwrap().reported["uptime"].value,
        json!(101)
    );
}
