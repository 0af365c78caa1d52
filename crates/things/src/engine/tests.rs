use serde_json::json;

use super::*;
use crate::registry::NodeType;
use crate::tsl::ThingModel;

const NOW: i64 = 1_700_000_000_000;

fn product(mode: ValidationMode) -> Product {
    Product {
        product_key: "pk".into(),
        name: "thermo".into(),
        node_type: NodeType::Direct,
        validation: mode,
        model: ThingModel::from_value(&json!({
            "properties": [
                {"identifier": "temp", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "-40", "max": "85"}}},
                {"identifier": "power", "accessMode": "rw", "dataType": {"type": "bool"}}
            ],
            "events": [{"identifier": "overheat", "type": "alert", "outputData": [
                {"identifier": "temp", "dataType": {"type": "double", "specs": {"min": "0", "max": "200"}}}]}]
        }))
        .unwrap(),
        dynamic_register: false,
        created_ms: 0,
    }
}

fn topic(path: &str) -> DeviceTopic {
    DeviceTopic::parse(&format!("/sys/pk/dn/{path}")).unwrap()
}

fn reply_json(out: &Outcome) -> Value {
    serde_json::from_slice(&out.reply.as_ref().expect("a reply").payload).unwrap()
}

#[test]
fn property_post_stores_updates_the_shadow_and_replies_200() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    let payload = br#"{"id":"1","version":"1.0","params":{"temp":{"value":21.5,"time":1699999999000},"power":1},"method":"thing.event.property.post"}"#;
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        payload,
        NOW,
    );
    let reply = out.reply.as_ref().unwrap();
    assert_eq!(reply.topic, "/sys/pk/dn/thing/event/property/post_reply");
    assert_eq!(
        reply_json(&out),
        json!({"id":"1","code":200,"data":{},"message":"success","version":"1.0"})
    );
    assert!(out.shadow_changed);
    assert_eq!(shadow.reported["temp"].time, 1_699_999_999_000);
    assert_eq!(
        shadow.reported["power"].time, NOW,
        "short form takes the receive time"
    );
    assert_eq!(out.records.len(), 2);
    assert!(out.records.contains(&Record::Property {
        product_key: "pk".into(),
        device_name: "dn".into(),
        identifier: "temp".into(),
        time: 1_699_999_999_000,
        value: json!(21.5),
    }));
}

#[test]
fn strict_rejects_the_whole_report_with_460() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    let payload = br#"{"id":"2","params":{"temp":99.0,"power":1}}"#;
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        payload,
        NOW,
    );
    let r = reply_json(&out);
    assert_eq!(r["code"], 460);
    assert_eq!(r["message"], "invalid params: temp: must be <= max 85");
    assert!(out.records.is_empty());
    assert!(!out.shadow_changed);
    assert!(shadow.reported.is_empty());
}

#[test]
fn weak_stores_what_passes_and_reports_check_failed_data() {
    let p = product(ValidationMode::Weak);
    let mut shadow = Shadow::default();
    let payload = br#"{"id":"3","params":{"temp":99.0,"power":"on"}}"#;
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        payload,
        NOW,
    );
    let r = reply_json(&out);
    assert_eq!(r["code"], 200);
    assert_eq!(
        r["data"]["checkFailedData"]["power"]["message"],
        "power: dataType must be bool (0 or 1)"
    );
    assert_eq!(
        out.records.len(),
        1,
        "temp is out of range but weak mode does not check specs"
    );
    assert_eq!(shadow.reported["temp"].value, json!(99.0));
    assert!(!shadow.reported.contains_key("power"));
}

#[test]
fn no_reply_when_the_device_asks_for_none() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        br#"{"id":"4","sys":{"ack":0},"params":{"temp":1.5}}"#,
        NOW,
    );
    assert!(out.reply.is_none());
    assert_eq!(out.records.len(), 1);
}

#[test]
fn malformed_payloads_get_400_and_oversized_reports_6106() {
    let p = product(ValidationMode::None);
    let mut shadow = Shadow::default();
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        b"not json",
        NOW,
    );
    assert_eq!(reply_json(&out)["code"], 400);
    let many: Map<String, Value> = (0..201).map(|i| (format!("p{i}"), json!(i))).collect();
    let payload = json!({"id": "5", "params": many}).to_string();
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/property/post"),
        payload.as_bytes(),
        NOW,
    );
    assert_eq!(reply_json(&out)["code"], 6106);
}

#[test]
fn events_are_checked_stored_with_their_type_and_acknowledged() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    let t = topic("thing/event/overheat/post");
    let out = handle_uplink(
        &p,
        &mut shadow,
        &t,
        br#"{"id":"6","params":{"value":{"temp":120.0},"time":1699999990000}}"#,
        NOW,
    );
    assert_eq!(
        out.reply.as_ref().unwrap().topic,
        "/sys/pk/dn/thing/event/overheat/post_reply"
    );
    assert_eq!(reply_json(&out)["code"], 200);
    assert_eq!(
        out.records,
        [Record::Event {
            product_key: "pk".into(),
            device_name: "dn".into(),
            event: StoredEvent {
                identifier: "overheat".into(),
                event_type: "alert".into(),
                time: 1_699_999_990_000,
                output: json!({"temp": 120.0})
            },
        }]
    );
    let out = handle_uplink(
        &p,
        &mut shadow,
        &t,
        br#"{"id":"7","params":{"value":{"temp":250.0}}}"#,
        NOW,
    );
    assert_eq!(reply_json(&out)["code"], 460);
    assert!(out.records.is_empty());
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/event/meltdown/post"),
        br#"{"id":"8","params":{"value":{}}}"#,
        NOW,
    );
    assert_eq!(
        reply_json(&out)["message"],
        "invalid params: meltdown: identifier not defined in the thing model"
    );
    // mode none: unknown events are stored as info
    let none = product(ValidationMode::None);
    let out = handle_uplink(
        &none,
        &mut shadow,
        &topic("thing/event/meltdown/post"),
        br#"{"id":"9","params":{"value":{"x":1}}}"#,
        NOW,
    );
    let Record::Event { event, .. } = &out.records[0] else {
        panic!()
    };
    assert_eq!(event.event_type, "info");
}

#[test]
fn desired_values_are_fetched_and_deleted_by_the_device() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    shadow.set_desired("power", json!(1), None, NOW).unwrap();
    shadow.set_desired("temp", json!(20.0), None, NOW).unwrap();
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/property/desired/get"),
        br#"{"id":"10","params":{"properties":["power"]}}"#,
        NOW,
    );
    assert_eq!(
        out.reply.as_ref().unwrap().topic,
        "/sys/pk/dn/thing/property/desired/get_reply"
    );
    assert_eq!(
        reply_json(&out)["data"],
        json!({"power": {"value": 1, "version": 1}})
    );
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/property/desired/delete"),
        br#"{"id":"11","params":{"properties":{"power":{"version":1}}}}"#,
        NOW,
    );
    assert_eq!(reply_json(&out)["code"], 200);
    assert!(out.shadow_changed);
    assert_eq!(shadow.desired.keys().collect::<Vec<_>>(), ["temp"]);
}

#[test]
fn replies_from_the_device_are_handed_back_as_answers() {
    let p = product(ValidationMode::Strict);
    let mut shadow = Shadow::default();
    let out = handle_uplink(
        &p,
        &mut shadow,
        &topic("thing/service/reboot_reply"),
        br#"{"id":"12","code":200,"data":{"ok":1}}"#,
        NOW,
    );
    assert!(out.reply.is_none());
    let (kind, reply) = out.answer.unwrap();
    assert_eq!(kind, TopicKind::ServiceReply("reboot".into()));
    assert_eq!(reply.id, "12");
    assert_eq!(reply.data, json!({"ok": 1}));
}

#[test]
fn downlink_requests_have_alink_topics_and_methods() {
    let mut args = Map::new();
    args.insert("power".into(), json!(1));
    let set = downlink::property_set("pk", "dn", "100", args.clone());
    assert_eq!(set.topic, "/sys/pk/dn/thing/service/property/set");
    let v: Value = serde_json::from_slice(&set.payload).unwrap();
    assert_eq!(v["method"], "thing.service.property.set");
    assert_eq!(v["params"], json!({"power": 1}));
    assert_eq!(v["id"], "100");
    let get = downlink::property_get("pk", "dn", "101", &["temp"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&get.payload).unwrap()["params"],
        json!(["temp"])
    );
    let call = downlink::service_call("pk", "dn", "102", "reboot", Map::new());
    assert_eq!(call.topic, "/sys/pk/dn/thing/service/reboot");
    let rrpc = downlink::rrpc_call("pk", "dn", "103", "reboot", Map::new());
    assert_eq!(rrpc.topic, "/sys/pk/dn/rrpc/request/103");
    assert_eq!(
        serde_json::from_slice::<Value>(&rrpc.payload).unwrap()["method"],
        "thing.service.reboot"
    );
}

#[test]
fn pending_calls_complete_on_answer_or_time_out() {
    let mut calls = PendingCalls::default();
    calls.start(
        "pk",
        "dn",
        "1",
        "reboot",
        CallType::Sync,
        json!({}),
        NOW,
        8000,
    );
    calls.start(
        "pk",
        "dn",
        "2",
        "blink",
        CallType::Async,
        json!({"n": 2}),
        NOW + 10,
        8000,
    );
    assert_eq!(calls.next_deadline(), Some(NOW + 8000));
    assert_eq!(calls.is_sync("pk", "dn", "1"), Some(true));

    let done = calls
        .on_answer("pk", "dn", &Reply::ok("2", json!({"done": 1})), NOW + 60)
        .unwrap();
    assert_eq!(
        (done.status.as_str(), done.code, done.latency_ms),
        ("ok", Some(200), Some(50))
    );
    assert_eq!(done.output, Some(json!({"done": 1})));
    assert!(
        calls
            .on_answer("pk", "dn", &Reply::ok("2", json!({})), NOW + 70)
            .is_none(),
        "answered once"
    );
    assert!(
        calls
            .on_answer("pk", "other", &Reply::ok("1", json!({})), NOW + 70)
            .is_none(),
        "another device's id"
    );

    assert!(calls.expire(NOW + 7999).is_empty());
    let expired = calls.expire(NOW + 8000);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].2.status, "timeout");
    assert_eq!(expired[0].2.service, "reboot");
    assert!(calls.is_empty());
    assert!(
        calls
            .on_answer("pk", "dn", &Reply::ok("1", json!({})), NOW + 9000)
            .is_none(),
        "too late"
    );

    calls.start("pk", "dn", "3", "x", CallType::Async, json!({}), NOW, 10);
    let err = calls
        .on_answer("pk", "dn", &Reply::error("3", 460, "bad"), NOW + 1)
        .unwrap();
    assert_eq!((err.status.as_str(), err.code), ("error", Some(460)));
}

#[test]
fn pack_parts_are_checked_per_device_with_events() {
    use crate::alink::{EventParams, PropertyValue};
    use std::collections::BTreeMap;
    let props: BTreeMap<String, PropertyValue> = [(
        "temp".to_string(),
        PropertyValue {
            value: json!(20.0),
            time: NOW - 1,
        },
    )]
    .into();
    let events: BTreeMap<String, EventParams> = [(
        "overheat".to_string(),
        EventParams {
            value: json!({"temp": 300.0}).as_object().unwrap().clone(),
            time: NOW,
        },
    )]
    .into();
    let err = check_report(&product(ValidationMode::Strict), "dn", &props, &events).unwrap_err();
    assert_eq!(err.to_string(), "overheat.temp: must be <= max 200");
    let ok = check_report(&product(ValidationMode::Weak), "dn", &props, &events).unwrap();
    assert_eq!(ok.reported, [("temp".to_string(), json!(20.0), NOW - 1)]);
    assert_eq!(ok.records.len(), 2, "the property and the event");
    assert!(ok.failed.is_none(), "weak mode does not check ranges");
    let bad_type: BTreeMap<String, PropertyValue> = [(
        "temp".to_string(),
        PropertyValue {
            value: json!("hot"),
            time: NOW,
        },
    )]
    .into();
    let weak = check_report(
        &product(ValidationMode::Weak),
        "dn",
        &bad_type,
        &BTreeMap::new(),
    )
    .unwrap();
    assert!(weak.reported.is_empty());
    assert_eq!(weak.failed.unwrap()["temp"]["code"], 460);
}
